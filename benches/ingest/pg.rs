//! PostgreSQL as the daemon's store: the server every PostgreSQL phase uses, a fresh
//! database per phase (`vkb_bench_<random>`, created by the daemon as in production,
//! dropped by the bench afterwards), and the CPU that server spends on the phase.
//!
//! Everything here goes through sqlx (a dependency of the daemon), so the bench needs no
//! `psql` and no crate of its own.

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use url::Url;

/// A PostgreSQL server that answered, and what it is.
pub struct Server {
    base: Url,
    /// Version and the settings that decide what a commit costs.
    pub info: Value,
}

impl Server {
    /// Connects to `url`'s `postgres` database within `timeout` and reads its settings.
    pub async fn connect(url: &str, timeout: Duration) -> anyhow::Result<Server> {
        let base = Url::parse(url).with_context(|| format!("--postgres-url {url}"))?;
        anyhow::ensure!(
            matches!(base.scheme(), "postgres" | "postgresql"),
            "--postgres-url must be postgres://USER@HOST:PORT, not {url}"
        );
        let mut server = Server {
            base,
            info: Value::Null,
        };
        let mut conn = tokio::time::timeout(timeout, PgConnection::connect(&server.admin_url()))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {} s", timeout.as_secs_f64()))??;
        let (version, fsync, synchronous_commit, wal_sync_method, shared_buffers): (
            String,
            String,
            String,
            String,
            String,
        ) = sqlx::query_as(
            "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit'), \
             current_setting('wal_sync_method'), current_setting('shared_buffers')",
        )
        .fetch_one(&mut conn)
        .await?;
        let _ = conn.close().await;
        server.info = json!({
            "url": server.redacted(), "version": version, "fsync": fsync,
            "synchronous_commit": synchronous_commit, "wal_sync_method": wal_sync_method,
            "shared_buffers": shared_buffers,
        });
        Ok(server)
    }

    /// The server's URL with any password hidden, for output.
    pub fn redacted(&self) -> String {
        redact(self.base.as_str())
    }

    fn url_of(&self, database: &str) -> String {
        let mut url = self.base.clone();
        url.set_path(&format!("/{database}"));
        url.to_string()
    }

    fn admin_url(&self) -> String {
        self.url_of("postgres")
    }

    /// A database name nobody uses yet; the daemon creates it. Dropped with the value
    /// unless `keep`.
    pub fn fresh_database(&self, keep: bool) -> Database {
        let suffix: String = rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric)
            .take(12)
            .map(|b| (b as char).to_ascii_lowercase())
            .collect();
        let name = format!("vkb_bench_{suffix}");
        Database {
            url: self.url_of(&name),
            admin: self.admin_url(),
            name,
            keep,
        }
    }
}

/// One phase's database: `url` is the daemon's `[store] url`.
pub struct Database {
    pub name: String,
    pub url: String,
    admin: String,
    keep: bool,
}

impl Database {
    /// Starts counting the CPU of the server processes working for this database.
    pub async fn cpu_meter(&self) -> anyhow::Result<CpuMeter> {
        let start = self
            .server_pids()
            .await?
            .into_iter()
            .map(|pid| (pid, crate::procs::cpu_secs(pid)))
            .collect();
        Ok(CpuMeter { start })
    }

    /// The backends connected to this database and the server's own background
    /// processes (checkpointer, WAL writer, ...: no database), as local pids. Other
    /// databases' backends (other work on the same server) are left out.
    async fn server_pids(&self) -> anyhow::Result<Vec<u32>> {
        let mut conn = PgConnection::connect(&self.admin).await?;
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR datname IS NULL",
        )
        .bind(&self.name)
        .fetch_all(&mut conn)
        .await?;
        let _ = conn.close().await;
        // A server elsewhere (another host, a container) has pids that mean nothing here.
        Ok(pids
            .into_iter()
            .filter_map(|p| u32::try_from(p).ok())
            .filter(|p| is_postgres(*p))
            .collect())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.keep {
            println!("  kept PostgreSQL database {}", self.name);
            return;
        }
        // Drop runs inside the bench's runtime (and on error paths): drop the database
        // from a thread with a runtime of its own. FORCE ends the killed daemon's
        // connections if the server has not noticed yet.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn =
                    tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&admin))
                        .await??;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                let _ = conn.close().await;
                anyhow::Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("  note: could not drop database {}: {e:#}", self.name),
            Err(_) => eprintln!("  note: dropping database {} panicked", self.name),
        }
    }
}

/// CPU seconds of the server processes of [`Database::server_pids`].
pub struct CpuMeter {
    start: HashMap<u32, f64>,
}

impl CpuMeter {
    /// CPU used since the start by the processes present then or now (a backend the
    /// pool opened meanwhile counts from its fork).
    pub async fn stop(&self, db: &Database) -> anyhow::Result<f64> {
        let mut pids = db.server_pids().await?;
        pids.extend(self.start.keys().copied());
        pids.sort_unstable();
        pids.dedup();
        Ok(pids
            .into_iter()
            .filter(|p| is_postgres(*p))
            .map(|p| {
                (crate::procs::cpu_secs(p) - self.start.get(&p).copied().unwrap_or(0.0)).max(0.0)
            })
            .sum())
    }
}

fn is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
}

/// `url` with any password replaced, for output.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
