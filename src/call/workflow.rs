//! VoiceKit workflows: which one a LiveKit room belongs to, the call slug its name
//! carries, and where the workflow's events go.

use regex::Regex;
use serde_json::Value;

use crate::delivery::signing::SigningKey;

/// A VoiceKit workflow: where its calls' events go and which rooms belong to it.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub(crate) id: i64,
    pub(crate) slug: String,
    pub(crate) organization_id: i64,
    pub(crate) events_webhook_url: String,
    pub(crate) call_started_hook: Option<String>,
    pub(crate) room_pattern: Option<Regex>,
    /// Standard Webhooks keys; every delivery is signed with each (empty: unsigned).
    pub(crate) signing_keys: Vec<SigningKey>,
}

/// A room's place in VoiceKit: its workflow and, when the room name carries one, the slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub(crate) workflow_id: i64,
    pub(crate) call_slug: Option<String>,
}

/// Maps a room to a workflow: room metadata `workflow_slug`/`workflow_id` first, else the
/// first workflow whose `room_pattern` matches the room name. `None`: the room is no call.
pub(crate) fn assign(
    workflows: &[Workflow],
    room_name: &str,
    metadata: &str,
) -> Option<Assignment> {
    let meta = parse_metadata(metadata);
    let named = meta.as_ref().and_then(|m| {
        let by_slug = m.get("workflow_slug").and_then(Value::as_str);
        let by_id = m.get("workflow_id").and_then(|v| match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        workflows
            .iter()
            .find(|w| by_slug.is_some_and(|s| s == w.slug) || by_id.is_some_and(|id| id == w.id))
    });
    let workflow = named.or_else(|| {
        workflows.iter().find(|w| {
            w.room_pattern
                .as_ref()
                .is_some_and(|p| p.is_match(room_name))
        })
    })?;
    let call_slug = workflow
        .room_pattern
        .as_ref()
        .and_then(|p| p.captures(room_name))
        .and_then(|c| c.name("call_slug"))
        .map(|m| m.as_str().to_owned())
        .filter(|s| !s.is_empty());
    Some(Assignment {
        workflow_id: workflow.id,
        call_slug,
    })
}

/// `phone_number` from the room's JSON metadata, if it has one.
pub(crate) fn metadata_phone_number(metadata: &str) -> Option<String> {
    // Only the one field: the other keys are skipped, not built into a map.
    #[derive(serde::Deserialize)]
    struct Phone {
        phone_number: Option<Value>,
    }
    // serde would also read a struct from a JSON array.
    if !metadata.trim_start().starts_with('{') {
        return None;
    }
    match serde_json::from_str::<Phone>(metadata).ok()?.phone_number? {
        Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn parse_metadata(metadata: &str) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_str(metadata) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflows() -> Vec<Workflow> {
        let w = |id, slug: &str, pattern: Option<&str>| Workflow {
            id,
            slug: slug.into(),
            organization_id: 789,
            events_webhook_url: "http://127.0.0.1:1/".into(),
            call_started_hook: None,
            room_pattern: pattern.map(|p| Regex::new(p).unwrap()),
            signing_keys: vec![],
        };
        vec![
            w(
                456,
                "customer-support",
                Some(r"^VOICEKIT_workflow_(?P<call_slug>[A-Za-z0-9]+)_\d+$"),
            ),
            w(457, "sales", None),
        ]
    }

    #[test]
    fn pattern_match_gives_workflow_and_slug() {
        let a = assign(&workflows(), "VOICEKIT_workflow_abc12345_8453", "").unwrap();
        assert_eq!(a.workflow_id, 456);
        assert_eq!(a.call_slug.as_deref(), Some("abc12345"));
    }

    #[test]
    fn metadata_wins_over_pattern() {
        let a = assign(
            &workflows(),
            "VOICEKIT_workflow_abc12345_8453",
            r#"{"workflow_slug":"sales"}"#,
        )
        .unwrap();
        assert_eq!(
            a,
            Assignment {
                workflow_id: 457,
                call_slug: None
            }
        );
        let b = assign(&workflows(), "anything", r#"{"workflow_id":"456"}"#).unwrap();
        assert_eq!(b.workflow_id, 456);
        assert_eq!(b.call_slug, None);
    }

    #[test]
    fn unmapped_room_is_no_call() {
        assert_eq!(assign(&workflows(), "some-other-room", ""), None);
        assert_eq!(
            assign(&workflows(), "x", r#"{"workflow_slug":"nope"}"#),
            None
        );
        assert_eq!(assign(&workflows(), "x", "not json"), None);
    }

    #[test]
    fn phone_number_from_metadata() {
        assert_eq!(
            metadata_phone_number(r#"{"phone_number":"+15550001"}"#).as_deref(),
            Some("+15550001")
        );
        assert_eq!(metadata_phone_number("plain text"), None);
        for no_phone in [
            r#"{"phone_number":""}"#,
            r#"{"phone_number":15550001}"#,
            r#"{"phone_number":null}"#,
            r#"{"other":{"phone_number":"+1555"}}"#,
            r#"["phone_number","+1555"]"#,
            r#"["+1555"]"#,
            "",
        ] {
            assert_eq!(metadata_phone_number(no_phone), None, "{no_phone}");
        }
        assert_eq!(
            metadata_phone_number(r#"{"a":[1,{"b":"\"x\""}],"phone_number":"+1\u0035"}"#)
                .as_deref(),
            Some("+15")
        );
    }
}
