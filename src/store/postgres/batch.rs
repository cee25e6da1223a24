//! An ingest batch on PostgreSQL: a handful of statements whatever its size, each taking
//! the whole batch as one JSON array (a round trip per row was what limited ingest), in
//! a transaction serialised against every other batch touching its rooms or event ids.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use super::{PG_BEGIN, lock_key};
use crate::{
    call::{CallState, Workflow},
    ingest::{
        Accepted, Incoming,
        plan::{self, Known, Plan, Random},
    },
    store::{NewCall, StoreError, now_ms},
};

pub(super) type PgTx = Transaction<'static, Postgres>;

/// Begins a transaction that holds the advisory locks of `keys` (the batch's event ids
/// and rooms), in this process or any other bridge: two batches holding events of one
/// room (or the same event twice) apply them one after the other, never both from the
/// same old state. The locks are taken with the `BEGIN`, in its round trip.
pub(super) async fn begin(pool: &PgPool, keys: &[&str]) -> Result<PgTx, StoreError> {
    // Always in the same order, so two batches never wait for each other in a cycle.
    let mut locks: Vec<i64> = keys.iter().map(|k| lock_key(k)).collect();
    locks.sort_unstable();
    locks.dedup();
    let locks: Vec<String> = locks.iter().map(i64::to_string).collect();
    // Integers only: nothing of the events' text reaches the statement.
    let begin = format!(
        "{PG_BEGIN}; SELECT pg_advisory_xact_lock(k) FROM unnest('{{{}}}'::bigint[]) AS k",
        locks.join(",")
    );
    Ok(pool.begin_with(sqlx::AssertSqlSafe(begin)).await?)
}

/// What a batch locks before it reads: its event ids and rooms. Another batch, of this
/// bridge or another, may hold events of these rooms or these very events: this one
/// waits for it, then reads what it committed.
pub(super) fn lock_keys(batch: &[Incoming]) -> Vec<&str> {
    let (mut keys, rooms) = plan::lookups(batch);
    keys.extend(rooms);
    keys
}

/// Plans a batch of events (`crate::ingest::plan`) and writes the plan.
pub(super) async fn apply(
    tx: &mut PgTx,
    batch: &[Incoming],
    workflows: &[Workflow],
) -> Result<Vec<Accepted>, StoreError> {
    let (keys, rooms) = plan::lookups(batch);
    let known = known(tx, &keys, &rooms).await?;
    let admission = plan::admit(batch, known, workflows, &mut Random);
    let ids = create_calls(tx, &admission.new_calls).await?;
    let plan = admission.settle(batch, &ids, workflows, &mut Random)?;
    write(tx, &plan).await?;
    Ok(plan.results)
}

/// Which of these event ids were accepted before, and the calls of these rooms: one
/// statement for both lookups, as each is a round trip.
pub(super) async fn known(
    tx: &mut PgTx,
    event_ids: &[&str],
    room_sids: &[&str],
) -> Result<Known, StoreError> {
    let rows: Vec<(i32, String)> = sqlx::query_as(
        "SELECT 0, event_id FROM inbound_events WHERE event_id = ANY($1)
         UNION ALL
         SELECT 1, state FROM calls WHERE room_sid = ANY($2)",
    )
    .bind(event_ids)
    .bind(room_sids)
    .fetch_all(&mut **tx)
    .await?;
    let mut known = Known::default();
    for (table, value) in rows {
        if table == 0 {
            known.seen.insert(value);
        } else {
            known.calls.push(serde_json::from_str(&value)?);
        }
    }
    Ok(known)
}

/// Inserts call rows (their state is written with the rest of the plan); the id the
/// store assigned to each room.
pub(super) async fn create_calls(
    tx: &mut PgTx,
    calls: &[NewCall<'_>],
) -> Result<HashMap<String, i64>, StoreError> {
    if calls.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug, phase,
                            state, created_at, updated_at)
         SELECT j.value->>'room_sid', j.value->>'room_name',
                CAST(j.value->>'workflow_id' AS BIGINT), j.value->>'workflow_slug',
                j.value->>'call_slug', 'waiting', '{}', $1, $1
         FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS j(value, key)
         ORDER BY j.key
         RETURNING id, room_sid",
    )
    .bind(now_ms())
    .bind(serde_json::to_string(calls)?)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id, room)| (room, id)).collect())
}

/// A call's state to save, as the JSON rows of [`SAVE_CALLS`] read it.
#[derive(Serialize)]
struct SavedState {
    call_id: i64,
    state: String,
    phase: &'static str,
}

/// Saves each call's state and phase, from the JSON rows in `$4` (the clock in `$1`).
/// `calls.id = ANY(...)` says nothing new, but lets the planner probe the primary key
/// with the ids: with only the join to a set-returning function it planned a hash join
/// over a sequential scan of the whole table, and grew with it.
pub(super) const SAVE_CALLS: &str =
    "UPDATE calls SET state = j.value->>'state', phase = j.value->>'phase', updated_at = $1
     FROM jsonb_array_elements($4::jsonb) WITH ORDINALITY AS j(value, key)
     WHERE calls.id = CAST(j.value->>'call_id' AS BIGINT)
       AND calls.id = ANY(ARRAY(SELECT CAST(k.value->>'call_id' AS BIGINT)
                                FROM jsonb_array_elements($4::jsonb) AS k(value)))";

/// A plan's writes in one statement: its outbox rows and its seen events as
/// data-modifying `WITH` parts of the update of its calls' states, so one round trip
/// where three would be.
async fn write(tx: &mut PgTx, plan: &Plan<'_>) -> Result<(), StoreError> {
    let sql = format!(
        "WITH queued AS (
             INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload,
                                 recording, next_attempt_at, created_at)
             SELECT j.value->>'webhook_id', CAST(j.value->>'call_id' AS BIGINT),
                    CAST(j.value->>'seq' AS BIGINT), j.value->>'event_type',
                    CAST(j.value->>'workflow_id' AS BIGINT), j.value->>'payload',
                    j.value->>'recording', $1, $1
             FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS j(value, key)
             ORDER BY j.key),
         seen AS (
             INSERT INTO inbound_events (event_id, event_type, room_sid, call_id, received_at)
             SELECT j.value->>'event_id', j.value->>'event_type', j.value->>'room_sid',
                    CAST(j.value->>'call_id' AS BIGINT), $1
             FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS j(value, key)
             ORDER BY j.key)
         {SAVE_CALLS}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now_ms())
        .bind(serde_json::to_string(&plan.deliveries)?)
        .bind(serde_json::to_string(&plan.seen)?)
        .bind(state_rows(&plan.states)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn state_rows(states: &[CallState]) -> Result<String, serde_json::Error> {
    let rows = states
        .iter()
        .map(|s| {
            Ok(SavedState {
                call_id: s.call_id,
                state: serde_json::to_string(s)?,
                phase: s.phase().as_str(),
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    serde_json::to_string(&rows)
}
