//! LiveKit webhook bodies, byte for byte in the style LiveKit sends them.
//!
//! The bridge must accept what LiveKit really emits (see DESIGN.md section 2 and
//! `tests/fixtures/`), so tests build their bodies here rather than by hand: Go
//! protojson field names and order, 64-bit integers as strings, enums by name, zero
//! values omitted, a fresh `EV_...` id per body and `createdAt` in unix seconds.
//! Each builder returns the body as the exact text to sign and post.

use rand::Rng;
use rand::distr::Alphanumeric;

use super::protojson::Obj;

/// A room instance. `sid` is unique per instance; `name` may be reused later.
#[derive(Clone, Debug, Default)]
pub struct Room {
    pub sid: String,
    pub name: String,
    /// Often JSON; omitted from the body when empty.
    pub metadata: String,
    pub creation_time_ms: i64,
}

impl Room {
    pub fn new(sid: &str, name: &str, creation_time_ms: i64) -> Room {
        Room {
            sid: sid.into(),
            name: name.into(),
            metadata: String::new(),
            creation_time_ms,
        }
    }

    pub fn with_metadata(mut self, metadata: &str) -> Room {
        self.metadata = metadata.into();
        self
    }
}

/// A participant. `kind: None` is `STANDARD`, which protojson omits.
#[derive(Clone, Debug, Default)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    /// `"SIP"`, `"AGENT"`, `"EGRESS"`, ...
    pub kind: Option<&'static str>,
    pub joined_at_ms: i64,
    pub attributes: Vec<(String, String)>,
}

impl Participant {
    pub fn standard(sid: &str, identity: &str, joined_at_ms: i64) -> Participant {
        Participant {
            sid: sid.into(),
            identity: identity.into(),
            joined_at_ms,
            ..Default::default()
        }
    }

    pub fn agent(sid: &str, identity: &str, joined_at_ms: i64) -> Participant {
        Participant {
            kind: Some("AGENT"),
            ..Participant::standard(sid, identity, joined_at_ms)
        }
    }

    /// A SIP caller: `phone_number` is `sip.phoneNumber` (the caller on inbound calls),
    /// `trunk_phone_number` is `sip.trunkPhoneNumber` (the number dialled).
    pub fn sip(
        sid: &str,
        phone_number: &str,
        trunk_phone_number: &str,
        joined_at_ms: i64,
    ) -> Participant {
        Participant {
            kind: Some("SIP"),
            ..Participant::standard(sid, &format!("sip_{phone_number}"), joined_at_ms)
        }
        .with_attribute("sip.callID", &format!("SCL_{}", random_suffix()))
        .with_attribute("sip.callStatus", "active")
        .with_attribute("sip.phoneNumber", phone_number)
        .with_attribute("sip.trunkPhoneNumber", trunk_phone_number)
    }

    /// Adds or replaces one attribute.
    pub fn with_attribute(mut self, key: &str, value: &str) -> Participant {
        self.attributes.retain(|(k, _)| k != key);
        self.attributes.push((key.into(), value.into()));
        self
    }
}

/// One uploaded file of an egress (`fileResults[]` and the legacy `file`).
#[derive(Clone, Debug, Default)]
pub struct FileResult {
    /// The object key, without any configured prefix.
    pub filename: String,
    pub duration_ns: i64,
    pub size: i64,
    /// E.g. `https://{bucket}.s3.amazonaws.com/{key}` or `{endpoint}/{bucket}/{key}`.
    pub location: String,
}

/// A fresh LiveKit event id, `EV_` and 12 random alphanumerics.
pub fn new_event_id() -> String {
    format!("EV_{}", random_suffix())
}

pub fn room_started(room: &Room, created_at_s: i64) -> String {
    event("room_started", full_room(room), None, created_at_s)
}

pub fn room_finished(room: &Room, created_at_s: i64) -> String {
    event("room_finished", full_room(room), None, created_at_s)
}

pub fn participant_joined(room: &Room, p: &Participant, created_at_s: i64) -> String {
    let participant = participant(p, "ACTIVE", "");
    event(
        "participant_joined",
        full_room(room),
        Some(("participant", participant)),
        created_at_s,
    )
}

pub fn participant_left(room: &Room, p: &Participant, created_at_s: i64) -> String {
    let participant = participant(p, "DISCONNECTED", "CLIENT_INITIATED");
    event(
        "participant_left",
        full_room(room),
        Some(("participant", participant)),
        created_at_s,
    )
}

pub fn participant_connection_aborted(room: &Room, p: &Participant, created_at_s: i64) -> String {
    let participant = participant(p, "DISCONNECTED", "CONNECTION_TIMEOUT");
    let room = full_room(room);
    event(
        "participant_connection_aborted",
        room,
        Some(("participant", participant)),
        created_at_s,
    )
}

/// `egress_started` for an audio-only room composite egress to S3. Its status is
/// `EGRESS_STARTING`, the zero value, so the body has no `status`.
pub fn egress_started(room: &Room, egress_id: &str, started_at_ns: i64, filename: &str) -> String {
    let file = Obj::new().string("filename", filename);
    let info = egress_head(room, egress_id, "EGRESS_STARTING")
        .int64("startedAt", started_at_ns)
        .int64("updatedAt", started_at_ns)
        .object("roomComposite", room_composite(room))
        .list("fileResults", vec![file.clone()])
        .object("file", file);
    event(
        "egress_started",
        short_room(room),
        Some(("egressInfo", info)),
        started_at_ns / NS,
    )
}

/// `egress_ended` with `status` such as `EGRESS_COMPLETE`, `EGRESS_FAILED`,
/// `EGRESS_ABORTED` or `EGRESS_LIMIT_REACHED`, and the uploaded file if any.
pub fn egress_ended(
    room: &Room,
    egress_id: &str,
    status: &str,
    started_at_ns: i64,
    ended_at_ns: i64,
    file: Option<&FileResult>,
) -> String {
    let updated_at_ns = ended_at_ns + 100_000_000;
    let file = file.map(|f| {
        Obj::new()
            .string("filename", &f.filename)
            .int64("startedAt", started_at_ns)
            .int64("endedAt", ended_at_ns)
            .int64("duration", f.duration_ns)
            .int64("size", f.size)
            .string("location", &f.location)
    });
    let (details, error) = match status {
        "EGRESS_FAILED" => ("", "pipeline failed"),
        "EGRESS_ABORTED" => ("", "egress aborted"),
        "EGRESS_LIMIT_REACHED" => ("End reason: Limit reached", ""),
        _ => ("End reason: Source closed", ""),
    };
    let mut info = egress_head(room, egress_id, status)
        .int64("startedAt", started_at_ns)
        .int64("endedAt", ended_at_ns)
        .int64("updatedAt", updated_at_ns)
        .object("roomComposite", room_composite(room))
        .list("fileResults", file.iter().cloned().collect())
        .string("details", details)
        .string("error", error);
    if let Some(file) = file {
        info = info.object("file", file);
    }
    event(
        "egress_ended",
        short_room(room),
        Some(("egressInfo", info)),
        updated_at_ns / NS,
    )
}

/// `body` with its event id replaced by `id` (to post one event under a chosen id).
pub fn with_id(body: &str, id: &str) -> String {
    let old = format!(
        "\"id\":{}",
        serde_json::to_string(&event_id(body)).expect("id")
    );
    assert_eq!(
        body.matches(&old).count(),
        1,
        "event id must occur once in {body}"
    );
    body.replacen(
        &old,
        &format!("\"id\":{}", serde_json::to_string(id).expect("id")),
        1,
    )
}

/// The `id` of a webhook body.
pub fn event_id(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).expect("webhook body is JSON");
    value["id"]
        .as_str()
        .expect("webhook body has a string id")
        .to_owned()
}

/// `body` with a space after every comma outside strings, as Go's protojson
/// randomly emits. The JSON value is unchanged, the bytes (and hash) are not.
pub fn with_extra_spaces(body: &str) -> String {
    let mut out = String::with_capacity(body.len() * 11 / 10);
    let (mut in_string, mut escaped) = (false, false);
    for c in body.chars() {
        out.push(c);
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ',' {
            out.push(' ');
        }
    }
    out
}

/// The text of `tests/fixtures/{name}.json`, byte for byte (trailing newline included).
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read fixture {path}: {e}"))
}

const NS: i64 = 1_000_000_000;

fn event(name: &str, room: Obj, detail: Option<(&str, Obj)>, created_at_s: i64) -> String {
    let mut body = Obj::new().string("event", name).object("room", room);
    if let Some((key, value)) = detail {
        body = body.object(key, value);
    }
    body.string("id", &new_event_id())
        .int64("createdAt", created_at_s)
        .build()
}

/// The room as room and participant events carry it.
fn full_room(room: &Room) -> Obj {
    let codecs = ["audio/opus", "audio/red"].map(|mime| Obj::new().string("mime", mime));
    short_room(room)
        .int32("emptyTimeout", 300)
        .int32("departureTimeout", 20)
        .int64("creationTime", room.creation_time_ms / 1000)
        .int64("creationTimeMs", room.creation_time_ms)
        .list("enabledCodecs", codecs.into())
        .string("metadata", &room.metadata)
}

/// The room as egress events carry it: only `sid` and `name`.
fn short_room(room: &Room) -> Obj {
    Obj::new()
        .string("sid", &room.sid)
        .string("name", &room.name)
}

fn participant(p: &Participant, state: &str, disconnect_reason: &str) -> Obj {
    Obj::new()
        .string("sid", &p.sid)
        .string("identity", &p.identity)
        .enumeration("state", state, "JOINING")
        .int64("joinedAt", p.joined_at_ms / 1000)
        .int64("joinedAtMs", p.joined_at_ms)
        .enumeration("kind", p.kind.unwrap_or("STANDARD"), "STANDARD")
        .map("attributes", &p.attributes)
        .enumeration("disconnectReason", disconnect_reason, "")
}

fn egress_head(room: &Room, egress_id: &str, status: &str) -> Obj {
    Obj::new()
        .string("egressId", egress_id)
        .string("roomId", &room.sid)
        .string("roomName", &room.name)
        .enumeration(
            "sourceType",
            "EGRESS_SOURCE_TYPE_SDK",
            "EGRESS_SOURCE_TYPE_WEB",
        )
        .enumeration("status", status, "EGRESS_STARTING")
}

/// The egress request, with credentials redacted as LiveKit sends it.
fn room_composite(room: &Room) -> Obj {
    let s3 = Obj::new()
        .string("accessKey", "{access_key}")
        .string("secret", "{secret}")
        .string("region", "us-east-1")
        .string("bucket", "voicekit-recordings");
    let output = Obj::new()
        .enumeration("fileType", "OGG", "DEFAULT_FILETYPE")
        .string("filepath", "recordings/{room_name}/{time}")
        .object("s3", s3);
    Obj::new()
        .string("roomName", &room.name)
        .boolean("audioOnly", true)
        .list("fileOutputs", vec![output])
}

fn random_suffix() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(char::from)
        .collect()
}

/// A fresh instance of a room the test config's first workflow (`room_pattern`) claims.
pub fn mapped_room() -> Room {
    let sid = new_event_id().replacen("EV_", "RM_", 1);
    Room::new(&sid, "VOICEKIT_workflow_abc12345_8453", 1_761_234_567_123)
}

/// The agent joining `room`: on a mapped room this alone causes `call_started`.
pub fn agent_joined(room: &Room) -> String {
    let agent = Participant::agent("PA_agent", "agent-1", 1_761_234_569_000);
    participant_joined(room, &agent, 1_761_234_569)
}
