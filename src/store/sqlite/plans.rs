//! Query plans that do not depend on the values bound to them.
//!
//! SQLite may plan a statement by the values bound to its parameters (a `LIMIT ?`,
//! a `LIKE ?` pattern, STAT4 samples), and then marks it to be compiled again whenever
//! one of those parameters is bound anew. A statement cached and run again with new
//! values is so compiled again at every run, which would be a large part of the
//! delivery worker's outbox window reads (their `LIMIT $5`). The bridge's statements
//! gain nothing from it (no partial indexes, no `LIKE`, no `ANALYZE`), so the pool's
//! connections plan once per statement: `SQLITE_DBCONFIG_ENABLE_QPSG`, the query
//! planner stability guarantee. The writer's connection needs no such setting: none of
//! its statements binds a value SQLite plans by, and a test
//! (`writer::tests::the_writers_statements_are_compiled_once_not_at_every_batch`)
//! counts that it stays so.

use std::ffi::c_int;

use rusqlite::ffi;

/// Turns the guarantee on for a raw connection.
///
/// # Safety
/// `db` must be an open connection, used by no other thread during the call.
pub(super) unsafe fn install(db: *mut ffi::sqlite3) -> Result<(), c_int> {
    // SAFETY: the caller's promise; the option takes an int and an optional out-pointer.
    let rc = unsafe {
        ffi::sqlite3_db_config(
            db,
            ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as c_int,
            std::ptr::null_mut::<c_int>(),
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}

/// How many times the connection's prepared statements whose SQL contains `sql` were
/// compiled again.
///
/// # Safety
/// As [`install`].
#[cfg(test)]
pub(super) unsafe fn reprepares(db: *mut ffi::sqlite3, sql: &str) -> i64 {
    let mut total = 0;
    // SAFETY: the caller's promise; statements are only read, never finalized.
    unsafe {
        let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            let text = std::ffi::CStr::from_ptr(ffi::sqlite3_sql(stmt)).to_string_lossy();
            if text.contains(sql) {
                total += i64::from(ffi::sqlite3_stmt_status(
                    stmt,
                    ffi::SQLITE_STMTSTATUS_REPREPARE,
                    0,
                ));
            }
            stmt = ffi::sqlite3_next_stmt(db, stmt);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_sqlite_store;

    #[tokio::test]
    async fn the_outbox_window_read_is_compiled_once_not_at_every_read() {
        let (store, _dir) = test_sqlite_store().await;
        // Each read binds a new `now` and limit, as the delivery worker's do.
        for read in 0..5 {
            store
                .due_for_workflow(1_000 + read, 7, false, 64 + read)
                .await
                .unwrap();
        }
        // Every connection the pool has opened, held at once so each is seen. (Those
        // that ran the migrations compiled theirs again as the schema changed.)
        let mut held = Vec::new();
        let mut total = 0;
        for _ in 0..store.sqlite().size() {
            let mut conn = store.sqlite().acquire().await.unwrap();
            let mut handle = conn.lock_handle().await.unwrap();
            // SAFETY: the handle is open, and locked for this task alone.
            total += unsafe { reprepares(handle.as_raw_handle().as_ptr(), "FROM outbox o") };
            drop(handle);
            held.push(conn);
        }
        assert_eq!(total, 0, "the read was compiled again after a new bind");
    }
}
