-- Calls, the LiveKit events already seen, and the outbox of VoiceKit events with
-- every delivery attempt. Times are unix milliseconds.

CREATE TABLE inbound_events (
    event_id    TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    room_sid    TEXT,
    call_id     INTEGER,
    received_at INTEGER NOT NULL
);

CREATE TABLE calls (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    room_sid      TEXT NOT NULL UNIQUE,
    room_name     TEXT NOT NULL,
    workflow_id   INTEGER NOT NULL,
    workflow_slug TEXT NOT NULL,
    call_slug     TEXT NOT NULL,
    phase         TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      TEXT NOT NULL UNIQUE,
    call_id         INTEGER NOT NULL REFERENCES calls(id),
    seq             INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    workflow_id     INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    recording       TEXT,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT,
    UNIQUE (call_id, seq)
);

CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE delivery_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id     INTEGER NOT NULL REFERENCES outbox(id),
    attempted_at  INTEGER NOT NULL,
    endpoint      TEXT NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    latency_ms    INTEGER NOT NULL,
    response_body TEXT
);

CREATE INDEX delivery_attempts_outbox ON delivery_attempts (outbox_id);
