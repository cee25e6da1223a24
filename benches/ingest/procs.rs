//! The processes under test: the release daemon (and the bare axum baseline, which is
//! this bench binary re-run in a tiny server mode), started as separate processes on
//! loopback, plus what `/proc` says about their memory and CPU.

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::calls::{API_KEY, API_SECRET, WORKFLOW_SLUG};

/// A child process that printed `<prefix> <ip:port>` on stdout; killed on drop.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
}

impl Proc {
    /// Starts `program args...` in `dir`, stderr to `dir/<name>.log`, and waits up to
    /// 60 s for the ready line.
    pub async fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        dir: &Path,
        prefix: &str,
    ) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(program)
            .args(args)
            .current_dir(dir)
            // No S3 is used (public URLs, no HeadObject); keep the AWS SDK off the network.
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id().context("no pid")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let addr = loop {
            match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if let Some(addr) = line.trim().strip_prefix(prefix) {
                        break addr.trim().parse::<SocketAddr>()?;
                    }
                }
                _ => bail!(
                    "{name} ({}) was not ready within 60 s; its log:\n{}",
                    program.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Proc { child, addr, pid })
    }

    /// Memory as the kernel counts it.
    pub fn memory(&self) -> Memory {
        memory(self.pid)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    /// Peak RSS since the process started (VmHWM).
    pub peak_kib: u64,
}

pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    }
}

/// CPU seconds used during a phase by the process under test, by this bench (load
/// generator and receiver) and by everything else on the machine: other work on the
/// 2 cores makes wall-clock numbers worse, and `others` says how much there was.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuUse {
    pub server: f64,
    /// The store's server, when it is a process of its own (PostgreSQL); 0 for SQLite,
    /// which runs inside the daemon.
    pub store: f64,
    pub bench: f64,
    pub others: f64,
}

impl CpuUse {
    /// Counts `secs` of what was "others" as the store server's.
    pub fn with_store(self, secs: f64) -> CpuUse {
        CpuUse {
            store: secs,
            others: (self.others - secs).max(0.0),
            ..self
        }
    }
}

pub struct CpuMeter {
    pid: u32,
    start: (f64, f64, f64),
}

impl CpuMeter {
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            start: (cpu_secs(pid), own_cpu_secs(), machine_busy_secs()),
        }
    }

    pub fn stop(&self) -> CpuUse {
        let server = cpu_secs(self.pid) - self.start.0;
        let bench = own_cpu_secs() - self.start.1;
        let machine = machine_busy_secs() - self.start.2;
        CpuUse {
            server,
            store: 0.0,
            bench,
            others: (machine - server - bench).max(0.0),
        }
    }
}

fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id())
}

/// Busy (not idle, not I/O wait) CPU seconds of the whole machine since boot.
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle) as f64 / 100.0
}

pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Linux reports in USER_HZ, 100 on every mainstream build.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// RSS every 250 ms from a background task, to show it does not grow.
pub struct RssSampler {
    samples: Arc<Mutex<Vec<(f64, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32, max: Duration) -> RssSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            while t0.elapsed() < max {
                let m = memory(pid);
                out.lock()
                    .unwrap()
                    .push((t0.elapsed().as_secs_f64(), m.rss_kib));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        RssSampler { samples, task }
    }

    /// (seconds since start, RSS KiB) pairs.
    pub fn stop(self) -> Vec<(f64, u64)> {
        self.task.abort();
        self.samples.lock().unwrap().clone()
    }
}

/// The daemon's configuration: loopback, the fresh store at `store_url` (a SQLite file
/// in the phase's directory or a new PostgreSQL database), one workflow whose endpoint
/// is the bench's receiver, public recording URLs (no S3 needed). `delivery` is the body
/// of its `[delivery]` section.
pub fn daemon_config(
    store_url: &str,
    receiver: SocketAddr,
    log_level: &str,
    delivery: &str,
) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"

[livekit]
api_key = "{API_KEY}"
api_secret = "{API_SECRET}"

[store]
url = "{store_url}"

[api]
listen = "127.0.0.1:0"

[recordings]
bucket = "bench-recordings"
url_mode = "public"
public_base_url = "https://recordings.bench.invalid"
verify_object = false

[delivery]
{delivery}

[log]
level = "{log_level}"

[[workflows]]
id = 1
slug = "{WORKFLOW_SLUG}"
organization_id = 1
events_webhook_url = "http://{receiver}/voicekit"
room_pattern = '^VOICEKIT_workflow_(?P<call_slug>[A-Za-z0-9]+)_\d+$'
"#,
    )
}
