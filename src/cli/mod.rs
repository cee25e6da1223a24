//! Command-line tools beside the daemon: the operator commands (through the running
//! daemon's operator API, so they work while it runs and never race its writer),
//! `simulate`, which plays a whole call against the running daemon, and
//! `send-test-event`, which needs no daemon at all.

pub mod operator;
pub mod simulate;
mod table;
pub mod test_event;
