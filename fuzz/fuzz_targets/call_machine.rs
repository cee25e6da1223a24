//! The call state machine fed parsed events: the input is LiveKit webhook bodies, one
//! per line, applied in order to one call (each received a second after the one
//! before). Whatever they say, the machine never panics, its state survives the store's
//! JSON round trip, and everything it emits keeps `call::invariants`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use voicekit_bridge::{
    call::{CallState, invariants},
    livekit::event::WebhookEvent,
    testkit::workflow::sample_workflow,
};

fuzz_target!(|data: &[u8]| {
    let workflow = sample_workflow();
    let mut state = CallState::new(
        1,
        "abc12345".into(),
        &workflow,
        "RM_kfWfYGzHvVYy",
        "VOICEKIT_workflow_abc12345_8453",
    );
    let mut emitted = Vec::new();
    let mut received_at_ms = 1_761_234_567_000;
    for line in data.split(|b| *b == b'\n') {
        received_at_ms += 1000;
        let Ok(event) = WebhookEvent::parse_at(line, received_at_ms) else {
            continue;
        };
        let transition = state.apply(&event);
        state = transition.state;
        emitted.extend(transition.emitted);
        let stored = serde_json::to_string(&state).expect("state serialises");
        let loaded: CallState = serde_json::from_str(&stored).expect("state deserialises");
        assert_eq!(
            loaded, state,
            "state changed in the store's JSON round trip"
        );
    }
    if let Err(broken) = invariants::check(&emitted) {
        panic!("{broken}");
    }
});
