-- The worker reads due rows one workflow at a time (src/store/outbox.rs).
CREATE INDEX outbox_workflow_due ON outbox (workflow_id, status, next_attempt_at);
