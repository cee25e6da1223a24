//! The SQLite schema's migrations, applied with the store's own SQLite driver.
//!
//! Files already migrated keep their history: applied migrations are recorded in
//! `_sqlx_migrations` exactly as sqlx records them (version, description, SHA-384 of
//! the file as checksum, success, installed_on, execution_time in nanoseconds), so a
//! database created by an earlier bridge opens without anything run twice, and a file
//! changed after it was applied is refused rather than silently diverging.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha384};

/// One migration file: its version, its description (the file name after the version,
/// with `_` as spaces) and its SQL.
pub(crate) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $description:literal, $file:literal) => {
        Migration {
            version: $version,
            description: $description,
            sql: include_str!(concat!("../migrations/sqlite/", $file)),
        }
    };
}

/// Every file of `src/store/migrations/sqlite/`, in version order (a test checks the
/// list against the folder).
pub(crate) static MIGRATIONS: &[Migration] = &[
    migration!(1, "init", "0001_init.sql"),
    migration!(2, "hooks and reconcile", "0002_hooks_and_reconcile.sql"),
    migration!(3, "claims", "0003_claims.sql"),
    migration!(4, "outbox by workflow", "0004_outbox_by_workflow.sql"),
    migration!(
        5,
        "disabled endpoints and probe",
        "0005_disabled_endpoints_and_probe.sql"
    ),
    migration!(6, "dashboard", "0006_dashboard.sql"),
];

/// What stops a SQLite file from being migrated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration {0} was left half-applied by an earlier run; repair the database by hand")]
    Dirty(i64),
    #[error("migration {0} was applied from a different file than this bridge's")]
    Changed(i64),
    #[error(
        "migration {0} is applied in the database but unknown to this bridge (a newer version?)"
    )]
    Unknown(i64),
}

impl Migration {
    /// sqlx's checksum: SHA-384 of the file's text.
    pub(crate) fn checksum(&self) -> Vec<u8> {
        Sha384::digest(self.sql.as_bytes()).to_vec()
    }
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// Applies every migration `conn`'s database lacks, each in its own transaction with
/// its record; returns how many were applied.
pub(crate) fn run(conn: &mut Connection) -> Result<usize, MigrateError> {
    conn.execute(CREATE_TABLE, [])?;
    let dirty: Option<i64> = conn
        .query_row(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(version) = dirty {
        return Err(MigrateError::Dirty(version));
    }
    let applied: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (version, checksum) in &applied {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            None => return Err(MigrateError::Unknown(*version)),
            Some(m) if m.checksum() != *checksum => return Err(MigrateError::Changed(*version)),
            Some(_) => {}
        }
    }
    let mut count = 0;
    for m in MIGRATIONS {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        let start = std::time::Instant::now();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(m.sql)?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?1, ?2, TRUE, ?3, -1)",
            params![m.version, m.description, m.checksum()],
        )?;
        tx.commit()?;
        let elapsed = i64::try_from(start.elapsed().as_nanos()).unwrap_or(i64::MAX);
        conn.execute(
            "UPDATE _sqlx_migrations SET execution_time = ?1 WHERE version = ?2",
            params![elapsed, m.version],
        )?;
        count += 1;
    }
    Ok(count)
}

/// How many of [`MIGRATIONS`] are not recorded as applied among `applied` versions.
pub(crate) fn pending(applied: &[i64]) -> usize {
    MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sqlx's own reading of the folder (file names, descriptions, checksums): the
    /// macro needs no SQLite driver.
    static SQLX: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

    #[test]
    fn the_list_holds_every_file_of_the_folder_as_sqlx_reads_it() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len(), "{files:?}");
        for (file, m) in files.iter().zip(MIGRATIONS) {
            let on_disk = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            assert_eq!(
                on_disk, m.sql,
                "{file} is not the list's migration {}",
                m.version
            );
        }
        let theirs: Vec<_> = SQLX.iter().collect();
        assert_eq!(theirs.len(), MIGRATIONS.len());
        for (s, m) in theirs.iter().zip(MIGRATIONS) {
            assert_eq!(s.version, m.version);
            assert_eq!(s.description, m.description);
            assert_eq!(&*s.checksum, m.checksum().as_slice(), "{}", m.version);
        }
    }

    /// A file migrated by sqlx: its schema, and its records as sqlx writes them.
    fn migrated_by_sqlx(conn: &Connection) {
        conn.execute(CREATE_TABLE, []).unwrap();
        for m in SQLX.iter() {
            conn.execute_batch(m.sql.as_str()).unwrap();
            conn.execute(
                "INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time )
                 VALUES ( ?1, ?2, TRUE, ?3, -1 )",
                params![m.version, &*m.description, &*m.checksum],
            )
            .unwrap();
            conn.execute(
                "UPDATE _sqlx_migrations SET execution_time = ?1 WHERE version = ?2",
                params![1_234_567, m.version],
            )
            .unwrap();
        }
    }

    #[test]
    fn a_file_migrated_by_sqlx_opens_without_running_anything_again() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrated_by_sqlx(&conn);
        conn.execute(
            "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug,
                                phase, state, created_at, updated_at)
             VALUES ('RM_1', 'r', 1, 'w', 'c', 'waiting', '{}', 1, 1)",
            [],
        )
        .unwrap();
        assert_eq!(run(&mut conn).unwrap(), 0);
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 1);
        let times: Vec<i64> = conn
            .prepare("SELECT execution_time FROM _sqlx_migrations")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(times, vec![1_234_567; MIGRATIONS.len()]);
    }

    #[test]
    fn a_new_file_is_migrated_once_and_recorded_as_sqlx_would() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(run(&mut conn).unwrap(), MIGRATIONS.len());
        assert_eq!(run(&mut conn).unwrap(), 0);
        let rows: Vec<(i64, String, bool, Vec<u8>, i64)> = conn
            .prepare(
                "SELECT version, description, success, checksum, execution_time
                 FROM _sqlx_migrations ORDER BY version",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for ((version, description, success, checksum, time), s) in rows.iter().zip(SQLX.iter()) {
            assert_eq!(*version, s.version);
            assert_eq!(description, &*s.description);
            assert!(success);
            assert_eq!(checksum.as_slice(), &*s.checksum);
            assert!(*time >= 0, "execution time not recorded: {time}");
        }
        assert_eq!(rows.len(), MIGRATIONS.len());
    }

    #[test]
    fn a_changed_or_half_applied_migration_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        run(&mut conn).unwrap();
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 2",
            [],
        )
        .unwrap();
        assert!(matches!(run(&mut conn), Err(MigrateError::Changed(2))));
        conn.execute(
            "UPDATE _sqlx_migrations SET success = false WHERE version = 3",
            [],
        )
        .unwrap();
        assert!(matches!(run(&mut conn), Err(MigrateError::Dirty(3))));
    }
}
