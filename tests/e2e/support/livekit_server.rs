//! A stand-in for LiveKit's server API on loopback: RoomService.UpdateRoomMetadata and
//! Egress.ListEgress, as Twirp JSON. It checks each request's token the way LiveKit
//! does (HS256 with the API secret, issuer = API key) and the grant the call needs,
//! records what was written, and answers ListEgress with what the test set.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use livekit_api::access_token::{Claims, TokenVerifier};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::config::{API_KEY, API_SECRET};

#[derive(Default)]
struct Shared {
    metadata_updates: Mutex<Vec<(String, String)>>,
    egresses: Mutex<Vec<Value>>,
    rejected: Mutex<Vec<String>>,
}

pub struct FakeLiveKit {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FakeLiveKit {
    pub async fn start() -> FakeLiveKit {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route(
                "/twirp/livekit.RoomService/UpdateRoomMetadata",
                post(update_room_metadata),
            )
            .route("/twirp/livekit.Egress/ListEgress", post(list_egress))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake LiveKit");
        let addr = listener.local_addr().expect("fake LiveKit addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake LiveKit server");
        });
        FakeLiveKit {
            addr,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `(room, metadata)` of every accepted UpdateRoomMetadata, in order.
    pub fn metadata_updates(&self) -> Vec<(String, String)> {
        self.shared.metadata_updates.lock().unwrap().clone()
    }

    /// Why requests were refused (bad token, missing grant).
    pub fn rejected(&self) -> Vec<String> {
        self.shared.rejected.lock().unwrap().clone()
    }

    /// What ListEgress answers from now on (EgressInfo objects in protojson).
    pub fn set_egresses(&self, items: Vec<Value>) {
        *self.shared.egresses.lock().unwrap() = items;
    }
}

impl Drop for FakeLiveKit {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Answer = (StatusCode, Json<Value>);

fn verify(shared: &Shared, headers: &HeaderMap) -> Result<Claims, Answer> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    TokenVerifier::with_api_key(API_KEY, API_SECRET)
        .verify(token)
        .map_err(|e| refuse(shared, format!("bad token: {e}")))
}

fn refuse(shared: &Shared, why: String) -> Answer {
    shared.rejected.lock().unwrap().push(why.clone());
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"code": "unauthenticated", "msg": why})),
    )
}

async fn update_room_metadata(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Answer, Answer> {
    let claims = verify(&shared, &headers)?;
    let room = body["room"].as_str().unwrap_or_default().to_owned();
    if !claims.video.room_admin || claims.video.room != room {
        return Err(refuse(
            &shared,
            format!("grant {:?} does not allow room {room}", claims.video),
        ));
    }
    let metadata = body["metadata"].as_str().unwrap_or_default().to_owned();
    shared
        .metadata_updates
        .lock()
        .unwrap()
        .push((room.clone(), metadata.clone()));
    Ok((
        StatusCode::OK,
        Json(json!({"sid": "RM_fake", "name": room, "metadata": metadata})),
    ))
}

async fn list_egress(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Answer, Answer> {
    let claims = verify(&shared, &headers)?;
    if !claims.video.room_record {
        return Err(refuse(
            &shared,
            "ListEgress needs the roomRecord grant".into(),
        ));
    }
    let room = body["roomName"].as_str().unwrap_or_default();
    let items: Vec<Value> = shared
        .egresses
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["roomName"] == room)
        .cloned()
        .collect();
    Ok((StatusCode::OK, Json(json!({ "items": items }))))
}
