//! The load generator: keep-alive HTTP/1.1 connections, one task each, posting
//! pre-signed webhooks either as fast as answers come (closed loop, for throughput) or
//! at a fixed rate (paced, for end-to-end latency).
//!
//! It uses hyper's connection API directly, the cheapest client there is, because it
//! shares the 2 cores with the daemon: every cycle it spends is one the daemon lacks.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, StatusCode,
    client::conn::http1::{self, SendRequest},
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::Barrier};

use crate::calls::{Emits, Signed};

/// Where to post.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
}

/// How each request ended.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// 200 `{"status":"accepted"}`: a distinct event, durably committed.
    pub accepted: u64,
    pub duplicate: u64,
    pub ignored: u64,
    /// Any other status, or a transport error.
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.accepted += o.accepted;
        self.duplicate += o.duplicate;
        self.ignored += o.ignored;
        self.failed += o.failed;
    }
}

/// What one load phase measured.
pub struct Report {
    pub counts: Counts,
    pub elapsed: Duration,
    /// Response latencies in microseconds, unsorted.
    pub latencies_us: Vec<u32>,
    /// Connections that ran out of pre-signed webhooks before the deadline.
    pub exhausted: usize,
    /// When each marked webhook was posted (paced runs only).
    pub posted: Vec<(Emits, String, Instant)>,
    pub first_error: Option<String>,
}

impl Report {
    pub fn accepted_per_sec(&self) -> f64 {
        self.counts.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    host: HeaderValue,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// Posts one webhook and reads the whole answer.
    async fn post(&mut self, path: &str, w: &Signed) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let request = Request::post(path)
            .header(HOST, self.host.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/webhook+json"),
            )
            .header(AUTHORIZATION, w.token.clone())
            .body(Full::new(w.body.clone()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Posts one webhook on a connection of its own; its answer's status.
pub async fn post_one(target: &Target, w: &Signed) -> anyhow::Result<StatusCode> {
    let mut conn = Conn::open(target.addr).await?;
    Ok(conn.post(&target.path, w).await?.0)
}

/// How the daemon's answer counts.
fn classify(counts: &mut Counts, answer: &anyhow::Result<(StatusCode, Bytes)>) {
    let contains = |b: &Bytes, needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
    match answer {
        Ok((StatusCode::OK, b)) if contains(b, b"\"accepted\"") => counts.accepted += 1,
        Ok((StatusCode::OK, b)) if contains(b, b"\"duplicate\"") => counts.duplicate += 1,
        Ok((StatusCode::OK, _)) => counts.ignored += 1,
        _ => counts.failed += 1,
    }
}

fn describe(answer: &anyhow::Result<(StatusCode, Bytes)>) -> String {
    match answer {
        Ok((status, body)) => format!("HTTP {status}: {}", String::from_utf8_lossy(body)),
        Err(e) => format!("{e:#}"),
    }
}

/// How requests are sent.
#[derive(Clone, Copy)]
pub enum Mode {
    /// As fast as answers come, for `duration`; `cycle` reuses the webhooks (baseline).
    Closed { duration: Duration, cycle: bool },
    /// `rate` webhooks/s over all connections, for `duration`.
    Paced { rate: f64, duration: Duration },
}

struct TaskResult {
    counts: Counts,
    latencies_us: Vec<u32>,
    exhausted: bool,
    posted: Vec<(Emits, String, Instant)>,
    ended: Instant,
    first_error: Option<String>,
}

/// Runs one phase: one connection per queue, all starting together.
pub async fn run(target: &Target, queues: Vec<Vec<Signed>>, mode: Mode) -> anyhow::Result<Report> {
    let n = queues.len();
    let barrier = Arc::new(Barrier::new(n + 1));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::with_capacity(n);
    for (j, queue) in queues.into_iter().enumerate() {
        let mut conn = Conn::open(target.addr).await?;
        let (barrier, start, path) = (barrier.clone(), start.clone(), target.path.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t0 = *start.get().expect("start is set before the barrier opens");
            let mut r = TaskResult {
                counts: Counts::default(),
                latencies_us: Vec::with_capacity(queue.len().min(1 << 20)),
                exhausted: false,
                posted: Vec::new(),
                ended: t0,
                first_error: None,
            };
            let (duration, cycle) = match mode {
                Mode::Closed { duration, cycle } => (duration, cycle),
                Mode::Paced { duration, .. } => (duration, false),
            };
            let deadline = t0 + duration;
            let mut i = 0usize;
            loop {
                if i == queue.len() {
                    if !cycle || queue.is_empty() {
                        r.exhausted = Instant::now() < deadline;
                        break;
                    }
                    i = 0;
                }
                if let Mode::Paced { rate, .. } = mode {
                    let at = t0 + Duration::from_secs_f64((i * n + j) as f64 / rate);
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let w = &queue[i];
                if let (Mode::Paced { .. }, Some((kind, key))) = (mode, &w.mark) {
                    r.posted.push((*kind, key.clone(), now));
                }
                let answer = conn.post(&path, w).await;
                r.latencies_us
                    .push(now.elapsed().as_micros().min(u32::MAX as u128) as u32);
                classify(&mut r.counts, &answer);
                let failed = !matches!(answer, Ok((StatusCode::OK, _)));
                if failed && r.first_error.is_none() {
                    r.first_error = Some(describe(&answer));
                }
                if answer.is_err() {
                    // The connection is gone: open another (bounded by the deadline).
                    match Conn::open(conn.addr).await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    }
                }
                i += 1;
            }
            r.ended = Instant::now();
            r
        }));
    }
    start.set(Instant::now()).expect("set once");
    barrier.wait().await;
    let t0 = *start.get().expect("set");

    let mut report = Report {
        counts: Counts::default(),
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        exhausted: 0,
        posted: Vec::new(),
        first_error: None,
    };
    for task in tasks {
        let r = task.await?;
        report.counts.add(&r.counts);
        report.latencies_us.extend(r.latencies_us);
        report.exhausted += r.exhausted as usize;
        report.posted.extend(r.posted);
        report.elapsed = report.elapsed.max(r.ended - t0);
        if report.first_error.is_none() {
            report.first_error = r.first_error;
        }
    }
    Ok(report)
}

/// p50, p90, p99 and max of microsecond samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: usize,
}

pub fn percentiles(mut us: Vec<u32>) -> Percentiles {
    if us.is_empty() {
        return Percentiles::default();
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Percentiles {
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        samples: us.len(),
    }
}
