//! Query plans that do not depend on the values bound to them.
//!
//! SQLite may plan a statement by the values bound to its parameters (a `LIMIT ?`,
//! a `LIKE ?` pattern, STAT4 samples), and then marks it to be compiled again whenever
//! one of those parameters is bound anew. A statement cached and run again with new
//! values is so compiled again at every run, which would be a large part of the
//! delivery worker's outbox window reads (their `LIMIT $5`). The bridge's statements
//! gain nothing from it (no partial indexes, no `LIKE`, no `ANALYZE`), so the pool's
//! connections plan once per statement: `SQLITE_DBCONFIG_ENABLE_QPSG`, the query
//! planner stability guarantee, set as each is opened (`pool.rs`). The writer's
//! connection needs no such setting: none of its statements binds a value SQLite plans
//! by, and a test
//! (`writer::tests::the_writers_statements_are_compiled_once_not_at_every_batch`)
//! counts that it stays so.

#[cfg(test)]
mod tests {
    use crate::store::{
        outbox::{DUE, ROW},
        sql::numbered,
        test_sqlite_store,
    };

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
        // The reads ran one after another, so on the connection the pool lends first.
        let sql = numbered(&format!("SELECT {ROW} {DUE}"));
        let total = store
            .sqlite()
            .run(move |c| {
                let stmt = c.prepare_cached(&sql)?;
                Ok(stmt.get_status(rusqlite::StatementStatus::RePrepare))
            })
            .await
            .unwrap();
        assert_eq!(total, 0, "the read was compiled again after a new bind");
    }
}
