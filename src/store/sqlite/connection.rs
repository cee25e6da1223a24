//! The SQLite writer's own connection, used only from the writer's thread.
//!
//! Its statements are plain function calls on the thread that plans the batch, row by
//! row with cached statements: handed to another thread and back, each would cost
//! more than SQLite's work, and the batch is the one serial step of ingest. Each batch
//! is one `IMMEDIATE` transaction, fsynced once after its commit by the writer's
//! `WalSync` (`wal_sync.rs`) before any of its requests is answered.

use std::{cell::Cell, collections::HashMap, ffi::c_int, path::Path};

use rusqlite::{
    Connection, OptionalExtension, Transaction, TransactionBehavior,
    hooks::Wal,
    params,
    types::{ToSqlOutput, ValueRef},
};

use super::{
    call_cache::{self, CallCache},
    wal_sync::WalSync,
};
use crate::{
    call::{CallState, Workflow},
    ingest::{
        Accepted, Incoming,
        plan::{self, Known, Random},
    },
    store::{
        Attempt, AttemptOutcome, NewCall, NewDelivery, SeenEvent, StoreError, now_ms,
        outbox::{SET_PAYLOAD, attempt_rows, record_attempts_sql},
        sql::Dialect,
    },
};

/// A call's state is about 1.2 KB of JSON; this holds one with room to spare.
const STATE_JSON_CAPACITY: usize = 2048;

const SEEN: &str = "SELECT 1 FROM inbound_events WHERE event_id = ?1";
const CALL_OF_ROOM: &str = "SELECT state FROM calls WHERE room_sid = ?1";
const DATA_VERSION: &str = "PRAGMA data_version";
const INSERT_CALL: &str =
    "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug, phase,
                                state, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'waiting', '{}', ?6, ?6)
             RETURNING id";
const INSERT_DELIVERY: &str =
    "INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload,
                                 recording, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)";
const INSERT_SEEN: &str =
    "INSERT INTO inbound_events (event_id, event_type, room_sid, call_id, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5)";
const SAVE_CALL: &str = "UPDATE calls SET state = ?1, phase = ?2, updated_at = ?3 WHERE id = ?4";

/// The writer's connection to the store's SQLite file.
pub(crate) struct IngestConnection {
    conn: Connection,
    file: std::path::PathBuf,
    calls: CallCache,
}

impl IngestConnection {
    /// Opens the writer's connection to the store's file.
    pub(super) fn open(file: &Path) -> Result<IngestConnection, StoreError> {
        let conn = Connection::open(file)?;
        conn.busy_handler(Some(super::busy::wait))?;
        // The pool's settings (`sqlite::open`), which are per connection:
        // foreign keys checked, checkpoints left to their own task. Commits do not
        // sync (NORMAL): the writer's `WalSync` fsyncs the WAL after each one, on a
        // thread of its own, before anything is acknowledged (`wal_sync.rs`).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 67108864;
             PRAGMA temp_store = MEMORY;",
        )?;
        conn.wal_hook(Some(note_wal_frames));
        Ok(IngestConnection {
            conn,
            file: file.to_owned(),
            calls: CallCache::new(call_cache::CAPACITY),
        })
    }
}

thread_local! {
    /// The WAL's length in frames after the last commit on this thread (SQLite's WAL
    /// hook runs inside `commit`, on the committing thread).
    static WAL_FRAMES: Cell<i64> = const { Cell::new(0) };
}

fn note_wal_frames(_wal: &Wal, frames: c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(i64::from(frames)));
    Ok(())
}

impl IngestConnection {
    /// The fsync of this database's WAL (the file exists while this connection is open).
    pub(super) fn wal_sync(&self) -> Result<WalSync, StoreError> {
        WalSync::of(&self.file).map_err(StoreError::WalSync)
    }

    /// `PRAGMA busy_timeout`: 0 while the short-poll handler of `busy.rs` is set.
    #[cfg(test)]
    pub(crate) fn busy_timeout_ms(&self) -> i64 {
        self.conn
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap()
    }

    /// How many times this connection's cached statements were compiled again
    /// (`plans.rs`).
    #[cfg(test)]
    pub(crate) fn reprepares(&self) -> i64 {
        let mut statements: Vec<String> = [
            DATA_VERSION,
            SEEN,
            CALL_OF_ROOM,
            INSERT_CALL,
            INSERT_DELIVERY,
            INSERT_SEEN,
            SAVE_CALL,
            SET_PAYLOAD,
        ]
        .map(str::to_owned)
        .into();
        statements.extend(record_attempts_sql(Dialect::Sqlite));
        statements
            .iter()
            .map(|sql| {
                let stmt = self.conn.prepare_cached(sql).unwrap();
                i64::from(stmt.get_status(rusqlite::StatementStatus::RePrepare))
            })
            .sum()
    }

    /// The WAL's length in frames (pages) after this connection's last commit.
    pub(super) fn wal_frames(&self) -> i64 {
        WAL_FRAMES.with(Cell::get)
    }

    /// Copies the WAL back into the database file, `PASSIVE`ly (readers are not waited
    /// for); returns the (log, checkpointed) page counts. Run between two batches, when
    /// no write is in progress, it leaves every frame copied, so the next batch starts
    /// the WAL over.
    pub(super) fn checkpoint(&mut self) -> Result<(i64, i64), StoreError> {
        let counts = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?;
        Ok(counts)
    }

    /// Opens the batch's transaction (`IMMEDIATE`: it holds the write lock from the
    /// start, so no one else commits until it ends and the call cache can be checked).
    pub(super) fn begin(&mut self) -> Result<SqliteBatch<'_>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let data_version = tx
            .prepare_cached(DATA_VERSION)?
            .query_row([], |r| r.get(0))?;
        self.calls.check(data_version);
        Ok(SqliteBatch {
            tx,
            calls: &mut self.calls,
            saved: Vec::new(),
            first_outbox_id: None,
        })
    }

    /// How many call states batches found in the cache rather than in the file.
    #[cfg(test)]
    pub(crate) fn cached_reads(&self) -> u64 {
        self.calls.hits
    }
}

/// One ingest transaction on the writer's connection.
pub(crate) struct SqliteBatch<'c> {
    tx: Transaction<'c>,
    calls: &'c mut CallCache,
    /// The call states written, for the cache once they are committed.
    saved: Vec<CallState>,
    first_outbox_id: Option<i64>,
}

impl SqliteBatch<'_> {
    /// Stores published bodies (`Store::set_payload`'s statement).
    pub(super) fn set_payloads(&mut self, payloads: &[(i64, String)]) -> Result<(), StoreError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let mut update = self.tx.prepare_cached(SET_PAYLOAD)?;
        for (id, payload) in payloads {
            update.execute(params![payload, id])?;
        }
        Ok(())
    }

    /// Records finished delivery attempts (`Store::finish_attempts`'s statements), so
    /// they share the batch's one fsync.
    pub(super) fn record_attempts(
        &mut self,
        attempts: &[(Attempt, AttemptOutcome)],
    ) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let rows = attempt_rows(attempts)?;
        for sql in record_attempts_sql(Dialect::Sqlite) {
            self.tx.prepare_cached(&sql)?.execute([&rows])?;
        }
        Ok(())
    }

    /// The id of the first outbox row this transaction inserted, if any.
    pub(super) fn first_outbox_id(&self) -> Option<i64> {
        self.first_outbox_id
    }

    /// Commits. The batch is durable once the `WalSync` that follows returns.
    pub(super) fn commit(self) -> Result<(), StoreError> {
        self.tx.commit()?;
        self.calls.keep(self.saved);
        Ok(())
    }
}

impl SqliteBatch<'_> {
    /// Plans a batch of events (`crate::ingest::plan`) and writes the plan.
    pub(super) fn apply(
        &mut self,
        batch: &[Incoming],
        workflows: &[Workflow],
    ) -> Result<Vec<Accepted>, StoreError> {
        let (keys, rooms) = plan::lookups(batch);
        let known = self.known(&keys, &rooms)?;
        let admission = plan::admit(batch, known, workflows, &mut Random);
        let ids = self.create_calls(&admission.new_calls)?;
        let plan = admission.settle(batch, &ids, workflows, &mut Random)?;
        self.enqueue_all(&plan.deliveries)?;
        self.remember_events(&plan.seen)?;
        self.save_calls(plan.states)?;
        Ok(plan.results)
    }

    /// The ids among `event_ids` accepted before, and the calls of these rooms that
    /// exist (from the cache where it has them).
    fn known(&mut self, event_ids: &[&str], room_sids: &[&str]) -> Result<Known, StoreError> {
        let mut seen_before = self.tx.prepare_cached(SEEN)?;
        let mut known = Known::default();
        for id in event_ids {
            if !known.seen.contains(*id) && seen_before.exists([id])? {
                known.seen.insert((*id).to_owned());
            }
        }
        let mut call_of = self.tx.prepare_cached(CALL_OF_ROOM)?;
        for room in room_sids {
            if let Some(state) = self.calls.take(room) {
                known.calls.push(state);
                continue;
            }
            let state: Option<String> = call_of.query_row([room], |r| r.get(0)).optional()?;
            if let Some(state) = state {
                known.calls.push(serde_json::from_str(&state)?);
            }
        }
        Ok(known)
    }

    /// Inserts call rows; the id SQLite assigned to each room.
    fn create_calls(&mut self, calls: &[NewCall<'_>]) -> Result<HashMap<String, i64>, StoreError> {
        let mut insert = self.tx.prepare_cached(INSERT_CALL)?;
        let now = now_ms();
        let mut ids = HashMap::with_capacity(calls.len());
        for call in calls {
            let row = params![
                call.room_sid,
                call.room_name,
                call.workflow_id,
                call.workflow_slug,
                call.call_slug,
                now
            ];
            let id: i64 = insert.query_row(row, |r| r.get(0))?;
            ids.insert(call.room_sid.to_owned(), id);
        }
        Ok(ids)
    }
}

/// The batch's last writes, row by row: its outbox rows (queued in order), its new
/// event ids, and the state (and phase) of each call it touched.
impl SqliteBatch<'_> {
    fn enqueue_all(&mut self, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
        let mut insert = self.tx.prepare_cached(INSERT_DELIVERY)?;
        let now = now_ms();
        for d in deliveries {
            insert.execute(params![
                d.webhook_id,
                d.call_id,
                d.seq,
                d.event_type,
                d.workflow_id,
                d.payload,
                d.recording,
                now
            ])?;
            self.first_outbox_id
                .get_or_insert_with(|| self.tx.last_insert_rowid());
        }
        Ok(())
    }

    fn remember_events(&mut self, events: &[SeenEvent<'_>]) -> Result<(), StoreError> {
        let mut insert = self.tx.prepare_cached(INSERT_SEEN)?;
        let now = now_ms();
        for e in events {
            insert.execute(params![
                e.event_id,
                e.event_type,
                e.room_sid,
                e.call_id,
                now
            ])?;
        }
        Ok(())
    }

    fn save_calls(&mut self, states: Vec<CallState>) -> Result<(), StoreError> {
        let mut update = self.tx.prepare_cached(SAVE_CALL)?;
        let now = now_ms();
        // One buffer, sized for a whole state, for all of them: growing a fresh one
        // from nothing took eight reallocations per state.
        let mut json = Vec::with_capacity(STATE_JSON_CAPACITY);
        for s in &states {
            json.clear();
            serde_json::to_writer(&mut json, s)?;
            let state = ToSqlOutput::Borrowed(ValueRef::Text(&json));
            update.execute(params![state, s.phase().as_str(), now, s.call_id])?;
        }
        self.saved.extend(states);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_sqlite_store;

    #[tokio::test]
    async fn the_writers_connection_is_as_durable_as_the_pool() {
        let (store, _dir) = test_sqlite_store().await;
        let own = store.ingest_connection();
        let pragma = |name: &str| -> String {
            own.conn
                .query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        // NORMAL: commits write the WAL without syncing it; the writer's `WalSync`
        // fsyncs it after each commit, before any 200 (tested in `ingest`).
        assert_eq!(pragma("synchronous"), "Integer(1)");
        own.wal_sync().unwrap().sync().unwrap();
        assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
        assert_eq!(pragma("foreign_keys"), "Integer(1)");
        assert_eq!(pragma("wal_autocheckpoint"), "Integer(0)");
        assert_eq!(pragma("temp_store"), "Integer(2)");
        let (temp_store,): (i64,) =
            crate::store::fixtures::row(&store, "PRAGMA temp_store", &[]).await;
        assert_eq!(
            temp_store, 2,
            "the pool's statement journals are in memory too"
        );
    }
}
