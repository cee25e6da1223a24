//! A real HTTP endpoint standing in for the customer's workflow endpoint.
//!
//! Delivery is only tested honestly against a socket: the bridge must really connect,
//! send the bytes and read a status. [`Receiver`] listens on a loopback port, records
//! every request in arrival order and answers from a script (e.g. two 500s, then 200),
//! so tests can assert on exactly what was sent and drive retries.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    /// The path without the query string.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// The body parsed as JSON; panics showing the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    delay: Duration,
    gate: Option<Arc<Notify>>,
    body: String,
}

impl Reply {
    /// Answers with `status` and an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            gate: None,
            body: String::new(),
        }
    }

    /// Answers with this body (e.g. a call_started hook's runtime data).
    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.to_owned();
        self
    }

    /// Adds a response header, e.g. `Retry-After` or `Location`.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Holds the answer back for `delay` (to exercise the sender's timeout).
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Holds the answer back until the test calls `gate.notify_one()`.
    pub fn until(mut self, gate: &Arc<Notify>) -> Reply {
        self.gate = Some(Arc::clone(gate));
        self
    }
}

impl From<u16> for Reply {
    fn from(status: u16) -> Reply {
        Reply::status(status)
    }
}

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    log: Mutex<Vec<Received>>,
    arrivals: mpsc::UnboundedSender<Received>,
}

/// A running endpoint. Answers 200 once its script is used up.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    arrivals: mpsc::UnboundedReceiver<Received>,
    server: JoinHandle<()>,
}

impl Receiver {
    /// An endpoint that answers 200 to everything.
    pub async fn start() -> Receiver {
        Self::start_scripted(Vec::new()).await
    }

    /// Answers the first requests with `statuses` in order, then 200.
    pub async fn start_with(statuses: Vec<u16>) -> Receiver {
        Self::start_scripted(statuses.into_iter().map(Reply::from).collect()).await
    }

    /// Answers the first requests with `replies` in order, then 200.
    pub async fn start_scripted(replies: Vec<Reply>) -> Receiver {
        let (tx, arrivals) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            script: Mutex::new(replies.into()),
            log: Mutex::new(Vec::new()),
            arrivals: tx,
        });
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver server");
        });
        Receiver {
            addr,
            shared,
            arrivals,
            server,
        }
    }

    /// The URL of `path` on this endpoint, e.g. `url("/hooks/voicekit")`.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.addr)
    }

    /// The next request not yet returned by `next`; panics if none arrives in `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Received {
        match tokio::time::timeout(timeout, self.arrivals.recv()).await {
            Ok(Some(request)) => request,
            Ok(None) => unreachable!("the receiver holds its own sender"),
            Err(_) => panic!(
                "receiver {}: no request within {timeout:?} ({} received in total)",
                self.addr,
                self.count()
            ),
        }
    }

    /// Panics if a request (not yet returned by `next`) arrives within `within`.
    pub async fn expect_nothing(&mut self, within: Duration) {
        if let Ok(Some(request)) = tokio::time::timeout(within, self.arrivals.recv()).await {
            panic!(
                "receiver {}: expected no request within {within:?}, got {} {}: {}",
                self.addr,
                request.method,
                request.path,
                request.text()
            );
        }
    }

    /// How many requests have arrived in total.
    pub fn count(&self) -> usize {
        self.shared.log.lock().expect("receiver log").len()
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.log.lock().expect("receiver log").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Received {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body,
    };
    // Under one lock, so the n-th request recorded is the one given the n-th reply.
    let reply = {
        let mut log = shared.log.lock().expect("receiver log");
        log.push(request.clone());
        let _ = shared.arrivals.send(request);
        let mut script = shared.script.lock().expect("receiver script");
        script.pop_front().unwrap_or(Reply::status(200))
    };
    if let Some(gate) = &reply.gate {
        gate.notified().await;
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).expect("scripted status is valid");
    let mut headers = HeaderMap::new();
    for (name, value) in &reply.headers {
        headers.append(
            HeaderName::try_from(name.as_str()).expect("scripted header name"),
            HeaderValue::try_from(value.as_str()).expect("scripted header value"),
        );
    }
    (status, headers, reply.body).into_response()
}

/// What an endpoint got, grouped by event (`identify` names a body's call and event;
/// `None` for a body no posted webhook explains, which panics). Also panics on copies of
/// one event with different webhook-ids or bytes, on two events sharing a webhook-id,
/// on another workflow's event, and on calls sharing a call_id: the checks of "every
/// event created once" that the crash and several-instance tests share.
pub fn group_by_event<K: Copy + Ord + std::fmt::Debug>(
    received: &[Received],
    identify: impl Fn(&serde_json::Value) -> Option<(usize, K)>,
) -> std::collections::BTreeMap<(usize, K), Vec<Received>> {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    let mut events: BTreeMap<(usize, K), Vec<Received>> = BTreeMap::new();
    for r in received {
        let body = r.json();
        let who = identify(&body)
            .unwrap_or_else(|| panic!("a delivery no posted webhook caused: {}", r.text()));
        assert_eq!(body["data"]["workflow_slug"], "customer-support", "{body}");
        events.entry(who).or_default().push(r.clone());
    }
    let mut owners: HashMap<String, (usize, K)> = HashMap::new();
    for (event, copies) in &events {
        let id = copies[0]
            .header("webhook-id")
            .expect("webhook-id")
            .to_owned();
        for copy in copies {
            assert_eq!(
                copy.header("webhook-id"),
                Some(id.as_str()),
                "{event:?} was created twice: it arrived under two webhook-ids"
            );
            assert_eq!(
                copy.body, copies[0].body,
                "{event:?}: same bytes every time"
            );
        }
        if let Some(other) = owners.insert(id.clone(), *event) {
            panic!("{event:?} and {other:?} share webhook-id {id}");
        }
    }
    // A call's events name one call id, and calls do not share one.
    let mut call_ids: BTreeMap<usize, i64> = BTreeMap::new();
    for ((call, _), copies) in &events {
        let call_id = copies[0].json()["data"]["call_id"]
            .as_i64()
            .expect("call_id");
        let known = *call_ids.entry(*call).or_insert(call_id);
        assert_eq!(known, call_id, "call {call}: one call_id for its events");
    }
    let distinct: BTreeSet<i64> = call_ids.values().copied().collect();
    assert_eq!(
        distinct.len(),
        call_ids.len(),
        "calls share a call_id: {call_ids:?}"
    );
    events
}
