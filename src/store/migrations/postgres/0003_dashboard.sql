-- The dashboard's lists and overview (src/store/postgres/dashboard.rs): deliveries of
-- one status, or of one workflow, are walked newest first and the walk stops at a
-- page's end.
CREATE INDEX outbox_status ON outbox (status, id);
CREATE INDEX outbox_workflow ON outbox (workflow_id, id);
CREATE INDEX calls_call_slug ON calls (call_slug);
-- Traffic per minute over the last hour.
CREATE INDEX inbound_events_received ON inbound_events (received_at);
CREATE INDEX delivery_attempts_at ON delivery_attempts (attempted_at);
