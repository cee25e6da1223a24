//! Rows for the store's own tests to start from, and plain SQL on either backend for
//! tests that look at rows directly. (What ingest writes is tested through the writer
//! itself.)

use sqlx::postgres::PgRow;

use super::{Backend, Store};

/// A value bound to a test query's `$N`.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(i64),
    Text(String),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(v)
    }
}

impl From<Arg> for rusqlite::types::Value {
    fn from(a: Arg) -> Self {
        match a {
            Arg::Int(v) => v.into(),
            Arg::Text(v) => v.into(),
        }
    }
}

/// A tuple of columns read from a SQLite row, in order.
pub(crate) trait SqliteRow: Sized {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

macro_rules! sqlite_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: rusqlite::types::FromSql),+> SqliteRow for ($($t,)+) {
            fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(($(r.get::<_, $t>($i)?,)+))
            }
        }
    };
}
sqlite_row!(A 0);
sqlite_row!(A 0, B 1);
sqlite_row!(A 0, B 1, C 2);
sqlite_row!(A 0, B 1, C 2, D 3);
sqlite_row!(A 0, B 1, C 2, D 3, E 4);

/// The rows `sql` returns for `args`, as tuples, on either backend.
pub(crate) async fn rows<T>(store: &Store, sql: &str, args: &[Arg]) -> Vec<T>
where
    T: SqliteRow + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin + 'static,
{
    match store.backend() {
        Backend::Sqlite(db) => {
            let args = args.iter().cloned().map(Into::into).collect();
            db.pool.all(sql, args, T::read).await.unwrap()
        }
        Backend::Postgres(db) => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()));
            for a in args {
                query = match a {
                    Arg::Int(v) => query.bind(*v),
                    Arg::Text(v) => query.bind(v.clone()),
                };
            }
            query.fetch_all(&db.pool).await.unwrap()
        }
    }
}

/// The one row `sql` returns (see [`rows`]).
pub(crate) async fn row<T>(store: &Store, sql: &str, args: &[Arg]) -> T
where
    T: SqliteRow + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin + 'static,
{
    let mut all = rows(store, sql, args).await;
    assert_eq!(all.len(), 1, "{sql}");
    all.remove(0)
}

/// Runs a statement on either backend; how many rows it changed.
pub(crate) async fn execute(store: &Store, sql: &str, args: &[Arg]) -> u64 {
    match store.backend() {
        Backend::Sqlite(db) => {
            let args = args.iter().cloned().map(Into::into).collect();
            db.pool.execute(sql, args).await.unwrap()
        }
        Backend::Postgres(db) => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
            for a in args {
                query = match a {
                    Arg::Int(v) => query.bind(*v),
                    Arg::Text(v) => query.bind(v.clone()),
                };
            }
            query.execute(&db.pool).await.unwrap().rows_affected()
        }
    }
}

/// Inserts a call of `workflow_id` for `room`; its id.
pub(crate) async fn insert_call(store: &Store, room: &str, workflow_id: i64) -> i64 {
    let (id,): (i64,) = row(
        store,
        "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug, phase,
                            state, created_at, updated_at)
         VALUES ($1, 'room', $2, 'wf', $1, 'waiting', '{}', 1, 1) RETURNING id",
        &[room.into(), workflow_id.into()],
    )
    .await;
    id
}

/// Queues a pending delivery of `event_type` at `seq` for a call; its outbox id.
pub(crate) async fn insert_delivery(
    store: &Store,
    call_id: i64,
    seq: i64,
    event_type: &str,
    workflow_id: i64,
) -> i64 {
    let (id,): (i64,) = row(
        store,
        "INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload,
                             next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, '{}', 0, 0) RETURNING id",
        &[
            format!("msg_{call_id}_{seq}").into(),
            call_id.into(),
            seq.into(),
            event_type.into(),
            workflow_id.into(),
        ],
    )
    .await;
    id
}
