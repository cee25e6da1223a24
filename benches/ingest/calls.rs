//! Realistic LiveKit webhooks for the benchmark, built and signed before any timed phase.
//!
//! Bodies and tokens come from the crate's testkit (`voicekit_bridge::testkit`), in the
//! exact protojson style of LiveKit's server: whole calls with full room objects, SIP and
//! agent participants with their attributes, egress infos with the redacted request and
//! file results. Every call has its own room sid, room name, phone number and event ids,
//! so nothing the daemon receives is a duplicate. Signing happens here, up front, so its
//! cost is not charged to the daemon.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use voicekit_bridge::testkit::call::{Call, Step};
use voicekit_bridge::testkit::token;
use voicekit_bridge::testkit::webhook::Room;

pub const API_KEY: &str = "benchkey";
pub const API_SECRET: &str = "bench-secret-that-is-long-enough-0123456789";
/// The workflow every bench room belongs to (by room name and by metadata).
pub const WORKFLOW_SLUG: &str = "bench";

/// Which VoiceKit event a webhook causes, keyed so the receiver can match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Emits {
    Started,
    Ended,
    Finalized,
}

/// A signed webhook ready to post.
#[derive(Clone)]
pub struct Signed {
    pub body: Bytes,
    pub token: HeaderValue,
    /// The VoiceKit event it causes and its match key (phone number or room name).
    pub mark: Option<(Emits, String)>,
}

/// Call `index` of `run` (which keeps ids of different phases apart), its room created
/// at `t0` seconds.
fn call(run: &str, index: u64, t0: i64) -> Call {
    let metadata = format!(
        r#"{{"workflow_slug":"{WORKFLOW_SLUG}","campaign":"inbound-support","locale":"en-US","agent":{{"name":"voicekit-agent","voice":"alloy","llm":"gpt-4o-mini","stt":"deepgram-nova-3"}},"customer_ref":"CUST-{index:08}","tags":["support","inbound","tier-2"]}}"#
    );
    let room = Room::new(
        &format!("RM_{run}{index:09}"),
        &format!("VOICEKIT_workflow_{run}{index:x}_{}", 1000 + index % 9000),
        t0 * 1000 + 123,
    )
    .with_metadata(&metadata);
    Call::new(
        room,
        &phone(run, index),
        "+15557650002",
        "https://bench-recordings.s3.amazonaws.com",
    )
}

/// The VoiceKit event `step` of `call` causes and its match key.
fn mark(call: &Call, step: Step, phone: &str) -> Option<(Emits, String)> {
    match step {
        Step::AgentJoined => Some((Emits::Started, phone.to_owned())),
        Step::RoomFinished => Some((Emits::Ended, phone.to_owned())),
        Step::EgressEnded => Some((Emits::Finalized, call.room.name.clone())),
        _ => None,
    }
}

/// The caller's number of call `index` of `run`: unique, so arrivals match posts.
pub fn phone(run: &str, index: u64) -> String {
    let salt = run.bytes().fold(0u64, |a, b| a * 31 + b as u64) % 90;
    format!("+1{:03}{:07}", 200 + salt, index)
}

/// Signs `body` exactly as LiveKit does, valid for `ttl`.
pub fn sign(body: &[u8], ttl: Duration) -> HeaderValue {
    let jwt =
        token::sign_with_ttl(API_KEY, API_SECRET, body, ttl).expect("signing a bench webhook");
    HeaderValue::from_str(&jwt).expect("a JWT is a valid header value")
}

/// Builds `calls` calls of `steps` for each of `connections` queues, in parallel.
/// Queue `j` holds calls `j, j + connections, ...`, each call's steps in order, so one
/// connection plays whole calls in order as LiveKit's per-room queue does.
pub fn queues(
    run: &str,
    calls: u64,
    connections: usize,
    steps: &[Step],
    ttl: Duration,
) -> Vec<Vec<Signed>> {
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
        - 120;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut out: Vec<Vec<Signed>> = (0..connections).map(|_| Vec::new()).collect();
    std::thread::scope(|s| {
        for (t, chunk) in out.chunks_mut(connections.div_ceil(threads)).enumerate() {
            let first = t * connections.div_ceil(threads);
            s.spawn(move || {
                for (k, queue) in chunk.iter_mut().enumerate() {
                    let j = (first + k) as u64;
                    let mine = (j..calls).step_by(connections);
                    queue.reserve(
                        (calls.saturating_sub(j) as usize).div_ceil(connections) * steps.len(),
                    );
                    for index in mine {
                        let call = call(run, index, t0);
                        let phone = phone(run, index);
                        for &step in steps {
                            let body = call.webhook(step);
                            queue.push(Signed {
                                token: sign(body.as_bytes(), ttl),
                                body: Bytes::from(body),
                                mark: mark(&call, step, &phone),
                            });
                        }
                    }
                }
            });
        }
    });
    out
}
