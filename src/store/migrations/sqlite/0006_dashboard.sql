-- The dashboard's lists and overview (src/store/sqlite/dashboard.rs). An index on a
-- column alone ends in the rowid: deliveries of one status, of one workflow, or of
-- both, are walked newest first and the walk stops at a page's end.
CREATE INDEX outbox_status ON outbox (status);
CREATE INDEX outbox_workflow ON outbox (workflow_id);
CREATE INDEX outbox_workflow_status ON outbox (workflow_id, status);
CREATE INDEX calls_call_slug ON calls (call_slug);
-- Traffic per minute over the last hour.
CREATE INDEX inbound_events_received ON inbound_events (received_at);
CREATE INDEX delivery_attempts_at ON delivery_attempts (attempted_at);
-- A call's page lists the LiveKit events of that call.
CREATE INDEX inbound_events_call ON inbound_events (call_id);
-- Calls found by the start of a phone number, the SIP caller's or the room metadata's.
-- A state that is not JSON is no error, just no number.
CREATE INDEX calls_sip_phone
    ON calls (CASE WHEN json_valid(state) THEN json_extract(state, '$.sip_phone') END);
CREATE INDEX calls_metadata_phone
    ON calls (CASE WHEN json_valid(state) THEN json_extract(state, '$.metadata_phone') END);
