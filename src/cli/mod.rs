//! Command-line tools beside the daemon: the operator commands (through the running
//! daemon's operator API, so they work while it runs and never race its writer) and
//! `send-test-event`, which needs no daemon at all.

pub mod operator;
mod table;
pub mod test_event;
