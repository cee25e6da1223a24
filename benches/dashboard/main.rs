//! The dashboard benchmark: how long the release daemon takes to answer the dashboard's
//! overview and filtered lists over HTTP with a big store behind it (100,000 calls and
//! 300,000 deliveries, plus their attempts and LiveKit events), on SQLite and on
//! PostgreSQL. The target is under 200 ms for each page.
//!
//! `cargo bench --bench dashboard` seeds each store in its own SQL (`seed.rs`), starts
//! the daemon on it as a separate process, warms each page up, then times sequential
//! requests one after another on one keep-alive connection. `cargo test --all-targets`
//! runs it as a smoke test against the debug build with 1,000 calls, on the suite's
//! store (PostgreSQL when `VOICEKIT_TEST_STORE=postgres`). `BENCH_STORES=sqlite` (or
//! `postgres`) picks the stores of a full run; `VOICEKIT_TEST_POSTGRES` names another
//! PostgreSQL server.

mod seed;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use voicekit_bridge::{daemon::OPERATOR_API_LINE, testkit::store as schema};

const TARGET_MS: f64 = 200.0;

/// One page the bench times, and what it stands for.
struct Page {
    name: &'static str,
    path: String,
    /// What the answer must contain: it found what it was asked for.
    shows: String,
}

struct Settings {
    calls: i64,
    warmup: usize,
    timed: usize,
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let settings = if full {
        Settings {
            calls: 100_000,
            warmup: 3,
            timed: 30,
        }
    } else {
        Settings {
            calls: 1_000,
            warmup: 1,
            timed: 3,
        }
    };
    let postgres_suite = std::env::var("VOICEKIT_TEST_STORE").is_ok_and(|s| s == "postgres");
    let stores = match std::env::var("BENCH_STORES") {
        Ok(stores) => stores.split(',').map(str::to_owned).collect(),
        Err(_) if full => vec!["sqlite".to_owned(), "postgres".to_owned()],
        Err(_) if postgres_suite => vec!["postgres".to_owned()],
        Err(_) => vec!["sqlite".to_owned()],
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    for store in &stores {
        let timings = runtime.block_on(run(store, &settings))?;
        rows.push((store.clone(), timings));
    }
    println!(
        "\n{} calls, {} deliveries; {} timed requests per page after {} to warm up\n",
        settings.calls,
        settings.calls * 3,
        settings.timed,
        settings.warmup
    );
    println!(
        "| page | {} |",
        stores.join(" p50 / p95 ms | ") + " p50 / p95 ms"
    );
    println!("|---|{}", "---|".repeat(stores.len()));
    let mut missed = Vec::new();
    for (i, page) in rows[0].1.iter().enumerate() {
        let cells: Vec<String> = rows
            .iter()
            .map(|(store, timings)| {
                let (p50, p95) = timings[i].1;
                if p95 >= TARGET_MS {
                    missed.push(format!("{store}: {} p95 {p95:.1} ms", page.0));
                }
                format!("{p50:.1} / {p95:.1}")
            })
            .collect();
        println!("| {} | {} |", page.0, cells.join(" | "));
    }
    if full && !missed.is_empty() {
        bail!("over the {TARGET_MS} ms target: {}", missed.join("; "));
    }
    Ok(())
}

/// Seeds `store`, starts the daemon on it and times every page: (name, (p50, p95)).
async fn run(store: &str, settings: &Settings) -> anyhow::Result<Vec<(&'static str, (f64, f64))>> {
    let dir = tempfile::Builder::new()
        .prefix("voicekit-bench-dashboard-")
        .tempdir()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let started = Instant::now();
    let (url, drop_db) = match store {
        "sqlite" => {
            let file = dir.path().join("bench.db");
            let url = format!("sqlite://{}", file.display());
            schema::create(&url).await.map_err(anyhow::Error::msg)?;
            seed::sqlite(&file, settings.calls, now)?;
            (url, None)
        }
        "postgres" => {
            let server = std::env::var("VOICEKIT_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
            let name = format!("vkb_bench_dash_{}", std::process::id());
            let url = format!("{server}/{name}");
            schema::create(&url)
                .await
                .map_err(anyhow::Error::msg)
                .context("PostgreSQL for the bench")?;
            seed::postgres(&url, settings.calls, now).await?;
            (url, Some((server, name)))
        }
        other => bail!("unknown store {other:?}: sqlite or postgres"),
    };
    eprintln!(
        "{store}: seeded {} calls in {:.1} s",
        settings.calls,
        started.elapsed().as_secs_f64()
    );
    let timings = time_pages(&url, dir.path(), settings, now).await;
    if let Some((server, name)) = drop_db {
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
    }
    timings
}

async fn time_pages(
    url: &str,
    dir: &Path,
    settings: &Settings,
    now: i64,
) -> anyhow::Result<Vec<(&'static str, (f64, f64))>> {
    let (_daemon, api) = start_daemon(url, dir).await?;
    let day = |days_ago: i64| field_time(now - days_ago * 86_400_000);
    // A call near the oldest: a search for it walks nearly the whole table.
    let old = 123;
    let pages = [
        Page {
            name: "overview `/`",
            path: "/".into(),
            shows: "deliveries-failed".into(),
        },
        Page {
            name: "deliveries, failed of one workflow",
            path: "/deliveries?status=failed&workflow=customer-support".into(),
            shows: "class=\"status failed\"".into(),
        },
        Page {
            name: "deliveries, failed of one workflow yesterday",
            path: format!(
                "/deliveries?status=failed&workflow=customer-support&since={}&until={}",
                day(2),
                day(1)
            ),
            shows: "class=\"status failed\"".into(),
        },
        Page {
            name: "replay confirmation (count of yesterday's failed)",
            path: format!(
                "/deliveries/replay?workflow=customer-support&since={}&until={}",
                day(2),
                day(1)
            ),
            shows: "id=\"confirm-replay\"".into(),
        },
        Page {
            name: "calls, newest page",
            path: "/calls".into(),
            shows: "rel=\"next\"".into(),
        },
        Page {
            name: "calls by call slug",
            path: format!("/calls?slug=s{old}"),
            shows: format!("href=\"/calls/{old}\""),
        },
        Page {
            name: "calls by phone number (oldest call)",
            path: format!("/calls?phone=%2B1555{old:07}"),
            shows: format!("href=\"/calls/{old}\""),
        },
        Page {
            name: "calls by room name, no match (whole table)",
            path: "/calls?room=no-such-room".into(),
            shows: "No calls match.".into(),
        },
        Page {
            name: "one call's page",
            path: format!("/calls/{old}"),
            shows: "tr class=\"attempt".into(),
        },
    ];
    let http = reqwest::Client::new();
    let mut timings = Vec::new();
    for page in &pages {
        let url = format!("http://{api}{}", page.path);
        let mut samples = Vec::new();
        for n in 0..settings.warmup + settings.timed {
            let start = Instant::now();
            let response = http.get(&url).send().await?;
            let status = response.status();
            let body = response.text().await?;
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            if !status.is_success() || !body.contains(&page.shows) {
                bail!(
                    "{} answered {status} without {:?}: {body}",
                    page.path,
                    page.shows
                );
            }
            if n >= settings.warmup {
                samples.push(ms);
            }
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        eprintln!(
            "{}: p50 {:.1} ms, p95 {:.1} ms",
            page.name,
            at(0.5),
            at(0.95)
        );
        timings.push((page.name, (at(0.5), at(0.95))));
    }
    Ok(timings)
}

/// `2026-12-06T18:00`, a `datetime-local` value (UTC).
fn field_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("a time");
    format!(
        "{:04}-{:02}-{:02}T{:02}%3A{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// The daemon on `store_url`, with the operator API's address.
async fn start_daemon(store_url: &str, dir: &Path) -> anyhow::Result<(Child, String)> {
    let program = PathBuf::from(env!("CARGO_BIN_EXE_voicekit-bridge"));
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:0"

[livekit]
api_key = "devkey"
api_secret = "bench-secret-0123456789abcdef0123456789"

[store]
url = "{store_url}"
retention_days = 3650

[api]
listen = "127.0.0.1:0"

[recordings]
bucket = "bench-recordings"
url_mode = "public"
public_base_url = "https://recordings.bench.invalid"
verify_object = false

[log]
level = "warn"

[[workflows]]
id = {}
slug = "{}"
organization_id = 1
events_webhook_url = "http://127.0.0.1:9/voicekit"

[[workflows]]
id = {}
slug = "{}"
organization_id = 1
events_webhook_url = "http://127.0.0.1:9/sales"
"#,
            seed::WORKFLOWS[0].0,
            seed::WORKFLOWS[0].1,
            seed::WORKFLOWS[1].0,
            seed::WORKFLOWS[1].1,
        ),
    )?;
    let mut child = Command::new(&program)
        .args(["run", "--config"])
        .arg(&config)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("daemon.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let api = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.trim().strip_prefix(OPERATOR_API_LINE) {
                return Ok(addr.trim().to_owned());
            }
        }
        bail!(
            "the daemon exited: {}",
            std::fs::read_to_string(dir.join("daemon.log"))?
        )
    })
    .await
    .context("the daemon did not start within 120 s")??;
    // The daemon prints more; a closed pipe would end it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, api))
}
