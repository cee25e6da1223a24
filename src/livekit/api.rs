//! The few LiveKit server API calls the bridge makes (Twirp over HTTP, JSON bodies).
//!
//! `UpdateRoomMetadata` hands a call's runtime data to the agent in the room;
//! `ListEgress` asks after an egress whose `egress_ended` webhook never came (LiveKit
//! keeps its webhook queue in memory and can drop events). Each request carries a
//! token we sign with the primary API key and only the grant that call needs.

use std::time::Duration;

use livekit_api::access_token::{AccessToken, VideoGrants};
use serde::Deserialize;
use serde_json::json;

use super::event::EgressInfo;
use crate::config::ApiKey;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LiveKitApiError {
    #[error("no [livekit] url is configured")]
    NoUrl,
    #[error("signing the request token: {0}")]
    Token(String),
    #[error("{method}: {message}")]
    Request {
        method: &'static str,
        message: String,
    },
    #[error("{method}: LiveKit answered {status}: {body}")]
    Status {
        method: &'static str,
        status: u16,
        body: String,
    },
}

#[derive(Clone)]
pub(crate) struct LiveKitApi {
    http: reqwest::Client,
    url: Option<String>,
    key: ApiKey,
}

#[derive(Deserialize)]
struct ListEgressResponse {
    #[serde(default)]
    items: Vec<EgressInfo>,
}

impl LiveKitApi {
    pub(crate) fn new(url: Option<String>, key: ApiKey) -> LiveKitApi {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client with only a timeout always builds");
        LiveKitApi { http, url, key }
    }

    async fn call(
        &self,
        service: &str,
        method: &'static str,
        grants: VideoGrants,
        body: serde_json::Value,
    ) -> Result<String, LiveKitApiError> {
        let base = self.url.as_deref().ok_or(LiveKitApiError::NoUrl)?;
        let token = AccessToken::with_api_key(&self.key.key, self.key.secret.expose())
            .with_ttl(Duration::from_secs(600))
            .with_grants(grants)
            .to_jwt()
            .map_err(|e| LiveKitApiError::Token(e.to_string()))?;
        let url = format!(
            "{}/twirp/livekit.{service}/{method}",
            base.trim_end_matches('/')
        );
        let response = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(|e| LiveKitApiError::Request {
                method,
                message: e.to_string(),
            })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(LiveKitApiError::Status {
                method,
                status,
                body: text.chars().take(512).collect(),
            });
        }
        Ok(text)
    }

    /// Sets a room's metadata (RoomService.UpdateRoomMetadata, grant `roomAdmin`).
    pub(crate) async fn update_room_metadata(
        &self,
        room: &str,
        metadata: &str,
    ) -> Result<(), LiveKitApiError> {
        let grants = VideoGrants {
            room_admin: true,
            room: room.to_owned(),
            ..Default::default()
        };
        self.call(
            "RoomService",
            "UpdateRoomMetadata",
            grants,
            json!({ "room": room, "metadata": metadata }),
        )
        .await
        .map(drop)
    }

    /// The egresses of a room (Egress.ListEgress, grant `roomRecord`).
    pub(crate) async fn list_egress(
        &self,
        room_name: &str,
    ) -> Result<Vec<EgressInfo>, LiveKitApiError> {
        let grants = VideoGrants {
            room_record: true,
            ..Default::default()
        };
        let text = self
            .call(
                "Egress",
                "ListEgress",
                grants,
                json!({ "roomName": room_name }),
            )
            .await?;
        serde_json::from_str::<ListEgressResponse>(&text)
            .map(|r| r.items)
            .map_err(|e| LiveKitApiError::Request {
                method: "ListEgress",
                message: format!("unreadable response: {e}"),
            })
    }
}

/// Merges the hook's runtime data into the room's existing metadata: a JSON object is
/// extended (the hook's keys win); anything else is kept under `"metadata"`.
pub(crate) fn merge_metadata(
    existing: &str,
    runtime: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut merged = match serde_json::from_str::<serde_json::Value>(existing) {
        Ok(serde_json::Value::Object(map)) => map,
        _ if existing.is_empty() => serde_json::Map::new(),
        _ => {
            let mut m = serde_json::Map::new();
            m.insert("metadata".into(), existing.into());
            m
        }
    };
    for (k, v) in runtime {
        merged.insert(k.clone(), v.clone());
    }
    serde_json::Value::Object(merged).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn runtime_data_is_merged_into_json_metadata() {
        let merged = merge_metadata(
            r#"{"workflow_slug":"support","lang":"en"}"#,
            &obj(json!({"lang": "de", "customer": {"tier": "gold"}})),
        );
        let v: serde_json::Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(
            v,
            json!({"workflow_slug": "support", "lang": "de", "customer": {"tier": "gold"}})
        );
    }

    #[test]
    fn non_json_metadata_is_kept_beside_the_runtime_data() {
        let v: serde_json::Value =
            serde_json::from_str(&merge_metadata("plain", &obj(json!({"a": 1})))).unwrap();
        assert_eq!(v, json!({"metadata": "plain", "a": 1}));
        let v: serde_json::Value =
            serde_json::from_str(&merge_metadata("", &obj(json!({"a": 1})))).unwrap();
        assert_eq!(v, json!({"a": 1}));
    }
}
