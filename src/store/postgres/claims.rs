//! Delivery claims: several bridges read the same outbox, and each due row is sent by
//! the one that claimed it, until its lease runs out (the claimer died) or its outcome
//! is recorded.

use super::Db;
use crate::store::{
    OutboxRow, StoreError,
    outbox::{DUE, HOOK_EVENT, ROW},
};

/// The parameters of one claim (see `Store::claim_due`).
pub(in crate::store) struct Claim<'a> {
    pub now: i64,
    pub workflow_id: i64,
    pub hooks_only: bool,
    pub limit: i64,
    pub lease_ms: i64,
    pub instance: &'a str,
}

/// Reads and claims the due rows in one statement: rows this instance holds are
/// claimed again (their lease renewed); rows another one holds, or that another
/// transaction has locked, are passed over, so of two instances reading at once each
/// row goes to one.
pub(in crate::store) async fn claim_due(
    db: &Db,
    claim: Claim<'_>,
) -> Result<Vec<OutboxRow>, StoreError> {
    let sql = format!(
        "WITH due AS (SELECT o.id AS due_id {DUE} FOR UPDATE OF o SKIP LOCKED)
         UPDATE outbox SET claimed_by = $6, claimed_until = $8
         FROM due WHERE outbox.id = due.due_id
         RETURNING {ROW}"
    );
    // Planned at every read, as `Store::due_for_workflow` is.
    let mut rows: Vec<OutboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .persistent(false)
        .bind(claim.workflow_id)
        .bind(claim.now)
        .bind(i64::from(claim.hooks_only))
        .bind(HOOK_EVENT)
        .bind(claim.limit)
        .bind(claim.instance)
        // Every commit is durable before it is visible: no horizon to respect.
        .bind(i64::MAX)
        .bind(claim.now + claim.lease_ms)
        .fetch_all(&db.claims)
        .await?;
    // RETURNING keeps no order.
    rows.sort_unstable_by_key(|r| (r.next_attempt_at, r.id));
    Ok(rows)
}

/// Gives up this instance's claims on these rows (read but not sent), so other
/// instances need not wait for the lease.
pub(in crate::store) async fn release(
    db: &Db,
    instance: &str,
    ids: &[i64],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL
         WHERE id = ANY($2) AND claimed_by = $1 AND status NOT IN ('delivered', 'failed')",
    )
    .bind(instance)
    .bind(ids)
    .execute(&db.claims)
    .await?;
    Ok(())
}

#[cfg(test)]
impl Db {
    /// The claims pool, for tests that look at its sessions.
    pub(in crate::store) fn claims_pool(&self) -> &sqlx::PgPool {
        &self.claims
    }
}
