//! `WebhookEvent::parse` on any bytes: it answers Ok or an error, never panics, and
//! what it accepts reads back only believable times and ids the store can keep.

#![no_main]

use libfuzzer_sys::fuzz_target;
use voicekit_bridge::livekit::{
    event::{MAX_ID_BYTES, WebhookEvent},
    time::sane_ms,
};

const RECEIVED_AT_MS: i64 = 1_761_234_567_000;

fuzz_target!(|body: &[u8]| {
    let Ok(event) = WebhookEvent::parse_at(body, RECEIVED_AT_MS) else {
        return;
    };
    assert!(!event.event.is_empty());
    assert!(event.id.as_ref().is_none_or(|id| id.len() <= MAX_ID_BYTES));
    assert!(
        event
            .room_sid()
            .is_none_or(|s| s.len() <= MAX_ID_BYTES && !s.contains('\0'))
    );
    assert!(
        event
            .room_name()
            .is_none_or(|s| s.len() <= MAX_ID_BYTES && !s.contains('\0'))
    );
    assert_eq!(event.received_at_ms(), Some(RECEIVED_AT_MS));
    let sane = |t: Option<i64>| assert!(t.is_none_or(|ms| sane_ms(ms).is_some()), "{t:?}");
    sane(event.created_at_ms());
    if let Some(room) = &event.room {
        sane(room.created_at_ms());
    }
    if let Some(p) = &event.participant {
        sane(p.joined_at_ms());
        let _ = (p.kind(), p.sip_phone_number());
    }
    if let Some(info) = &event.egress_info {
        sane(info.ended_at_ms());
        let _ = (
            info.status(),
            info.file(),
            info.started_at_ns(),
            info.ended_at_ns(),
        );
    }
});
