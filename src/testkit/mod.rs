//! LiveKit webhooks built and signed exactly as LiveKit sends them: the one place the
//! end-to-end tests, `voicekit-bridge simulate` and the ingest bench get what they post
//! to the daemon, so all three exercise the wire format the daemon meets in production.
//!
//! - [`webhook`]: one builder per event, writing the body in Go protojson's style
//!   (LiveKit's field order, 64-bit integers as strings, enums by name, zero values
//!   left out), each with a fresh `EV_...` id; the text returned is the exact bytes to
//!   sign and post.
//! - [`call`]: a whole call as LiveKit plays it (room, SIP caller, agent, audio egress)
//!   on a fixed timeline, step by step.
//! - [`token`]: the `Authorization` header value: an HS256 JWT whose `iss` is the API
//!   key, with a five-minute `exp` and a `sha256` claim holding the padded base64
//!   SHA-256 of the raw body, made by LiveKit's own `AccessToken`.
//! - [`store`]: an empty store with the daemon's schema, for the dashboard bench to seed.
//!
//! ```
//! use voicekit_bridge::testkit::{token, webhook::{self, Participant, Room}};
//!
//! let room = Room::new("RM_example", "VOICEKIT_workflow_abc12345_1", 1_761_234_567_123);
//! let agent = Participant::agent("PA_agent", "agent-1", 1_761_234_569_000);
//! let body = webhook::participant_joined(&room, &agent, 1_761_234_569);
//! let authorization = token::sign("APIkey", "a-secret-of-enough-bytes", body.as_bytes())?;
//! // POST `body` with `Authorization: {authorization}` to the daemon's webhook path.
//! # assert!(body.starts_with(r#"{"event":"participant_joined","room":{"sid":"RM_example""#));
//! # assert_eq!(authorization.split('.').count(), 3);
//! # Ok::<(), voicekit_bridge::testkit::token::AccessTokenError>(())
//! ```

pub mod call;
pub mod protojson;
pub mod store;
pub mod token;
pub mod webhook;
pub mod workflow;
