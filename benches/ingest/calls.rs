//! Realistic LiveKit webhooks for the benchmark, built and signed before any timed phase.
//!
//! Bodies follow the exact protojson style of LiveKit's server (the examples under
//! `shared/spec/livekit-examples`): full room objects, SIP and agent participants with
//! their attributes, egress infos with the redacted request and file results. Every call
//! has its own room sid, room name, phone number and event ids, so nothing the daemon
//! receives is a duplicate. Signing happens here, up front, so its cost is not charged
//! to the daemon.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use hyper::header::HeaderValue;
use livekit_api::access_token::AccessToken;
use sha2::{Digest, Sha256};

pub const API_KEY: &str = "benchkey";
pub const API_SECRET: &str = "bench-secret-that-is-long-enough-0123456789";
/// The workflow every bench room belongs to (by room name and by metadata).
pub const WORKFLOW_SLUG: &str = "bench";

/// One step of a call, in the order LiveKit sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    RoomStarted,
    SipJoined,
    AgentJoined,
    EgressStarted,
    SipLeft,
    AgentLeft,
    RoomFinished,
    EgressEnded,
}

/// A whole call: 8 webhooks, 3 VoiceKit events.
pub const FULL_CALL: &[Step] = &[
    Step::RoomStarted,
    Step::SipJoined,
    Step::AgentJoined,
    Step::EgressStarted,
    Step::SipLeft,
    Step::AgentLeft,
    Step::RoomFinished,
    Step::EgressEnded,
];

/// A call that is still going on: room up, caller and agent in it.
pub const CALL_START: &[Step] = &[Step::RoomStarted, Step::SipJoined, Step::AgentJoined];

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

/// One simulated call; `run` keeps ids of different phases apart.
struct Call<'a> {
    run: &'a str,
    index: u64,
    t0: i64,
}

impl Call<'_> {
    fn sid(&self) -> String {
        format!("RM_{}{:09}", self.run, self.index)
    }
    fn name(&self) -> String {
        format!(
            "VOICEKIT_workflow_{}{:x}_{}",
            self.run,
            self.index,
            1000 + self.index % 9000
        )
    }
    fn phone(&self) -> String {
        phone(self.run, self.index)
    }

    fn room(&self, participants: u32, ticks: u32) -> String {
        let t0 = self.t0;
        format!(
            r#"{{"sid":"{sid}","name":"{name}","emptyTimeout":300,"departureTimeout":20,"creationTime":"{t0}","creationTimeMs":"{t0}123","turnPassword":"x9W3s0Zq...redacted","enabledCodecs":[{{"mime":"audio/PCMU"}},{{"mime":"audio/PCMA"}},{{"mime":"audio/opus"}},{{"mime":"audio/red"}}],"metadata":"{{\"workflow_slug\":\"{WORKFLOW_SLUG}\",\"campaign\":\"inbound-support\",\"locale\":\"en-US\",\"agent\":{{\"name\":\"voicekit-agent\",\"voice\":\"alloy\",\"llm\":\"gpt-4o-mini\",\"stt\":\"deepgram-nova-3\"}},\"customer_ref\":\"CUST-{index:08}\",\"tags\":[\"support\",\"inbound\",\"tier-2\"]}}","numParticipants":{participants},"version":{{"unixMicro":"{t0}123456","ticks":{ticks}}}}}"#,
            sid = self.sid(),
            name = self.name(),
            index = self.index,
        )
    }

    fn sip(&self, state: &str) -> String {
        let (t, phone, run, i) = (self.t0 + 1, self.phone(), self.run, self.index);
        format!(
            r#"{{"sid":"PA_s{run}{i:09}","identity":"sip_{phone}","state":"{state}","joinedAt":"{t}","joinedAtMs":"{t}200","name":"Phone {phone}","version":2,"permission":{{"canSubscribe":true,"canPublish":true,"canPublishData":true,"canUpdateMetadata":true}},"kind":"SIP","attributes":{{"sip.callID":"SCL_{run}{i:09}","sip.callIDFull":"a84b4c76e66710{i}@pbx.provider.example","sip.callStatus":"active","sip.callTag":"LK_{run}{i}","sip.hostname":"pbx.provider.example","sip.phoneNumber":"{phone}","sip.ruleID":"SDR_Kq2wE9rT5yUi","sip.trunkID":"ST_Zx7cV4bN1mAs","sip.trunkPhoneNumber":"+15557650002"}}}}"#
        )
    }

    fn agent(&self, state: &str) -> String {
        let (t, run, i) = (self.t0 + 2, self.run, self.index);
        format!(
            r#"{{"sid":"PA_a{run}{i:09}","identity":"agent-AJ_{run}{i:09}","state":"{state}","joinedAt":"{t}","joinedAtMs":"{t}000","name":"voicekit-agent","version":3,"permission":{{"canSubscribe":true,"canPublish":true,"canPublishData":true,"canUpdateMetadata":true,"agent":true}},"kind":"AGENT","attributes":{{"lk.agent.state":"listening","lk.agent.name":"voicekit-agent","lk.agent.job_id":"AJ_{run}{i:09}"}}}}"#
        )
    }

    fn egress(&self, ended: bool) -> String {
        let (t0, run, i, name, sid) = (self.t0, self.run, self.index, self.name(), self.sid());
        let key = format!("recordings/{name}/EG_{run}{i:09}.ogg");
        let file = if ended {
            format!(
                r#"{{"filename":"{key}","startedAt":"{s}100000000","endedAt":"{e}987654321","duration":"92887654321","size":"1442477","location":"https://bench-recordings.s3.amazonaws.com/{key}"}}"#,
                s = t0 + 3,
                e = t0 + 96
            )
        } else {
            format!(r#"{{"filename":"{key}"}}"#)
        };
        let end = if ended {
            format!(
                r#""status":"EGRESS_COMPLETE","endedAt":"{}987654321","details":"End reason: Source closed","#,
                t0 + 97
            )
        } else {
            String::new()
        };
        format!(
            r#"{{"egressId":"EG_{run}{i:09}","roomId":"{sid}","roomName":"{name}","sourceType":"EGRESS_SOURCE_TYPE_SDK",{end}"startedAt":"{s}012345678","updatedAt":"{s}012345678","roomComposite":{{"roomName":"{name}","audioOnly":true,"fileOutputs":[{{"fileType":"OGG","filepath":"recordings/{{room_name}}/{{time}}","s3":{{"accessKey":"{{access_key}}","secret":"{{secret}}","region":"us-east-1","bucket":"bench-recordings"}}}}]}},"fileResults":[{file}],"file":{file}}}"#,
            s = t0 + 3
        )
    }

    fn body(&self, step: Step) -> String {
        let (sid, name, t0) = (self.sid(), self.name(), self.t0);
        let small_room = format!(r#"{{"sid":"{sid}","name":"{name}"}}"#);
        let (event, room, extra, at) = match step {
            Step::RoomStarted => ("room_started", self.room(0, 0), String::new(), t0),
            Step::SipJoined => (
                "participant_joined",
                self.room(1, 1),
                format!(r#","participant":{}"#, self.sip("ACTIVE")),
                t0 + 1,
            ),
            Step::AgentJoined => (
                "participant_joined",
                self.room(2, 2),
                format!(r#","participant":{}"#, self.agent("ACTIVE")),
                t0 + 2,
            ),
            Step::EgressStarted => (
                "egress_started",
                small_room,
                format!(r#","egressInfo":{}"#, self.egress(false)),
                t0 + 3,
            ),
            Step::SipLeft => (
                "participant_left",
                self.room(1, 3),
                format!(r#","participant":{}"#, self.sip("DISCONNECTED")),
                t0 + 94,
            ),
            Step::AgentLeft => (
                "participant_left",
                self.room(0, 4),
                format!(r#","participant":{}"#, self.agent("DISCONNECTED")),
                t0 + 95,
            ),
            Step::RoomFinished => ("room_finished", self.room(0, 5), String::new(), t0 + 96),
            Step::EgressEnded => (
                "egress_ended",
                small_room,
                format!(r#","egressInfo":{}"#, self.egress(true)),
                t0 + 97,
            ),
        };
        format!(
            r#"{{"event":"{event}","room":{room}{extra},"id":"EV_{}{:09}_{}","createdAt":"{at}"}}"#,
            self.run, self.index, step as u8
        )
    }

    fn mark(&self, step: Step) -> Option<(Emits, String)> {
        match step {
            Step::AgentJoined => Some((Emits::Started, self.phone())),
            Step::RoomFinished => Some((Emits::Ended, self.phone())),
            Step::EgressEnded => Some((Emits::Finalized, self.name())),
            _ => None,
        }
    }
}

/// The caller's number of call `index` of `run`: unique, so arrivals match posts.
pub fn phone(run: &str, index: u64) -> String {
    let salt = run.bytes().fold(0u64, |a, b| a * 31 + b as u64) % 90;
    format!("+1{:03}{:07}", 200 + salt, index)
}

/// Signs `body` exactly as LiveKit does: HS256, `iss` = key, `sha256` = base64 digest.
pub fn sign(body: &[u8], ttl: Duration) -> HeaderValue {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    let jwt = AccessToken::with_api_key(API_KEY, API_SECRET)
        .with_ttl(ttl)
        .with_sha256(&hash)
        .to_jwt()
        .expect("signing a bench webhook");
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
    let t0 = voicekit_bridge::store::now_ms() / 1000 - 120;
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
                        let call = Call { run, index, t0 };
                        for &step in steps {
                            let body = call.body(step);
                            queue.push(Signed {
                                token: sign(body.as_bytes(), ttl),
                                body: Bytes::from(body),
                                mark: call.mark(step),
                            });
                        }
                    }
                }
            });
        }
    });
    out
}
