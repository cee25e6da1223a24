-- A delivery in flight is claimed, with a lease, so it is sent by one worker at a time.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until INTEGER;
