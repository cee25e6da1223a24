-- The dashboard's lists and overview (src/store/postgres/dashboard.rs): deliveries of
-- one status, or of one workflow, are walked newest first and the walk stops at a
-- page's end.
CREATE INDEX outbox_status ON outbox (status, id);
CREATE INDEX outbox_workflow ON outbox (workflow_id, id);
CREATE INDEX calls_call_slug ON calls (call_slug);
-- Traffic per minute over the last hour.
CREATE INDEX inbound_events_received ON inbound_events (received_at);
CREATE INDEX delivery_attempts_at ON delivery_attempts (attempted_at);
-- A call's page lists the LiveKit events of that call.
CREATE INDEX inbound_events_call ON inbound_events (call_id);
-- Calls found by the start of a phone number, the SIP caller's or the room metadata's,
-- in byte order whatever the database's collation. Read from the state's text as
-- serde_json writes it, so a state that is not JSON is no error, just no number; with
-- split_part rather than a regular expression, which costs every call update about
-- sixteen times as much.
CREATE INDEX calls_sip_phone
    ON calls ((NULLIF(split_part(split_part(state, '"sip_phone":"', 2), '"', 1), '')) COLLATE "C");
CREATE INDEX calls_metadata_phone
    ON calls ((NULLIF(split_part(split_part(state, '"metadata_phone":"', 2), '"', 1), '')) COLLATE "C");
