//! The ingest benchmark: how fast the release daemon ingests LiveKit webhooks, measured
//! against what a bare axum route does on the same machine, with SQLite and with
//! PostgreSQL as the store.
//!
//! `cargo bench --bench ingest` builds the daemon in the bench profile (= release) and
//! runs, each against a fresh process on loopback:
//! 1. baseline: the load below against a bare axum route (this binary, re-run with
//!    `--baseline-server`): reads the body, answers 200, nothing else; once, since it
//!    has no store;
//!    ceiling: the same load against two more servers of this binary (`ceiling.rs`):
//!    the daemon's token check and body parse with nothing stored, and the same with
//!    a group-committed, `fdatasync`ed append to a file (the cheapest durable store);
//!    their ratios to the baseline are what ingest / baseline is read against;
//! 2. ingest: pre-signed, distinct, realistic webhooks (whole calls: room, SIP caller,
//!    agent, egress) from many keep-alive connections for a fixed time; accepted/s,
//!    p50/p99, and the ratio to the baseline;
//! 3. end to end: a paced 500 webhooks/s; post -> arrival at the receiver of
//!    `call_started` / `call_ended` / `call_finalized`; RSS sampled throughout;
//! 4. memory: 10,000 calls in progress (room, caller and agent joined; none finished)
//!    with the receiver holding its answers, then peak RSS (VmHWM); then the receiver
//!    lets go and the 10,000 queued `call_started` drain: delivery events/s;
//! 5. PostgreSQL: phases 2-4 again with `[store] url` on a PostgreSQL server
//!    (`--postgres-url`), each daemon on a fresh database `vkb_bench_<random>` that the
//!    daemon creates and the bench drops afterwards (`pg.rs`); ingest also reports the
//!    CPU of that database's backends and the server's background processes.
//!
//! `--stores` picks the stores (default `sqlite,postgres`, in that order); every SQLite
//! phase gets a fresh file in a temporary directory, every PostgreSQL phase a fresh
//! database, so each phase starts empty.
//!
//! Prints a table (a store column; one block of rows per store) and writes JSON (default
//! `bench-results/latest.json`): `results.baseline`, `results.ceiling`, then SQLite's
//! `results.ingest`, `.e2e`, `.memory`, `.delivery`, and the same keys under `results.postgres` with the
//! server's version and durability settings in `results.postgres.server`. Every flag has
//! an environment variable (`--help`). Run without `--bench` (as `cargo test
//! --all-targets` does) it is a seconds-long smoke test of the same code paths that
//! fails when any phase does not work, and writes nothing into the repository; it runs
//! on the test suite's store (SQLite, or PostgreSQL when `VOICEKIT_TEST_STORE=postgres`)
//! unless `--stores` says otherwise. A run fails when a store it is asked for is absent.

mod calls;
mod ceiling;
mod load;
mod pg;
mod procs;
mod receiver;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::{Map, Value, json};

use calls::Emits;
use ceiling::{CEILING_READY, Ceiling};
use load::{Mode, Target, percentiles};
use procs::{CpuMeter, CpuUse, Proc, RssSampler};
use receiver::Receiver;
use voicekit_bridge::testkit::call::{CALL_START, WHOLE_CALL};

const WEBHOOK_PATH: &str = "/livekit/webhook";
const DAEMON_READY: &str = "voicekit-bridge listening on ";
const BASELINE_READY: &str = "baseline listening on ";

/// A store the daemon can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    fn key(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// The stores a run measures when `--stores` is not given: both for a real run; for a
/// smoke run the test suite's one, so `cargo test` needs PostgreSQL only when the
/// suite is asked to run on it.
fn default_stores(smoke: bool) -> Vec<StoreKind> {
    let suite_on_postgres = std::env::var("VOICEKIT_TEST_STORE").as_deref() == Ok("postgres");
    match (smoke, suite_on_postgres) {
        (false, _) => vec![StoreKind::Sqlite, StoreKind::Postgres],
        (true, false) => vec![StoreKind::Sqlite],
        (true, true) => vec![StoreKind::Postgres],
    }
}

#[derive(Parser, Debug)]
#[command(about = "voicekit-bridge ingest benchmark")]
struct Args {
    /// Seconds of each closed-loop phase (baseline, ingest).
    #[arg(long, env = "BENCH_SECS", default_value_t = 10.0)]
    secs: f64,
    /// Concurrent keep-alive connections of the closed-loop phases.
    #[arg(long, env = "BENCH_CONNECTIONS", default_value_t = 64)]
    connections: usize,
    /// Webhooks/s of the end-to-end phase.
    #[arg(long, env = "BENCH_E2E_RATE", default_value_t = 500.0)]
    e2e_rate: f64,
    /// Seconds of the end-to-end phase (600 makes it the 10-minute RSS soak).
    #[arg(long, env = "BENCH_E2E_SECS", default_value_t = 10.0)]
    e2e_secs: f64,
    /// Connections of the end-to-end phase.
    #[arg(long, env = "BENCH_E2E_CONNECTIONS", default_value_t = 16)]
    e2e_connections: usize,
    /// Calls in progress for the memory and delivery phase.
    #[arg(long, env = "BENCH_CALLS", default_value_t = 10_000)]
    calls: u64,
    /// The highest ingest rate that webhooks are pre-signed for (memory: ~1.5 KB each).
    #[arg(long, env = "BENCH_MAX_RATE", default_value_t = 60_000.0)]
    max_rate: f64,
    /// The daemon's `log.level` (its log goes to a file in the temporary directory).
    #[arg(long, env = "BENCH_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Phases to run, comma separated.
    #[arg(
        long,
        env = "BENCH_PHASES",
        default_value = "baseline,ceiling,ingest,e2e,memory",
        value_delimiter = ','
    )]
    phases: Vec<String>,
    /// Stores to run ingest, e2e and memory against, comma separated, in this order
    /// (the baseline has no store and runs once). Default: `sqlite,postgres`; a smoke
    /// run takes the test suite's store instead (PostgreSQL when
    /// `VOICEKIT_TEST_STORE=postgres`, else SQLite).
    #[arg(long, env = "BENCH_STORES", value_enum, value_delimiter = ',')]
    stores: Option<Vec<StoreKind>>,
    /// The PostgreSQL server of the postgres store, without a database: every phase's
    /// daemon gets a fresh database `vkb_bench_<random>` on it, dropped afterwards.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    postgres_url: String,
    /// Where the JSON results go.
    #[arg(long, env = "BENCH_OUT", default_value = "bench-results/latest.json")]
    out: PathBuf,
    /// The daemon binary (default: the one cargo built for this bench).
    #[arg(long, env = "BENCH_DAEMON")]
    daemon: Option<PathBuf>,
    /// Ingest phase: the receiver holds its answers, so the delivery worker sits idle
    /// and only ingest is measured (a diagnosis aid; the default is the real daemon).
    #[arg(long, env = "BENCH_HOLD_DELIVERIES")]
    hold_deliveries: bool,
    /// Keep the temporary directory (stores and daemon logs) and the PostgreSQL
    /// databases, and print where they are.
    #[arg(long, env = "BENCH_KEEP")]
    keep: bool,
    /// Passed by `cargo bench`; without it this is the quick smoke run.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: be the bare axum baseline server.
    #[arg(long, hide = true)]
    baseline_server: bool,
    /// Internal: be a ceiling server (`ceiling.rs`).
    #[arg(long, hide = true, value_enum)]
    ceiling_server: Option<Ceiling>,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.baseline_server {
        return baseline_server();
    }
    if let Some(ceiling) = args.ceiling_server {
        return ceiling::serve(ceiling);
    }
    if !args.bench {
        // `cargo test --all-targets`: the same phases, tiny, against the debug daemon.
        args.secs = 1.0;
        args.connections = 8;
        args.e2e_rate = 100.0;
        args.e2e_secs = 1.0;
        args.e2e_connections = 4;
        args.calls = 200;
        args.max_rate = 2_000.0;
    }
    // The generator gets the same share of the machine as the daemon: one worker per core.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(bench(args))
}

/// The bare axum route of the baseline: reads the body, answers like the daemon does.
fn baseline_server() -> anyhow::Result<()> {
    use axum::{Json, Router, body::Bytes, routing::post};
    serve_until_killed(
        BASELINE_READY,
        Router::new().route(
            WEBHOOK_PATH,
            post(|_body: Bytes| async { Json(json!({ "status": "accepted" })) }),
        ),
    )
}

/// Serves `app` on a loopback port of its own, printed after `ready` for the bench
/// (`Proc::start`), until the bench kills this process.
fn serve_until_killed(ready: &str, app: axum::Router) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{ready}{}", listener.local_addr()?);
        // The sleep is only a backstop so it can never linger.
        tokio::select! {
            r = axum::serve(listener, app) => r?,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
        anyhow::Ok(())
    })
}

/// One line of the table: store, metric, measured, target, verdict.
struct Row(&'static str, String, String, String, &'static str);

/// The table's rows, each under the store of the phase that measured it.
struct Table {
    rows: Vec<Row>,
    store: &'static str,
}

impl Table {
    fn add(&mut self, metric: impl Into<String>, value: impl Into<String>) {
        self.with_target(metric, value, "");
    }

    /// A row with a target that is read off the numbers rather than judged here.
    fn with_target(&mut self, metric: impl Into<String>, value: impl Into<String>, target: &str) {
        self.rows.push(Row(
            self.store,
            metric.into(),
            value.into(),
            target.into(),
            "",
        ));
    }

    fn check(
        &mut self,
        metric: impl Into<String>,
        value: impl Into<String>,
        target: &str,
        ok: bool,
    ) {
        let verdict = if ok { "ok" } else { "MISSED" };
        self.rows.push(Row(
            self.store,
            metric.into(),
            value.into(),
            target.into(),
            verdict,
        ));
    }

    fn print(&self) {
        let w =
            |f: fn(&Row) -> usize, min: usize| self.rows.iter().map(f).max().unwrap_or(0).max(min);
        let w0 = w(|r| r.0.len(), 5);
        let w1 = w(|r| r.1.len(), 6);
        let w2 = w(|r| r.2.len(), 8);
        let w3 = w(|r| r.3.len(), 6);
        println!(
            "\n{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  ",
            "store", "metric", "measured", "target"
        );
        println!("{}", "-".repeat(w0 + w1 + w2 + w3 + 14));
        let mut last = None;
        for Row(store, metric, value, target, verdict) in &self.rows {
            if last.is_some_and(|l| l != *store) {
                println!();
            }
            last = Some(*store);
            println!("{store:<w0$}  {metric:<w1$}  {value:>w2$}  {target:<w3$}  {verdict}");
        }
        println!();
    }
}

/// The store of a round of phases.
enum Store {
    Sqlite,
    Postgres(pg::Server),
}

/// A phase's fresh, empty store: the daemon's `[store] url` and, for PostgreSQL, the
/// database, dropped with this value.
struct Fresh {
    url: String,
    db: Option<pg::Database>,
}

impl Store {
    fn kind(&self) -> StoreKind {
        match self {
            Store::Sqlite => StoreKind::Sqlite,
            Store::Postgres(_) => StoreKind::Postgres,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Store::Sqlite => "SQLite",
            Store::Postgres(_) => "PostgreSQL",
        }
    }

    fn fresh(&self, dir: &Path, keep: bool) -> Fresh {
        match self {
            Store::Sqlite => Fresh {
                url: format!("sqlite://{}", dir.join("bench.db").display()),
                db: None,
            },
            Store::Postgres(server) => {
                let db = server.fresh_database(keep);
                Fresh {
                    url: db.url.clone(),
                    db: Some(db),
                }
            }
        }
    }
}

/// What every phase needs.
struct Ctx {
    args: Args,
    smoke: bool,
    daemon: PathBuf,
    tmp: PathBuf,
    receiver: Receiver,
    closed: Duration,
    ttl: Duration,
    baseline_rate: Option<f64>,
}

impl Ctx {
    fn run(&self, phase: &str) -> bool {
        self.args.phases.iter().any(|x| x == phase)
    }

    fn phase_dir(&self, store: &Store, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.tmp.join(store.kind().key()).join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    async fn start_daemon(
        &self,
        dir: &Path,
        store_url: &str,
        delivery: &str,
    ) -> anyhow::Result<Proc> {
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            procs::daemon_config(
                store_url,
                self.receiver.addr,
                &self.args.log_level,
                delivery,
            ),
        )?;
        let config = config.to_str().context("temp path is UTF-8")?;
        Proc::start(
            "daemon",
            &self.daemon,
            &["run", "--config", config],
            dir,
            DAEMON_READY,
        )
        .await
    }
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let smoke = !args.bench;
    let daemon = args
        .daemon
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_voicekit-bridge")));
    if !daemon.exists() {
        bail!(
            "daemon binary {} not found: run `cargo bench --bench ingest` (it builds it) or pass --daemon",
            daemon.display()
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("voicekit-bench-")
        .tempdir()?;
    // With --keep the directory outlives the run from the start, so a phase that fails
    // (when its daemon log matters most) leaves it behind too.
    let (tmp, _removed_on_drop) = if args.keep {
        let kept = tmp.keep();
        println!("  keeping {}", kept.display());
        (kept, None)
    } else {
        (tmp.path().to_owned(), Some(tmp))
    };
    let stores = args.stores.clone().unwrap_or_else(|| default_stores(smoke));
    let receiver = Receiver::start().await?;
    let closed = Duration::from_secs_f64(args.secs);
    let planned = 4.0 * args.secs + args.e2e_secs + 300.0;
    let ttl = Duration::from_secs_f64(planned.max(300.0));
    println!(
        "voicekit-bridge ingest bench: daemon {}\n  {} cores, {} connections, {} s per closed-loop phase, stores {}{}",
        daemon.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.connections,
        args.secs,
        stores.iter().map(|s| s.key()).collect::<Vec<_>>().join(","),
        if smoke { " (smoke run)" } else { "" }
    );
    let mut ctx = Ctx {
        args,
        smoke,
        daemon,
        tmp: tmp.clone(),
        receiver,
        closed,
        ttl,
        baseline_rate: None,
    };
    let mut table = Table {
        rows: Vec::new(),
        store: "-",
    };
    let mut out = Map::new();

    if ctx.run("baseline") {
        baseline(&mut ctx, &mut table, &mut out).await?;
    }
    if ctx.run("ceiling") {
        ceilings(&ctx, &mut table, &mut out).await?;
    }

    let args = &ctx.args;
    let mut settings = json!({
        "secs": args.secs, "connections": args.connections, "e2e_rate": args.e2e_rate,
        "e2e_secs": args.e2e_secs, "e2e_connections": args.e2e_connections,
        "calls": args.calls, "log_level": args.log_level, "daemon": ctx.daemon,
        "postgres_url": pg::redact(&args.postgres_url),
    });
    let mut seen = Vec::new();
    for kind in stores {
        if seen.contains(&kind) {
            continue;
        }
        seen.push(kind);
        let store = match kind {
            StoreKind::Sqlite => Store::Sqlite,
            StoreKind::Postgres => match postgres(&ctx).await {
                Ok(server) => Store::Postgres(server),
                Err(e) => {
                    return Err(e.context(format!(
                        "PostgreSQL at {} (--postgres-url) did not answer; start it or pass --stores sqlite",
                        pg::redact(&ctx.args.postgres_url)
                    )));
                }
            },
        };
        table.store = store.label();
        let mut results = Map::new();
        if let Store::Postgres(server) = &store {
            results.insert("server".into(), server.info.clone());
        }
        if smoke && matches!(store, Store::Postgres(_)) {
            // Shorter still, so the PostgreSQL round adds only a few seconds to the tests.
            ctx.args.secs = 0.5;
            ctx.args.e2e_secs = 0.5;
            ctx.args.calls = 100;
            ctx.closed = Duration::from_secs_f64(ctx.args.secs);
        }
        if ctx.run("ingest") {
            ingest(&ctx, &store, &mut table, &mut results).await?;
        }
        if ctx.run("e2e") {
            e2e(&ctx, &store, &mut table, &mut results).await?;
        }
        if ctx.run("memory") {
            memory(&ctx, &store, &mut table, &mut results).await?;
        }
        match store {
            // The keys SQLite always had, where they were.
            Store::Sqlite => out.extend(results),
            Store::Postgres(_) => {
                out.insert("postgres".into(), Value::Object(results));
            }
        }
    }
    table.print();

    settings["stores"] = json!(seen.iter().map(|s| s.key()).collect::<Vec<_>>());
    let args = &ctx.args;
    let doc = json!({
        "bench": "ingest", "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("the clock is after 1970").as_secs() as i64,
        "git": git_describe(), "machine": machine(), "smoke": smoke,
        "settings": settings, "results": Value::Object(out),
    });
    let path = if smoke {
        tmp.join("smoke.json")
    } else {
        args.out.clone()
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("results: {}", path.display());
    if args.keep {
        println!("kept: {}", tmp.display());
    }
    if smoke {
        println!("bench smoke run: ok (`cargo bench --bench ingest` measures)");
    }
    Ok(())
}

/// The PostgreSQL server of `--postgres-url`, if it answers: within 2 s in a smoke run
/// (so a missing server costs CI nothing), 10 s otherwise.
async fn postgres(ctx: &Ctx) -> anyhow::Result<pg::Server> {
    let timeout = Duration::from_secs(if ctx.smoke { 2 } else { 10 });
    let server = pg::Server::connect(&ctx.args.postgres_url, timeout).await?;
    println!(
        "  PostgreSQL: {} (fsync {}, synchronous_commit {}) at {}",
        server.info["version"]
            .as_str()
            .and_then(|v| v.split(" on ").next())
            .unwrap_or("?"),
        server.info["fsync"].as_str().unwrap_or("?"),
        server.info["synchronous_commit"].as_str().unwrap_or("?"),
        server.redacted()
    );
    Ok(server)
}

/// The baseline's load, a closed loop that cycles through a few pre-signed webhooks per
/// connection, against this bench binary re-run with `server_args`.
async fn bench_server(
    ctx: &Ctx,
    name: &str,
    server_args: &[&str],
    ready: &str,
    checks_tokens: bool,
) -> anyhow::Result<(load::Report, CpuUse, PathBuf)> {
    let args = &ctx.args;
    let queues = calls::queues(
        "b",
        4 * args.connections as u64,
        args.connections,
        &WHOLE_CALL,
        ctx.ttl,
    );
    let exe = std::env::current_exe()?;
    let dir = ctx.tmp.join(name);
    std::fs::create_dir_all(&dir)?;
    let proc = Proc::start(name, &exe, server_args, &dir, ready).await?;
    let target = Target {
        addr: proc.addr,
        path: WEBHOOK_PATH.into(),
    };
    let meter = CpuMeter::start(proc.pid);
    let r = load::run(
        &target,
        queues,
        Mode::Closed {
            duration: ctx.closed,
            cycle: true,
        },
    )
    .await?;
    let cpu = meter.stop();
    if ctx.smoke && checks_tokens {
        // A server that skipped the check would be measured doing less than the daemon.
        let mut tampered = calls::queues("t", 1, 1, &WHOLE_CALL, ctx.ttl)[0][0].clone();
        tampered.body = format!("{} ", String::from_utf8_lossy(&tampered.body)).into();
        let status = load::post_one(&target, &tampered).await?;
        if status != hyper::StatusCode::UNAUTHORIZED {
            bail!("smoke: the {name} server answered a tampered body with {status}, not 401");
        }
    }
    proc.stop().await;
    note_others(name, &cpu, r.elapsed);
    // Every webhook is signed with the daemon's key and well formed: each is accepted.
    if ctx.smoke && (r.counts.accepted == 0 || r.counts.failed + r.counts.ignored > 0) {
        bail!(
            "smoke: the {name} server accepted {} and refused {}: {:?}",
            r.counts.accepted,
            r.counts.failed + r.counts.ignored,
            r.first_error
        );
    }
    Ok((r, cpu, dir))
}

async fn baseline(
    ctx: &mut Ctx,
    table: &mut Table,
    out: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let (r, cpu, _) = bench_server(
        ctx,
        "baseline",
        &["--baseline-server"],
        BASELINE_READY,
        false,
    )
    .await?;
    let rate = r.accepted_per_sec();
    let lat = percentiles(r.latencies_us);
    println!("  baseline: {rate:.0} requests/s");
    table.add(
        "baseline: bare axum route, requests/s",
        format!("{rate:.0}"),
    );
    table.add(
        "baseline p50 / p99 latency",
        format!("{:.2} / {:.2} ms", lat.p50_ms, lat.p99_ms),
    );
    out.insert(
        "baseline".into(),
        json!({
            "requests_per_sec": rate, "ok": r.counts.accepted, "failed": r.counts.failed,
            "elapsed_secs": r.elapsed.as_secs_f64(), "latency": lat,
            "cpu_secs": cpu,
        }),
    );
    ctx.baseline_rate = Some(rate);
    Ok(())
}

/// The ceilings of `ceiling.rs` under the baseline's load, as ratios to the baseline:
/// what the ingest / baseline target is read against on the machine of the run.
async fn ceilings(
    ctx: &Ctx,
    table: &mut Table,
    out: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let mut results = Map::new();
    for ceiling in Ceiling::ALL {
        let name = format!("ceiling-{}", ceiling.key());
        let (r, cpu, dir) = bench_server(
            ctx,
            &name,
            &["--ceiling-server", ceiling.key()],
            CEILING_READY,
            true,
        )
        .await?;
        if ctx.smoke && ceiling == Ceiling::Append {
            let logged = ceiling::logged(&dir.join(ceiling::LOG_FILE))?;
            if logged as u64 != r.counts.accepted {
                bail!(
                    "smoke: {} answered `accepted` but {logged} bodies are in the log",
                    r.counts.accepted
                );
            }
        }
        let rate = r.accepted_per_sec();
        let ratio = ctx.baseline_rate.map(|b| rate / b);
        let lat = percentiles(r.latencies_us);
        println!("  {name}: {rate:.0} webhooks/s");
        table.with_target(
            format!("ceiling: {} / baseline", ceiling.describe()),
            match ratio {
                Some(ratio) => format!("{ratio:.2} ({rate:.0}/s)"),
                None => format!("{rate:.0}/s"),
            },
            "(ingest's ceiling)",
        );
        results.insert(
            ceiling.key().into(),
            json!({
                "webhooks_per_sec": rate, "ratio_to_baseline": ratio,
                "ok": r.counts.accepted, "failed": r.counts.failed,
                "elapsed_secs": r.elapsed.as_secs_f64(), "latency": lat, "cpu_secs": cpu,
            }),
        );
    }
    out.insert("ceiling".into(), Value::Object(results));
    Ok(())
}

async fn ingest(
    ctx: &Ctx,
    store: &Store,
    table: &mut Table,
    out: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let (args, receiver, label) = (&ctx.args, &ctx.receiver, store.label());
    let calls = ((args.max_rate * args.secs) / WHOLE_CALL.len() as f64).ceil() as u64;
    let started = Instant::now();
    let queues = calls::queues("i", calls, args.connections, &WHOLE_CALL, ctx.ttl);
    let total: usize = queues.iter().map(Vec::len).sum();
    let bytes: usize = queues.iter().flatten().map(|w| w.body.len()).sum();
    println!(
        "  ingest ({label}): {total} webhooks pre-signed in {:.1} s, mean body {} bytes",
        started.elapsed().as_secs_f64(),
        bytes / total.max(1)
    );
    let dir = ctx.phase_dir(store, "ingest")?;
    let fresh = store.fresh(&dir, args.keep);
    receiver.reset();
    let delivery = if args.hold_deliveries {
        // Held answers fill every slot, so the worker stops querying the outbox.
        receiver.hold();
        "timeout_secs = 300\nclaim_lease_secs = 600\nconcurrency = 4\nper_endpoint_concurrency = 4"
    } else {
        "timeout_secs = 10"
    };
    let proc = ctx.start_daemon(&dir, &fresh.url, delivery).await?;
    let target = Target {
        addr: proc.addr,
        path: WEBHOOK_PATH.into(),
    };
    let sampler = RssSampler::start(proc.pid, ctx.closed + Duration::from_secs(30));
    let meter = PhaseCpu::start(proc.pid, &fresh).await?;
    let r = load::run(
        &target,
        queues,
        Mode::Closed {
            duration: ctx.closed,
            cycle: false,
        },
    )
    .await?;
    let cpu = meter.stop().await?;
    let mem = proc.memory();
    let rss = sampler.stop();
    let delivered = receiver.total();
    proc.stop().await;
    receiver.release();
    note_others(&format!("ingest ({label})"), &cpu, r.elapsed);
    let rate = r.accepted_per_sec();
    let lat = percentiles(r.latencies_us.clone());
    println!(
        "  ingest ({label}): {rate:.0} accepted webhooks/s, p99 {:.2} ms",
        lat.p99_ms
    );
    if r.exhausted > 0 {
        println!(
            "  note: {} connections ran out of pre-signed webhooks; raise --max-rate",
            r.exhausted
        );
    }
    table.check(
        "ingest (durable): accepted webhooks/s",
        format!("{rate:.0}"),
        ">= 10000",
        rate >= 10_000.0,
    );
    table.add(
        "ingest p50 / p99 latency",
        format!("{:.2} / {:.2} ms", lat.p50_ms, lat.p99_ms),
    );
    let ratio = ctx.baseline_rate.map(|b| rate / b);
    if let Some(ratio) = ratio {
        table.check(
            "ingest / baseline",
            format!("{ratio:.2}"),
            ">= 0.5",
            ratio >= 0.5,
        );
    }
    let per_webhook = |secs: f64| format!("{:.0} us", secs * 1e6 / r.counts.accepted.max(1) as f64);
    table.add("daemon CPU per accepted webhook", per_webhook(cpu.server));
    if fresh.db.is_some() {
        table.add(
            "PostgreSQL server CPU per accepted webhook",
            per_webhook(cpu.store),
        );
    }
    cores_busy(table, "ingest", &fresh, &cpu, r.elapsed);
    table.add(
        "VoiceKit events delivered during ingest (of ~3 per call)",
        format!("{delivered} of ~{}", r.counts.accepted * 3 / 8),
    );
    out.insert(
        "ingest".into(),
        json!({
            "accepted_per_sec": rate, "ratio_to_baseline": ratio,
            "accepted": r.counts.accepted, "duplicate": r.counts.duplicate,
            "ignored": r.counts.ignored, "failed": r.counts.failed,
            "first_error": r.first_error, "elapsed_secs": r.elapsed.as_secs_f64(),
            "latency": lat, "presigned_webhooks": total, "mean_body_bytes": bytes / total.max(1),
            "exhausted_connections": r.exhausted, "cpu_secs": cpu,
            "daemon_memory": mem, "rss_samples_kib": rss_json(&rss),
            "voicekit_events_delivered_meanwhile": delivered,
        }),
    );
    if r.counts.failed > 0 || r.counts.accepted == 0 {
        bail!(
            "ingest ({label}): {} webhooks failed (first: {:?}); see {}",
            r.counts.failed,
            r.first_error,
            proc_log(&dir)
        );
    }
    Ok(())
}

async fn e2e(
    ctx: &Ctx,
    store: &Store,
    table: &mut Table,
    out: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let (args, receiver, label) = (&ctx.args, &ctx.receiver, store.label());
    let calls = (args.e2e_rate * args.e2e_secs / WHOLE_CALL.len() as f64).ceil() as u64
        + args.e2e_connections as u64;
    let queues = calls::queues("e", calls, args.e2e_connections, &WHOLE_CALL, ctx.ttl);
    let dir = ctx.phase_dir(store, "e2e")?;
    let fresh = store.fresh(&dir, args.keep);
    receiver.reset();
    let proc = ctx
        .start_daemon(&dir, &fresh.url, "timeout_secs = 10")
        .await?;
    let target = Target {
        addr: proc.addr,
        path: WEBHOOK_PATH.into(),
    };
    let duration = Duration::from_secs_f64(args.e2e_secs);
    let sampler = RssSampler::start(proc.pid, duration + Duration::from_secs(30));
    let r = load::run(
        &target,
        queues,
        Mode::Paced {
            rate: args.e2e_rate,
            duration,
        },
    )
    .await?;
    let expected = r.posted.len();
    let waited = Instant::now();
    while (receiver.total() as usize) < expected && waited.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss = sampler.stop();
    let mem = proc.memory();
    proc.stop().await;
    let arrived: HashMap<(Emits, String), Instant> = receiver
        .arrivals()
        .into_iter()
        .map(|(k, key, at)| ((k, key), at))
        .collect();
    let mut by_kind: HashMap<Emits, Vec<u32>> = HashMap::new();
    let mut missing = 0;
    for (kind, key, posted) in &r.posted {
        match arrived.get(&(*kind, key.clone())) {
            Some(at) => by_kind.entry(*kind).or_default().push(
                at.saturating_duration_since(*posted)
                    .as_micros()
                    .min(u32::MAX as u128) as u32,
            ),
            None => missing += 1,
        }
    }
    let pct = |k| percentiles(by_kind.get(&k).cloned().unwrap_or_default());
    let (started, ended, finalized) = (
        pct(Emits::Started),
        pct(Emits::Ended),
        pct(Emits::Finalized),
    );
    let rate = r.counts.accepted as f64 / r.elapsed.as_secs_f64().max(1e-9);
    println!(
        "  e2e ({label}): {rate:.0} webhooks/s, call_started p99 {:.2} ms, {missing} missing",
        started.p99_ms
    );
    for (name, p) in [("call_started", started), ("call_ended", ended)] {
        table.check(
            format!("end to end at {:.0}/s: {name} p50 / p99", args.e2e_rate),
            format!("{:.2} / {:.2} ms", p.p50_ms, p.p99_ms),
            "p99 < 20 ms",
            p.p99_ms < 20.0 && missing == 0,
        );
    }
    table.add(
        "end to end: call_finalized p50 / p99",
        format!("{:.2} / {:.2} ms", finalized.p50_ms, finalized.p99_ms),
    );
    let (first, max, last) = rss_summary(&rss);
    table.with_target(
        format!(
            "RSS over the {:.0} s run: first / max / last",
            args.e2e_secs
        ),
        format!("{:.1} / {:.1} / {:.1} MiB", first, max, last),
        "no growth",
    );
    out.insert(
        "e2e".into(),
        json!({
            "rate": args.e2e_rate, "achieved_rate": rate, "accepted": r.counts.accepted,
            "failed": r.counts.failed, "events_expected": expected, "events_missing": missing,
            "call_started": started, "call_ended": ended, "call_finalized": finalized,
            "webhook_latency": percentiles(r.latencies_us),
            "daemon_memory": mem, "rss_samples_kib": rss_json(&rss),
        }),
    );
    if missing > 0 || r.counts.failed > 0 {
        bail!(
            "e2e ({label}): {missing} VoiceKit events never arrived, {} webhooks failed (first: {:?}); see {}",
            r.counts.failed,
            r.first_error,
            proc_log(&dir)
        );
    }
    Ok(())
}

async fn memory(
    ctx: &Ctx,
    store: &Store,
    table: &mut Table,
    out: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let (args, receiver, label) = (&ctx.args, &ctx.receiver, store.label());
    let queues = calls::queues("m", args.calls, args.connections, &CALL_START, ctx.ttl);
    let dir = ctx.phase_dir(store, "memory")?;
    let fresh = store.fresh(&dir, args.keep);
    receiver.reset();
    receiver.hold();
    // A long delivery timeout: held requests must not time out and be retried (the
    // claim on a delivery, which PostgreSQL stores use, must outlast it).
    let proc = ctx
        .start_daemon(
            &dir,
            &fresh.url,
            "timeout_secs = 300\nclaim_lease_secs = 600",
        )
        .await?;
    let target = Target {
        addr: proc.addr,
        path: WEBHOOK_PATH.into(),
    };
    let r = load::run(
        &target,
        queues,
        Mode::Closed {
            duration: Duration::from_secs(600),
            cycle: false,
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let filled = proc.memory();
    let meter = PhaseCpu::start(proc.pid, &fresh).await?;
    receiver.release();
    let drain = Instant::now();
    while receiver.count(Emits::Started) < args.calls && drain.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drained = drain.elapsed().as_secs_f64();
    let drain_cpu = meter.stop().await?;
    let delivered = receiver.count(Emits::Started);
    let connections = receiver.connections();
    let after = proc.memory();
    proc.stop().await;
    let fill_rate = r.accepted_per_sec();
    let delivery_rate = delivered as f64 / drained.max(1e-9);
    let peak_mib = after.peak_kib as f64 / 1024.0;
    println!(
        "  memory ({label}): peak {peak_mib:.1} MiB with {} calls; delivery {delivery_rate:.0} events/s",
        args.calls
    );
    table.check(
        format!("peak RSS, {} calls in progress", args.calls),
        format!("{peak_mib:.1} MiB"),
        "< 64 MiB",
        peak_mib < 64.0,
    );
    table.add(
        "  ingest of those calls (3 webhooks each), webhooks/s",
        format!("{fill_rate:.0}"),
    );
    table.check(
        format!("delivery: {} call_started drained, events/s", args.calls),
        format!("{delivery_rate:.0} over {connections} connections"),
        ">= 5000",
        delivery_rate >= 5000.0,
    );
    cores_busy(
        table,
        "the drain",
        &fresh,
        &drain_cpu,
        Duration::from_secs_f64(drained),
    );
    out.insert(
        "memory".into(),
        json!({
            "calls": args.calls, "webhooks_accepted": r.counts.accepted, "failed": r.counts.failed,
            "fill_webhooks_per_sec": fill_rate, "fill_latency": percentiles(r.latencies_us),
            "after_fill": filled, "after_drain": after, "peak_rss_mib": peak_mib,
        }),
    );
    out.insert(
        "delivery".into(),
        json!({
            "events": delivered, "secs": drained, "events_per_sec": delivery_rate,
            "connections": connections, "cpu_secs": drain_cpu,
        }),
    );
    if r.counts.accepted != args.calls * CALL_START.len() as u64 || delivered < args.calls {
        bail!(
            "memory ({label}): {} of {} webhooks accepted (first error: {:?}), {delivered} of {} call_started delivered; see {}",
            r.counts.accepted,
            args.calls * 3,
            r.first_error,
            args.calls,
            proc_log(&dir)
        );
    }
    Ok(())
}

/// The daemon's CPU over a stretch of a phase, and on PostgreSQL the server's.
struct PhaseCpu<'a> {
    daemon: CpuMeter,
    postgres: Option<(pg::CpuMeter, &'a pg::Database)>,
}

impl<'a> PhaseCpu<'a> {
    async fn start(pid: u32, fresh: &'a Fresh) -> anyhow::Result<PhaseCpu<'a>> {
        let postgres = match &fresh.db {
            Some(db) => Some((db.cpu_meter().await?, db)),
            None => None,
        };
        Ok(PhaseCpu {
            daemon: CpuMeter::start(pid),
            postgres,
        })
    }

    async fn stop(self) -> anyhow::Result<CpuUse> {
        let cpu = self.daemon.stop();
        Ok(match self.postgres {
            Some((meter, db)) => cpu.with_store(meter.stop(db).await?),
            None => cpu,
        })
    }
}

/// A row of how many cores each process kept busy during `what`.
fn cores_busy(table: &mut Table, what: &str, fresh: &Fresh, cpu: &CpuUse, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let (d, s, b, o) = (
        cpu.server / secs,
        cpu.store / secs,
        cpu.bench / secs,
        cpu.others / secs,
    );
    if fresh.db.is_some() {
        table.add(
            format!("cores busy during {what}: daemon / PostgreSQL / bench / other"),
            format!("{d:.2} / {s:.2} / {b:.2} / {o:.2}"),
        );
    } else {
        table.add(
            format!("cores busy during {what}: daemon / bench / other"),
            format!("{d:.2} / {b:.2} / {o:.2}"),
        );
    }
}

/// Warns when other processes took a noticeable share of the cores during a phase.
fn note_others(phase: &str, cpu: &CpuUse, elapsed: Duration) {
    let share = cpu.others / elapsed.as_secs_f64().max(1e-9);
    if share > 0.1 {
        println!(
            "  note: other processes used {share:.2} cores during {phase}; its numbers are low"
        );
    }
}

fn proc_log(dir: &Path) -> String {
    dir.join("daemon.log").display().to_string()
}

fn rss_json(samples: &[(f64, u64)]) -> Value {
    json!(
        samples
            .iter()
            .map(|(t, kib)| json!([(t * 100.0).round() / 100.0, kib]))
            .collect::<Vec<_>>()
    )
}

/// First, highest and last sample, in MiB.
fn rss_summary(samples: &[(f64, u64)]) -> (f64, f64, f64) {
    let mib = |k: u64| k as f64 / 1024.0;
    let first = samples.first().map_or(0, |s| s.1);
    let last = samples.last().map_or(0, |s| s.1);
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    (mib(first), mib(max), mib(last))
}

fn git_describe() -> Value {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    json!({
        "commit": run(&["rev-parse", "--short", "HEAD"]),
        "dirty": run(&["status", "--porcelain"]).map(|s| !s.is_empty()),
    })
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
    });
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
    })
}
