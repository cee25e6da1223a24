//! The statements of one ingest transaction, behind one trait, so the writer's logic
//! (`crate::ingest`) is written once for both ways of running them.
//!
//! On PostgreSQL, and on SQLite where no file is at hand, they are `sqlx` statements on
//! a [`Tx`], each taking the whole batch as one JSON array. On a SQLite file they run on
//! the writer's own connection ([`super::sqlite_writer`]), row by row, on the writer's
//! own thread: there a statement costs a function call, where through the pool each
//! one was a round trip between two threads that cost more than SQLite's work.

use std::collections::{HashMap, HashSet};

use super::{NewCall, NewDelivery, SeenEvent, StoreError, Tx};
use crate::call::CallState;

/// What the ingest writer does inside one transaction.
pub(crate) trait IngestBatch {
    /// The ids among `event_ids` that were accepted before, and the calls of these
    /// rooms that exist.
    async fn known(
        &mut self,
        event_ids: &[&str],
        room_sids: &[&str],
    ) -> Result<(HashSet<String>, Vec<CallState>), StoreError>;
    /// Inserts call rows; the id the store assigned to each room.
    async fn create_calls(
        &mut self,
        calls: &[NewCall<'_>],
    ) -> Result<HashMap<String, i64>, StoreError>;
    /// The batch's last writes, in this order: its outbox rows (queued in order), its
    /// new event ids, and the state (and phase) of each call it touched. The batch
    /// takes the states: the SQLite writer keeps them in memory once they are committed
    /// (`call_cache.rs`). A PostgreSQL transaction makes the three one statement.
    async fn write(
        &mut self,
        deliveries: &[NewDelivery<'_>],
        events: &[SeenEvent<'_>],
        states: Vec<CallState>,
    ) -> Result<(), StoreError>;
}

impl IngestBatch for Tx {
    async fn known(
        &mut self,
        event_ids: &[&str],
        room_sids: &[&str],
    ) -> Result<(HashSet<String>, Vec<CallState>), StoreError> {
        super::known(self, event_ids, room_sids).await
    }

    async fn create_calls(
        &mut self,
        calls: &[NewCall<'_>],
    ) -> Result<HashMap<String, i64>, StoreError> {
        super::create_calls(self, calls).await
    }

    async fn write(
        &mut self,
        deliveries: &[NewDelivery<'_>],
        events: &[SeenEvent<'_>],
        states: Vec<CallState>,
    ) -> Result<(), StoreError> {
        super::write_batch(self, deliveries, events, &states).await
    }
}
