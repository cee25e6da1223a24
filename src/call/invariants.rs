//! What every run of the call state machine must uphold, whatever LiveKit sends.
//!
//! The property tests and the fuzz targets feed the machine arbitrary events and hold
//! everything it emits for one call to these rules: the customer bills from the
//! durations and sorts by the timestamps, so no input may produce a negative duration,
//! a wrong minute count, a time outside the sane window, or events out of order.

use super::{
    machine::Emitted,
    voicekit::{EventKind, VoiceKitEvent, duration_minutes},
};
use crate::livekit::time::{EARLIEST_MS, LATEST_MS, sane_ms, sane_nanos};

/// Checks everything one call emitted, in the order it was emitted; the first broken
/// rule, described.
pub fn check(emitted: &[Emitted]) -> Result<(), String> {
    let mut seen: Vec<EventKind> = Vec::new();
    let mut started_at = None;
    for e in emitted {
        let kind = e.event.kind();
        if seen.contains(&kind) {
            return Err(format!("{} emitted twice", kind.as_str()));
        }
        if let Some(last) = seen.last()
            && last.seq() > kind.seq()
        {
            return Err(format!("{} after {}", kind.as_str(), last.as_str()));
        }
        let required = match kind {
            EventKind::CallStarted => None,
            EventKind::CallEnded => Some(EventKind::CallStarted),
            EventKind::CallFinalized => Some(EventKind::CallEnded),
        };
        if let Some(before) = required.filter(|k| !seen.contains(k)) {
            return Err(format!("{} before {}", kind.as_str(), before.as_str()));
        }
        seen.push(kind);
        let at_ms = match &e.event {
            VoiceKitEvent::CallStarted { at_ms, .. } => {
                started_at = Some(*at_ms);
                *at_ms
            }
            VoiceKitEvent::CallEnded { at_ms, data } => {
                if data.duration_seconds < 0 {
                    return Err(format!("duration_seconds {}", data.duration_seconds));
                }
                if data.duration_minutes != duration_minutes(data.duration_seconds)
                    || data.duration_minutes != (data.duration_seconds + 59).div_euclid(60).max(1)
                {
                    return Err(format!(
                        "{} s billed as {} min",
                        data.duration_seconds, data.duration_minutes
                    ));
                }
                if started_at.is_some_and(|s| *at_ms < s) {
                    return Err(format!("ended at {at_ms} before it started"));
                }
                *at_ms
            }
            VoiceKitEvent::CallFinalized { at_ms, data } => {
                let info = &data.egress_info;
                let nanos = |name: &str, v: &str| {
                    v.parse::<i64>()
                        .ok()
                        .and_then(sane_nanos)
                        .ok_or_else(|| format!("egress_info.{name} {v:?} is no sane time"))
                };
                let (started, ended) = (
                    nanos("started_at", &info.started_at)?,
                    nanos("ended_at", &info.ended_at)?,
                );
                if started > ended {
                    return Err(format!(
                        "egress started at {started} after it ended at {ended}"
                    ));
                }
                for (name, v) in [("duration", &info.duration), ("file_size", &info.file_size)] {
                    if !v.parse::<i64>().is_ok_and(|n| n >= 0) {
                        return Err(format!("egress_info.{name} {v:?}"));
                    }
                }
                *at_ms
            }
        };
        if sane_ms(at_ms).is_none() {
            return Err(format!(
                "{} stamped {at_ms} ms, outside {EARLIEST_MS}..{LATEST_MS}",
                kind.as_str()
            ));
        }
        let json: serde_json::Value = serde_json::from_str(&e.event.to_json())
            .map_err(|err| format!("{} does not serialise: {err}", kind.as_str()))?;
        let stamp = json["timestamp"].as_str().unwrap_or_default();
        if stamp.starts_with("1970") || stamp.len() != 24 {
            return Err(format!("{} timestamp {stamp:?}", kind.as_str()));
        }
    }
    Ok(())
}
