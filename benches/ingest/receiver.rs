//! The fast customer: an axum route answering 200 to every VoiceKit event, noting when
//! each arrived (matched to its webhook by phone number or room name), over which
//! connections, and able to hold answers back so the outbox fills before a drain test.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    Router,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::StatusCode,
    routing::post,
};
use serde::Deserialize;
use tokio::sync::watch;

use crate::calls::Emits;

#[derive(Default)]
struct Shared {
    /// call_started, call_ended, call_finalized.
    counts: [AtomicU64; 3],
    arrivals: Mutex<Vec<(Emits, String, Instant)>>,
    peers: Mutex<HashSet<SocketAddr>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    hold: watch::Sender<bool>,
}

#[derive(Deserialize)]
struct Incoming {
    event: String,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    phone_number: Option<String>,
    egress_info: Option<EgressInfo>,
}

#[derive(Deserialize)]
struct EgressInfo {
    room_name: String,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (hold, held) = watch::channel(false);
        let state = (shared.clone(), held);
        let app = Router::new()
            .route("/voicekit", post(receive))
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Ok(Receiver { addr, shared, hold })
    }

    /// While held, requests wait for [`Receiver::release`] before they are answered.
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Forgets what arrived so far (between phases).
    pub fn reset(&self) {
        for c in &self.shared.counts {
            c.store(0, Ordering::SeqCst);
        }
        self.shared.arrivals.lock().unwrap().clear();
        self.shared.peers.lock().unwrap().clear();
    }

    pub fn count(&self, kind: Emits) -> u64 {
        self.shared.counts[kind as usize].load(Ordering::SeqCst)
    }

    pub fn total(&self) -> u64 {
        self.shared
            .counts
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }

    pub fn arrivals(&self) -> Vec<(Emits, String, Instant)> {
        self.shared.arrivals.lock().unwrap().clone()
    }

    /// Distinct client sockets seen since the last reset: the daemon's connections.
    pub fn connections(&self) -> usize {
        self.shared.peers.lock().unwrap().len()
    }
}

async fn receive(
    State((shared, mut held)): State<(Arc<Shared>, watch::Receiver<bool>)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> StatusCode {
    let now = Instant::now();
    let _ = held.wait_for(|h| !*h).await;
    shared.peers.lock().unwrap().insert(peer);
    let Ok(event) = serde_json::from_slice::<Incoming>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let (kind, key) = match event.event.as_str() {
        "call_started" => (Emits::Started, event.data.phone_number),
        "call_ended" => (Emits::Ended, event.data.phone_number),
        "call_finalized" => (
            Emits::Finalized,
            event.data.egress_info.map(|e| e.room_name),
        ),
        _ => return StatusCode::OK,
    };
    shared.counts[kind as usize].fetch_add(1, Ordering::SeqCst);
    if let Some(key) = key {
        shared.arrivals.lock().unwrap().push((kind, key, now));
    }
    StatusCode::OK
}
