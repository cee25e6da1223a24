//! A big store for the dashboard bench, written in each backend's SQL: calls spread
//! over the last three days, three VoiceKit events each (mostly delivered, 5% of calls
//! failed, 0.5% pending far in the future so the worker sends nothing), one attempt per
//! event and four LiveKit events per call.

use rusqlite::Connection;

/// The workflows the bench's config declares: calls alternate between them.
pub const WORKFLOWS: [(i64, &str); 2] = [(1, "customer-support"), (2, "sales")];
/// Calls spread over this much time before the bench starts.
pub const SPREAD_MS: i64 = 3 * 86_400_000;
/// Pending deliveries wait until 2100: the daemon under test sends nothing.
const NEVER_MS: i64 = 4_102_444_800_000;

/// The state a finished call has, about 700 bytes, with `{i}` for the call's number
/// and `{t}` for its creation time.
const STATE: &str = r#"{"call_id":{i},"call_slug":"s{i}","workflow_id":{w},"workflow_slug":"x","organization_id":1,"room_sid":"RM_{i}","room_name":"VOICEKIT_workflow_s{i}_42","room_created_at_ms":{t},"room_metadata":"{\"phone_number\":\"+15559990000\",\"customer\":\"acme\"}","metadata_phone":"+15559990000","sip_phone":"+1555{p}","present":[],"last_left_at_ms":{t},"started_at_ms":{t},"ended_at_ms":{t},"duration_seconds":93,"egress_ids":["EG_{i}"],"egress":{"egress_id":"EG_{i}","status":"EGRESS_COMPLETE","file":"calls/s{i}.ogg"},"finalized":true,"repairs":[]}"#;
/// A VoiceKit event body, about 500 bytes.
const PAYLOAD: &str = r#"{"type":"call_finalized","timestamp":"2026-12-06T18:00:00Z","data":{"call_id":"s{i}","workflow_id":{w},"organization_id":1,"phone_number":"+1555{p}","started_at":"2026-12-06T17:58:27Z","ended_at":"2026-12-06T18:00:00Z","duration_seconds":93,"duration_minutes":2,"recording_url":"https://recordings.example/calls/s{i}.ogg","call_slug":"s{i}"}}"#;

/// `template` as a SQL expression of the call number `i`, time `t` and workflow `w`.
fn expression(template: &str, number: &str, time: &str, workflow: &str, phone: &str) -> String {
    let quoted = template.replace('\'', "''");
    let text = format!("'{quoted}'");
    text.replace("{i}", &format!("' || {number} || '"))
        .replace("{t}", &format!("' || {time} || '"))
        .replace("{w}", &format!("' || {workflow} || '"))
        .replace("{p}", &format!("' || {phone} || '"))
}

/// The statements that fill an empty, migrated store: `series` is the dialect's rows
/// `i` from 1 to `calls`, `phone` its seven-digit padding of `i`.
fn statements(calls: i64, now: i64, series: &str, phone: &str) -> Vec<String> {
    let step = SPREAD_MS / calls;
    let created = format!("({now} - ({calls} - i) * {step})");
    let workflow = "(2 - i % 2)";
    let phase = format!(
        "CASE WHEN i > {calls} - 20 THEN 'in_progress' WHEN i > {calls} - 200 THEN 'ended' \
         ELSE 'finalized' END"
    );
    let state = expression(STATE, "i", &created, workflow, phone);
    let payload = expression(PAYLOAD, "c.id", "c.created_at", "c.workflow_id", "lpad_id");
    let payload = payload.replace("' || lpad_id || '", "0000000");
    let status = "CASE WHEN c.id % 20 = 7 THEN 'failed' \
                  WHEN c.id % 200 = 3 AND s.seq = 3 THEN 'pending' ELSE 'delivered' END";
    vec![
        format!(
            "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug, phase,
                                state, created_at, updated_at)
             SELECT 'RM_' || i, 'VOICEKIT_workflow_s' || i || '_42', {workflow},
                    CASE WHEN i % 2 = 1 THEN 'customer-support' ELSE 'sales' END, 's' || i,
                    {phase}, {state}, {created}, {created} + 180000
             FROM {series}"
        ),
        format!(
            "INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload, status,
                                 attempts, next_attempt_at, created_at, delivered_at, last_error)
             SELECT 'msg_' || c.id || '_' || s.seq, c.id, s.seq,
                    CASE s.seq WHEN 1 THEN 'call_started' WHEN 2 THEN 'call_ended'
                               ELSE 'call_finalized' END,
                    c.workflow_id, {payload}, {status}, 1,
                    CASE WHEN {status} = 'pending' THEN {NEVER_MS} ELSE c.created_at END,
                    c.created_at + s.seq * 60000,
                    CASE WHEN {status} = 'delivered' THEN c.created_at + s.seq * 60000 + 50 END,
                    CASE WHEN {status} = 'failed' THEN 'HTTP 500' END
             FROM calls c CROSS JOIN (SELECT 1 AS seq UNION ALL SELECT 2 UNION ALL SELECT 3) s"
        ),
        "INSERT INTO delivery_attempts (outbox_id, attempted_at, endpoint, status_code, error,
                                        latency_ms, response_body)
         SELECT id, created_at + 50, 'https://customer.example/hooks/voicekit',
                CASE status WHEN 'failed' THEN 500 ELSE 200 END, NULL, 40,
                CASE status WHEN 'failed' THEN 'upstream unavailable' ELSE '' END
         FROM outbox WHERE status <> 'pending'"
            .into(),
        "INSERT INTO inbound_events (event_id, event_type, room_sid, call_id, received_at)
         SELECT 'EV_' || c.id || '_' || s.k,
                CASE s.k WHEN 1 THEN 'room_started' WHEN 2 THEN 'participant_joined'
                         WHEN 3 THEN 'room_finished' ELSE 'egress_ended' END,
                c.room_sid, c.id, c.created_at + s.k * 45000
         FROM calls c CROSS JOIN (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3
                                  UNION ALL SELECT 4) s"
            .into(),
    ]
}

pub fn sqlite(file: &std::path::Path, calls: i64, now: i64) -> anyhow::Result<()> {
    let mut conn = Connection::open(file)?;
    let tx = conn.transaction()?;
    let series = format!(
        "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {calls}) \
         SELECT i FROM n)"
    );
    for sql in statements(calls, now, &series, "printf('%07d', i)") {
        tx.execute(&sql, [])?;
    }
    tx.commit()?;
    Ok(())
}

pub async fn postgres(url: &str, calls: i64, now: i64) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let series = format!("generate_series(1::BIGINT, {calls}::BIGINT) AS i");
    for sql in statements(calls, now, &series, "lpad(i::text, 7, '0')") {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    // What autovacuum does to a store that has grown over days.
    sqlx::query("VACUUM ANALYZE").execute(&mut conn).await?;
    Ok(())
}
