-- Runtime data returned by a workflow's call_started hook, kept with the call.
ALTER TABLE calls ADD COLUMN runtime_data TEXT;

-- Finding calls to repair (never finished, egress never ended) without a full scan.
CREATE INDEX calls_phase ON calls (phase, updated_at);
