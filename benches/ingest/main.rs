//! Issue 5's benchmark: how fast the release daemon ingests LiveKit webhooks, measured
//! against what a bare axum route does on the same machine.
//!
//! `cargo bench --bench ingest` builds the daemon in the bench profile (= release) and
//! runs, each against a fresh process on loopback with a fresh SQLite store:
//! 1. baseline: the load below against a bare axum route (this binary, re-run with
//!    `--baseline-server`): reads the body, answers 200, nothing else;
//! 2. ingest: pre-signed, distinct, realistic webhooks (whole calls: room, SIP caller,
//!    agent, egress) from many keep-alive connections for a fixed time; accepted/s,
//!    p50/p99, and the ratio to the baseline;
//! 3. end to end: a paced 500 webhooks/s; post -> arrival at the receiver of
//!    `call_started` / `call_ended` / `call_finalized`; RSS sampled throughout;
//! 4. memory: 10,000 calls in progress (room, caller and agent joined; none finished)
//!    with the receiver holding its answers, then peak RSS (VmHWM); then the receiver
//!    lets go and the 10,000 queued `call_started` drain: delivery events/s;
//! 5. PostgreSQL: skipped until that backend exists.
//!
//! Prints a table and writes JSON (default `bench-results/latest.json`). Every flag has
//! an environment variable (`--help`). Run without `--bench` (as `cargo test
//! --all-targets` does) it is a seconds-long smoke test of the same code paths that
//! fails when any phase does not work, and writes nothing into the repository.

mod calls;
mod load;
mod procs;
mod receiver;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

use calls::{CALL_START, Emits, FULL_CALL};
use load::{Mode, Target, percentiles};
use procs::{CpuMeter, CpuUse, Proc, RssSampler};
use receiver::Receiver;

const WEBHOOK_PATH: &str = "/livekit/webhook";
const DAEMON_READY: &str = "voicekit-bridge listening on ";
const BASELINE_READY: &str = "baseline listening on ";

#[derive(Parser, Debug)]
#[command(about = "voicekit-bridge ingest benchmark (issue 5)")]
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
    #[arg(long, env = "BENCH_MAX_RATE", default_value_t = 30_000.0)]
    max_rate: f64,
    /// The daemon's `log.level` (its log goes to a file in the temporary directory).
    #[arg(long, env = "BENCH_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Phases to run, comma separated.
    #[arg(
        long,
        env = "BENCH_PHASES",
        default_value = "baseline,ingest,e2e,memory",
        value_delimiter = ','
    )]
    phases: Vec<String>,
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
    /// Keep the temporary directory (stores and daemon logs) and print its path.
    #[arg(long, env = "BENCH_KEEP")]
    keep: bool,
    /// Passed by `cargo bench`; without it this is the quick smoke run.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: be the bare axum baseline server.
    #[arg(long, hide = true)]
    baseline_server: bool,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.baseline_server {
        return baseline_server();
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
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{BASELINE_READY}{}", listener.local_addr()?);
        let app = Router::new().route(
            WEBHOOK_PATH,
            post(|_body: Bytes| async { Json(json!({ "status": "accepted" })) }),
        );
        // The bench kills it; the sleep is only a backstop so it can never linger.
        tokio::select! {
            r = axum::serve(listener, app) => r?,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
        anyhow::Ok(())
    })
}

/// One line of the table: metric, measured, target, verdict.
struct Row(String, String, String, &'static str);

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
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
    let receiver = Receiver::start().await?;
    let closed = Duration::from_secs_f64(args.secs);
    let planned = 4.0 * args.secs + args.e2e_secs + 300.0;
    let ttl = Duration::from_secs_f64(planned.max(300.0));
    let run = |p: &str| args.phases.iter().any(|x| x == p);
    println!(
        "voicekit-bridge ingest bench: daemon {}\n  {} cores, {} connections, {} s per closed-loop phase{}",
        daemon.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.connections,
        args.secs,
        if smoke { " (smoke run)" } else { "" }
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut out = serde_json::Map::new();
    let mut baseline_rate = None;

    if run("baseline") {
        let queues = calls::queues(
            "b",
            4 * args.connections as u64,
            args.connections,
            FULL_CALL,
            ttl,
        );
        let exe = std::env::current_exe()?;
        let proc = Proc::start(
            "baseline",
            &exe,
            &["--baseline-server"],
            tmp.path(),
            BASELINE_READY,
        )
        .await?;
        let target = Target {
            addr: proc.addr,
            path: WEBHOOK_PATH.into(),
        };
        let meter = CpuMeter::start(proc.pid);
        let r = load::run(
            &target,
            queues,
            Mode::Closed {
                duration: closed,
                cycle: true,
            },
        )
        .await?;
        let cpu = meter.stop();
        proc.stop().await;
        note_others("baseline", &cpu, r.elapsed);
        let rate = r.accepted_per_sec();
        let lat = percentiles(r.latencies_us);
        println!("  baseline: {rate:.0} requests/s");
        rows.push(Row(
            "baseline: bare axum route, requests/s".into(),
            format!("{rate:.0}"),
            "".into(),
            "",
        ));
        rows.push(Row(
            "baseline p50 / p99 latency".into(),
            format!("{:.2} / {:.2} ms", lat.p50_ms, lat.p99_ms),
            "".into(),
            "",
        ));
        out.insert(
            "baseline".into(),
            json!({
                "requests_per_sec": rate, "ok": r.counts.accepted, "failed": r.counts.failed,
                "elapsed_secs": r.elapsed.as_secs_f64(), "latency": lat,
                "cpu_secs": cpu,
            }),
        );
        if smoke && r.counts.accepted == 0 {
            bail!("smoke: the baseline answered nothing: {:?}", r.first_error);
        }
        baseline_rate = Some(rate);
    }

    if run("ingest") {
        let calls = ((args.max_rate * args.secs) / FULL_CALL.len() as f64).ceil() as u64;
        let started = Instant::now();
        let queues = calls::queues("i", calls, args.connections, FULL_CALL, ttl);
        let total: usize = queues.iter().map(Vec::len).sum();
        let bytes: usize = queues.iter().flatten().map(|w| w.body.len()).sum();
        println!(
            "  ingest: {total} webhooks pre-signed in {:.1} s, mean body {} bytes",
            started.elapsed().as_secs_f64(),
            bytes / total.max(1)
        );
        let dir = phase_dir(tmp.path(), "ingest")?;
        receiver.reset();
        let delivery = if args.hold_deliveries {
            // Held answers fill every slot, so the worker stops querying the outbox.
            receiver.hold();
            "timeout_secs = 300\nconcurrency = 4\nper_endpoint_concurrency = 4"
        } else {
            "timeout_secs = 10"
        };
        let proc = start_daemon(&daemon, &dir, &receiver, &args.log_level, delivery).await?;
        let target = Target {
            addr: proc.addr,
            path: WEBHOOK_PATH.into(),
        };
        let sampler = RssSampler::start(proc.pid, closed + Duration::from_secs(30));
        let meter = CpuMeter::start(proc.pid);
        let r = load::run(
            &target,
            queues,
            Mode::Closed {
                duration: closed,
                cycle: false,
            },
        )
        .await?;
        let cpu = meter.stop();
        let mem = proc.memory();
        let rss = sampler.stop();
        let delivered = receiver.total();
        proc.stop().await;
        receiver.release();
        note_others("ingest", &cpu, r.elapsed);
        let rate = r.accepted_per_sec();
        let lat = percentiles(r.latencies_us.clone());
        println!(
            "  ingest: {rate:.0} accepted webhooks/s, p99 {:.2} ms",
            lat.p99_ms
        );
        if r.exhausted > 0 {
            println!(
                "  note: {} connections ran out of pre-signed webhooks; raise --max-rate",
                r.exhausted
            );
        }
        rows.push(Row(
            "ingest (SQLite, durable): accepted webhooks/s".into(),
            format!("{rate:.0}"),
            ">= 10000".into(),
            verdict(rate >= 10_000.0),
        ));
        rows.push(Row(
            "ingest p50 / p99 latency".into(),
            format!("{:.2} / {:.2} ms", lat.p50_ms, lat.p99_ms),
            "".into(),
            "",
        ));
        let ratio = baseline_rate.map(|b| rate / b);
        if let Some(ratio) = ratio {
            rows.push(Row(
                "ingest / baseline".into(),
                format!("{ratio:.2}"),
                ">= 0.5".into(),
                verdict(ratio >= 0.5),
            ));
        }
        rows.push(Row(
            "daemon CPU per accepted webhook".into(),
            format!(
                "{:.0} us",
                cpu.server * 1e6 / r.counts.accepted.max(1) as f64
            ),
            "".into(),
            "",
        ));
        rows.push(Row(
            "VoiceKit events delivered during ingest (of ~3 per call)".into(),
            format!("{delivered} of ~{}", r.counts.accepted * 3 / 8),
            "".into(),
            "",
        ));
        out.insert("ingest".into(), json!({
            "accepted_per_sec": rate, "ratio_to_baseline": ratio,
            "accepted": r.counts.accepted, "duplicate": r.counts.duplicate,
            "ignored": r.counts.ignored, "failed": r.counts.failed,
            "first_error": r.first_error, "elapsed_secs": r.elapsed.as_secs_f64(),
            "latency": lat, "presigned_webhooks": total, "mean_body_bytes": bytes / total.max(1),
            "exhausted_connections": r.exhausted, "cpu_secs": cpu,
            "daemon_memory": mem, "rss_samples_kib": rss_json(&rss),
            "voicekit_events_delivered_meanwhile": delivered,
        }));
        if r.counts.failed > 0 || r.counts.accepted == 0 {
            bail!(
                "ingest: {} webhooks failed (first: {:?}); see {}",
                r.counts.failed,
                r.first_error,
                proc_log(&dir)
            );
        }
    }

    if run("e2e") {
        let calls = (args.e2e_rate * args.e2e_secs / FULL_CALL.len() as f64).ceil() as u64
            + args.e2e_connections as u64;
        let queues = calls::queues("e", calls, args.e2e_connections, FULL_CALL, ttl);
        let dir = phase_dir(tmp.path(), "e2e")?;
        receiver.reset();
        let proc = start_daemon(
            &daemon,
            &dir,
            &receiver,
            &args.log_level,
            "timeout_secs = 10",
        )
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
            "  e2e: {rate:.0} webhooks/s, call_started p99 {:.2} ms, {missing} missing",
            started.p99_ms
        );
        for (name, p) in [("call_started", started), ("call_ended", ended)] {
            rows.push(Row(
                format!("end to end at {:.0}/s: {name} p50 / p99", args.e2e_rate),
                format!("{:.2} / {:.2} ms", p.p50_ms, p.p99_ms),
                "p99 < 20 ms".into(),
                verdict(p.p99_ms < 20.0 && missing == 0),
            ));
        }
        rows.push(Row(
            "end to end: call_finalized p50 / p99".into(),
            format!("{:.2} / {:.2} ms", finalized.p50_ms, finalized.p99_ms),
            "".into(),
            "",
        ));
        let (first, max, last) = rss_summary(&rss);
        rows.push(Row(
            format!(
                "RSS over the {:.0} s run: first / max / last",
                args.e2e_secs
            ),
            format!("{:.1} / {:.1} / {:.1} MiB", first, max, last),
            "no growth".into(),
            "",
        ));
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
                "e2e: {missing} VoiceKit events never arrived, {} webhooks failed (first: {:?}); see {}",
                r.counts.failed,
                r.first_error,
                proc_log(&dir)
            );
        }
    }

    if run("memory") {
        let queues = calls::queues("m", args.calls, args.connections, CALL_START, ttl);
        let dir = phase_dir(tmp.path(), "memory")?;
        receiver.reset();
        receiver.hold();
        // A long delivery timeout: held requests must not time out and be retried.
        let proc = start_daemon(
            &daemon,
            &dir,
            &receiver,
            &args.log_level,
            "timeout_secs = 300",
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
        receiver.release();
        let drain = Instant::now();
        while receiver.count(Emits::Started) < args.calls
            && drain.elapsed() < Duration::from_secs(600)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let drained = drain.elapsed().as_secs_f64();
        let delivered = receiver.count(Emits::Started);
        let connections = receiver.connections();
        let after = proc.memory();
        proc.stop().await;
        let fill_rate = r.accepted_per_sec();
        let delivery_rate = delivered as f64 / drained.max(1e-9);
        let peak_mib = after.peak_kib as f64 / 1024.0;
        println!(
            "  memory: peak {peak_mib:.1} MiB with {} calls; delivery {delivery_rate:.0} events/s",
            args.calls
        );
        rows.push(Row(
            format!("peak RSS, {} calls in progress", args.calls),
            format!("{peak_mib:.1} MiB"),
            "< 64 MiB".into(),
            verdict(peak_mib < 64.0),
        ));
        rows.push(Row(
            "  ingest of those calls (3 webhooks each), webhooks/s".into(),
            format!("{fill_rate:.0}"),
            "".into(),
            "",
        ));
        rows.push(Row(
            format!("delivery: {} call_started drained, events/s", args.calls),
            format!("{delivery_rate:.0} over {connections} connections"),
            ">= 5000".into(),
            verdict(delivery_rate >= 5000.0),
        ));
        out.insert("memory".into(), json!({
            "calls": args.calls, "webhooks_accepted": r.counts.accepted, "failed": r.counts.failed,
            "fill_webhooks_per_sec": fill_rate, "fill_latency": percentiles(r.latencies_us),
            "after_fill": filled, "after_drain": after, "peak_rss_mib": peak_mib,
        }));
        out.insert(
            "delivery".into(),
            json!({
                "events": delivered, "secs": drained, "events_per_sec": delivery_rate,
                "connections": connections,
            }),
        );
        if r.counts.accepted != args.calls * CALL_START.len() as u64 || delivered < args.calls {
            bail!(
                "memory: {} of {} webhooks accepted (first error: {:?}), {delivered} of {} call_started delivered; see {}",
                r.counts.accepted,
                args.calls * 3,
                r.first_error,
                args.calls,
                proc_log(&dir)
            );
        }
    }

    rows.push(Row(
        "PostgreSQL".into(),
        "skipped: no PostgreSQL backend yet".into(),
        "".into(),
        "",
    ));
    out.insert(
        "postgres".into(),
        json!("skipped: no PostgreSQL backend yet"),
    );
    print_table(&rows);

    let doc = json!({
        "bench": "ingest", "unix_time": voicekit_bridge::store::now_ms() / 1000,
        "git": git_describe(), "machine": machine(), "smoke": smoke,
        "settings": {
            "secs": args.secs, "connections": args.connections, "e2e_rate": args.e2e_rate,
            "e2e_secs": args.e2e_secs, "e2e_connections": args.e2e_connections,
            "calls": args.calls, "log_level": args.log_level, "daemon": daemon,
        },
        "results": Value::Object(out),
    });
    let path = if smoke {
        tmp.path().join("smoke.json")
    } else {
        args.out.clone()
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("results: {}", path.display());
    if args.keep {
        println!("kept: {}", tmp.keep().display());
    }
    if smoke {
        println!("bench smoke run: ok (`cargo bench --bench ingest` measures)");
    }
    Ok(())
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

fn phase_dir(tmp: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn proc_log(dir: &Path) -> String {
    dir.join("daemon.log").display().to_string()
}

async fn start_daemon(
    program: &Path,
    dir: &Path,
    receiver: &Receiver,
    log_level: &str,
    delivery: &str,
) -> anyhow::Result<Proc> {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        procs::daemon_config(dir, receiver.addr, log_level, delivery),
    )?;
    let config = config.to_str().context("temp path is UTF-8")?;
    Proc::start(
        "daemon",
        program,
        &["run", "--config", config],
        dir,
        DAEMON_READY,
    )
    .await
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

fn print_table(rows: &[Row]) {
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(6);
    println!(
        "\n{:<w0$}  {:>w1$}  {:<w2$}  ",
        "metric", "measured", "target"
    );
    println!("{}", "-".repeat(w0 + w1 + w2 + 12));
    for Row(metric, value, target, verdict) in rows {
        println!("{metric:<w0$}  {value:>w1$}  {target:<w2$}  {verdict}");
    }
    println!();
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
