//! LiveKit as it really behaves: the surprises its trackers report, and times at the
//! edges of their types, each with the outcome the machine gives them.

use serde_json::{Value, json};

use super::{
    invariants,
    machine::{CallState, Emitted, Phase},
    voicekit::{EventKind, VoiceKitEvent},
};
use crate::livekit::event::WebhookEvent;

const ROOM: &str = "RM_kfWfYGzHvVYy";
const NAME: &str = "VOICEKIT_workflow_abc12345_8453";
const CREATED_S: i64 = 1_761_234_567;
const PHONE: &str = "+15551230001";

fn call() -> CallState {
    let workflow = crate::testkit::workflow::sample_workflow();
    CallState::new(1, "abc12345".into(), &workflow, ROOM, NAME)
}

fn room() -> Value {
    json!({"sid": ROOM, "name": NAME, "creationTime": CREATED_S.to_string(),
           "creationTimeMs": (CREATED_S * 1000 + 123).to_string()})
}

/// An event received at `received_s` (unix seconds), parsed as the daemon parses it.
fn at(received_s: i64, body: Value) -> WebhookEvent {
    WebhookEvent::parse_at(body.to_string().as_bytes(), received_s * 1000).unwrap()
}

fn participant(event: &str, sid: &str, kind: &str, at_s: i64) -> WebhookEvent {
    let mut p = json!({"sid": sid, "identity": sid, "kind": kind,
                       "joinedAt": (CREATED_S + 1).to_string()});
    if kind == "SIP" {
        p["attributes"] = json!({"sip.phoneNumber": PHONE, "sip.trunkPhoneNumber": "+15557650002"});
    }
    at(
        at_s,
        json!({"event": event, "room": room(), "participant": p, "createdAt": at_s.to_string()}),
    )
}

fn room_event(event: &str, at_s: i64) -> WebhookEvent {
    at(
        at_s,
        json!({"event": event, "room": room(), "createdAt": at_s.to_string()}),
    )
}

fn egress_ended(at_s: i64, info: Value) -> WebhookEvent {
    let mut egress = json!({"egressId": "EG_1", "roomId": ROOM, "roomName": NAME});
    egress
        .as_object_mut()
        .unwrap()
        .extend(info.as_object().unwrap().clone());
    at(
        at_s,
        json!({"event": "egress_ended", "room": {"sid": ROOM, "name": NAME},
               "egressInfo": egress, "createdAt": at_s.to_string()}),
    )
}

/// Applies the events in order; the final state and everything emitted, which must
/// keep the machine's invariants.
fn run(events: &[WebhookEvent]) -> (CallState, Vec<Emitted>) {
    let (state, out) = call().apply_all(events);
    invariants::check(&out).unwrap();
    (state, out)
}

fn kinds(out: &[Emitted]) -> Vec<EventKind> {
    out.iter().map(|e| e.event.kind()).collect()
}

fn ended(out: &[Emitted]) -> (i64, &super::voicekit::CallEndedData) {
    out.iter()
        .find_map(|e| match &e.event {
            VoiceKitEvent::CallEnded { at_ms, data } => Some((*at_ms, data)),
            _ => None,
        })
        .expect("call_ended emitted")
}

fn finalized(out: &[Emitted]) -> &Emitted {
    out.iter()
        .find(|e| e.event.kind() == EventKind::CallFinalized)
        .expect("call_finalized emitted")
}

fn egress_info(e: &Emitted) -> &super::voicekit::EgressInfoData {
    match &e.event {
        VoiceKitEvent::CallFinalized { data, .. } => &data.egress_info,
        _ => panic!("not call_finalized"),
    }
}

/// livekit#1130: the caller's `participant_joined` is lost, its `participant_left`
/// comes. The caller still counts as having been in the room, and its number (which the
/// left event carries) reaches `call_ended`.
#[test]
fn a_caller_whose_join_was_lost_gets_its_phone_number_from_participant_left() {
    let (_, out) = run(&[
        participant("participant_joined", "PA_agent", "AGENT", CREATED_S + 2),
        participant("participant_left", "PA_sip", "SIP", CREATED_S + 150),
        participant("participant_left", "PA_agent", "AGENT", CREATED_S + 151),
        room_event("room_finished", CREATED_S + 170),
    ]);
    assert_eq!(kinds(&out), [EventKind::CallStarted, EventKind::CallEnded]);
    let (_, data) = ended(&out);
    assert_eq!(data.phone_number.as_deref(), Some(PHONE));
    assert_eq!(
        data.duration_seconds, 150,
        "from the agent's join (+1 s) to +151 s"
    );
}

/// A SIP participant whose number is known already keeps the first one.
#[test]
fn the_first_sip_number_stays() {
    let other = at(
        CREATED_S + 60,
        json!({"event": "participant_left", "room": room(), "createdAt": (CREATED_S + 60).to_string(),
               "participant": {"sid": "PA_sip2", "kind": "SIP",
                               "attributes": {"sip.phoneNumber": "+15550000000"}}}),
    );
    let (_, out) = run(&[
        participant("participant_joined", "PA_sip", "SIP", CREATED_S + 1),
        participant("participant_joined", "PA_agent", "AGENT", CREATED_S + 2),
        other,
        room_event("room_finished", CREATED_S + 90),
    ]);
    assert_eq!(ended(&out).1.phone_number.as_deref(), Some(PHONE));
}

/// livekit#4227: `participant_connection_aborted` comes instead of a join. The
/// participant was never in the room, so it neither holds the call open nor moves its
/// end; its number is still the call's.
#[test]
fn connection_aborted_instead_of_a_join_does_not_move_the_end() {
    let (state, out) = run(&[
        participant("participant_joined", "PA_agent", "AGENT", CREATED_S + 2),
        participant("participant_left", "PA_agent", "AGENT", CREATED_S + 62),
        participant(
            "participant_connection_aborted",
            "PA_sip",
            "SIP",
            CREATED_S + 80,
        ),
        room_event("room_finished", CREATED_S + 100),
    ]);
    let (end_ms, data) = ended(&out);
    assert_eq!(end_ms, (CREATED_S + 62) * 1000);
    assert_eq!((data.duration_seconds, data.duration_minutes), (61, 2));
    assert_eq!(data.phone_number.as_deref(), Some(PHONE));
    assert!(state.present.is_empty());
}

/// An aborted participant that had joined did leave: its departure counts.
#[test]
fn connection_aborted_after_a_join_is_a_departure() {
    let (_, out) = run(&[
        participant("participant_joined", "PA_agent", "AGENT", CREATED_S + 2),
        participant(
            "participant_connection_aborted",
            "PA_agent",
            "AGENT",
            CREATED_S + 32,
        ),
        room_event("room_finished", CREATED_S + 100),
    ]);
    assert_eq!(ended(&out).0, (CREATED_S + 32) * 1000);
}

/// livekit#2945: `room_started` after `room_finished` for the same room instance. The
/// call is over: nothing starts again.
#[test]
fn room_started_after_room_finished_changes_nothing() {
    let (state, out) = run(&[
        room_event("room_started", CREATED_S),
        participant("participant_joined", "PA_agent", "AGENT", CREATED_S + 2),
        room_event("room_finished", CREATED_S + 40),
        room_event("room_started", CREATED_S + 41),
        participant("participant_joined", "PA_agent2", "AGENT", CREATED_S + 42),
        room_event("room_finished", CREATED_S + 60),
    ]);
    assert_eq!(kinds(&out), [EventKind::CallStarted, EventKind::CallEnded]);
    assert_eq!(ended(&out).0, (CREATED_S + 40) * 1000);
    assert_eq!(state.phase(), Phase::Ended);
}

/// node-sdks#625: `egress_ended` with an empty `fileResults` and the legacy `file` set.
#[test]
fn the_legacy_file_stands_in_for_empty_file_results() {
    let (_, out) = run(&[
        room_event("room_finished", CREATED_S + 10),
        egress_ended(
            CREATED_S + 12,
            json!({"status": "EGRESS_COMPLETE", "startedAt": "1761234569012345678",
                   "endedAt": "1761234577000000000", "fileResults": [],
                   "file": {"filename": "rec/a.ogg", "duration": "7987654322", "size": "4242",
                            "location": "https://voicekit-recordings.s3.amazonaws.com/rec/a.ogg"}}),
        ),
    ]);
    let fin = finalized(&out);
    assert_eq!(fin.recording.as_ref().unwrap().filename, "rec/a.ogg");
    let info = egress_info(fin);
    assert_eq!(
        (
            info.duration.as_str(),
            info.file_size.as_str(),
            info.file_type.as_deref()
        ),
        ("7987654322", "4242", Some("ogg"))
    );
}

/// egress#809: no `endedAt` and a file duration of -1. `ended_at` becomes the file's end
/// (else the egress's last update, else the event's time) and the duration is measured
/// between the times known, never "0" and "-1".
#[test]
fn a_missing_ended_at_and_a_negative_duration_are_derived_from_the_times_known() {
    let (_, out) = run(&[
        room_event("room_finished", CREATED_S + 10),
        egress_ended(
            CREATED_S + 12,
            json!({"status": "EGRESS_COMPLETE", "startedAt": "1761234569000000000",
                   "updatedAt": "1761234579500000000",
                   "fileResults": [{"filename": "rec/a.ogg", "duration": "-1", "size": "99",
                                    "location": "https://b.s3.amazonaws.com/rec/a.ogg"}]}),
        ),
    ]);
    let fin = finalized(&out);
    let info = egress_info(fin);
    assert_eq!(info.started_at, "1761234569000000000");
    assert_eq!(info.ended_at, "1761234579500000000", "the last update");
    assert_eq!(info.duration, "10500000000");
    let VoiceKitEvent::CallFinalized { at_ms, .. } = fin.event else {
        panic!()
    };
    assert_eq!(at_ms, 1_761_234_579_500);

    // With the file's own times, those win.
    let (_, out) = run(&[
        room_event("room_finished", CREATED_S + 10),
        egress_ended(
            CREATED_S + 12,
            json!({"status": "EGRESS_COMPLETE", "startedAt": "1761234569000000000",
                   "fileResults": [{"filename": "rec/a.ogg", "duration": "-1",
                                    "startedAt": "1761234570000000000",
                                    "endedAt": "1761234575000000000"}]}),
        ),
    ]);
    let info = egress_info(finalized(&out));
    assert_eq!(info.ended_at, "1761234575000000000");
    assert_eq!(info.duration, "5000000000");

    // With no time at all but the event's, ended_at is the event's time.
    let (_, out) = run(&[
        room_event("room_finished", CREATED_S + 10),
        egress_ended(
            CREATED_S + 12,
            json!({"status": "EGRESS_FAILED", "endedAt": "0",
                   "file": {"filename": "rec/a.ogg", "duration": "-1", "size": "-5"}}),
        ),
    ]);
    let info = egress_info(finalized(&out));
    assert_eq!(
        info.ended_at,
        ((CREATED_S + 12) * 1_000_000_000).to_string()
    );
    // No start of its own: the call's (the room's creation, as no agent came).
    assert_eq!(info.started_at, "1761234567123000000");
    assert_eq!(
        (info.duration.as_str(), info.file_size.as_str()),
        ("11877000000", "0")
    );
}

/// egress#827: `EGRESS_ABORTED` with no file: the call is finalized without a
/// recording, with a zero duration and size and no file type.
#[test]
fn an_aborted_egress_without_a_file_finalizes_without_a_recording() {
    let (state, out) = run(&[
        participant("participant_joined", "PA_agent", "AGENT", CREATED_S + 2),
        room_event("room_finished", CREATED_S + 40),
        egress_ended(
            CREATED_S + 41,
            json!({"status": "EGRESS_ABORTED", "startedAt": "1761234569000000000",
                   "endedAt": "1761234607000000000", "error": "egress aborted"}),
        ),
    ]);
    let fin = finalized(&out);
    assert_eq!(fin.recording, None);
    let info = egress_info(fin);
    assert_eq!(info.status, "EGRESS_ABORTED");
    assert_eq!(
        (
            info.duration.as_str(),
            info.file_size.as_str(),
            info.file_type.as_deref()
        ),
        ("0", "0", None)
    );
    assert_eq!(state.phase(), Phase::Finalized);
}

/// The times of the issue's hostile webhook: `creationTime`/`joinedAt` that overflow in
/// the conversion to milliseconds and a `createdAt` of i64::MIN. They are treated as
/// absent: the call starts and ends when its events were received.
#[test]
fn times_at_the_edges_of_int64_fall_back_to_the_time_of_receipt() {
    let hostile = |event: &str, received_s: i64| {
        at(
            received_s,
            json!({"event": event, "createdAt": "-9223372036854775808",
                   "room": {"sid": ROOM, "name": NAME, "creationTime": "9999999999999999",
                            "creationTimeMs": "9223372036854775807"},
                   "participant": {"sid": "PA_agent", "kind": "AGENT",
                                   "joinedAt": "9999999999999999", "joinedAtMs": "-1"}}),
        )
    };
    let (state, out) = run(&[
        hostile("participant_joined", CREATED_S + 5),
        hostile("participant_left", CREATED_S + 95),
        hostile("room_finished", CREATED_S + 100),
    ]);
    assert_eq!(kinds(&out), [EventKind::CallStarted, EventKind::CallEnded]);
    let VoiceKitEvent::CallStarted { at_ms, .. } = out[0].event else {
        panic!()
    };
    assert_eq!(at_ms, (CREATED_S + 5) * 1000);
    let (end_ms, data) = ended(&out);
    assert_eq!(end_ms, (CREATED_S + 95) * 1000);
    assert_eq!((data.duration_seconds, data.duration_minutes), (90, 2));
    assert_eq!(state.room_created_at_ms, None);
    assert!(
        out[0]
            .event
            .to_json()
            .contains(r#""timestamp":"2025-10-23T15:49:32.000Z""#)
    );
}

/// A room whose only times are nonsense still ends no earlier than it started.
#[test]
fn a_room_finished_without_believable_times_never_ends_before_it_started() {
    let (_, out) = run(&[
        participant("participant_joined", "PA_agent", "AGENT", CREATED_S + 2),
        at(
            CREATED_S - 500,
            json!({"event": "room_finished", "room": {"sid": ROOM}, "createdAt": "-1"}),
        ),
    ]);
    let (_, data) = ended(&out);
    assert_eq!((data.duration_seconds, data.duration_minutes), (0, 1));
}
