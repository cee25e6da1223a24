-- The same schema as SQLite's (see ../sqlite), in PostgreSQL's types. Times are unix
-- milliseconds. Several bridge instances share these tables.

CREATE TABLE inbound_events (
    event_id    TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    room_sid    TEXT,
    call_id     BIGINT,
    received_at BIGINT NOT NULL
);

CREATE TABLE calls (
    id            BIGSERIAL PRIMARY KEY,
    room_sid      TEXT NOT NULL UNIQUE,
    room_name     TEXT NOT NULL,
    workflow_id   BIGINT NOT NULL,
    workflow_slug TEXT NOT NULL,
    call_slug     TEXT NOT NULL,
    phase         TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    runtime_data  TEXT
);

CREATE INDEX calls_phase ON calls (phase, updated_at);

CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    webhook_id      TEXT NOT NULL UNIQUE,
    call_id         BIGINT NOT NULL REFERENCES calls(id),
    seq             BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    workflow_id     BIGINT NOT NULL,
    payload         TEXT NOT NULL,
    recording       TEXT,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    last_error      TEXT,
    claimed_by      TEXT,
    claimed_until   BIGINT,
    UNIQUE (call_id, seq)
);

CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE delivery_attempts (
    id            BIGSERIAL PRIMARY KEY,
    outbox_id     BIGINT NOT NULL REFERENCES outbox(id),
    attempted_at  BIGINT NOT NULL,
    endpoint      TEXT NOT NULL,
    status_code   BIGINT,
    error         TEXT,
    latency_ms    BIGINT NOT NULL,
    response_body TEXT
);

CREATE INDEX delivery_attempts_outbox ON delivery_attempts (outbox_id);

-- The worker reads due rows one workflow at a time (src/store/outbox.rs), in this
-- order, and stops at its LIMIT. (SQLite's index of the same name ends in the rowid.)
CREATE INDEX outbox_workflow_due ON outbox (workflow_id, status, next_attempt_at, id);
