//! A circuit breaker per endpoint: one that keeps failing is paused as a whole.
//!
//! Without it, a dead endpoint with a thousand pending events gets a thousand attempts
//! at every step of the retry schedule. After `threshold` consecutive failures the
//! endpoint is paused for a while (doubling each time it fails again, up to a maximum);
//! then a single probe goes through, and its success closes the circuit.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Closed,
    /// Paused until the given instant.
    Open(Instant),
    /// The pause is over: one probe at a time until one succeeds.
    HalfOpen,
}

/// What a recorded result changed, so the caller can log it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    Opened { failures: u32, pause: Duration },
    Closed,
}

#[derive(Debug, Clone)]
struct Endpoint {
    failures: u32,
    open_until: Option<Instant>,
    pause: Duration,
}

#[derive(Debug)]
pub(crate) struct Breakers {
    threshold: u32,
    base: Duration,
    max: Duration,
    endpoints: HashMap<String, Endpoint>,
}

impl Breakers {
    pub(crate) fn new(threshold: u32, base: Duration, max: Duration) -> Breakers {
        Breakers {
            threshold,
            base,
            max,
            endpoints: HashMap::new(),
        }
    }

    pub(crate) fn state(&self, endpoint: &str, now: Instant) -> State {
        match self.endpoints.get(endpoint) {
            Some(e) if e.failures >= self.threshold => match e.open_until {
                Some(until) if until > now => State::Open(until),
                _ => State::HalfOpen,
            },
            _ => State::Closed,
        }
    }

    pub(crate) fn success(&mut self, endpoint: &str) -> Change {
        match self.endpoints.remove(endpoint) {
            Some(e) if e.failures >= self.threshold => Change::Closed,
            _ => Change::None,
        }
    }

    pub(crate) fn failure(&mut self, endpoint: &str, now: Instant) -> Change {
        let e = self
            .endpoints
            .entry(endpoint.to_owned())
            .or_insert(Endpoint {
                failures: 0,
                open_until: None,
                pause: self.base,
            });
        e.failures += 1;
        if e.failures < self.threshold {
            return Change::None;
        }
        if e.open_until.is_some() {
            // A failed probe: pause again, longer.
            e.pause = (e.pause * 2).min(self.max);
        }
        e.open_until = Some(now + e.pause);
        Change::Opened {
            failures: e.failures,
            pause: e.pause,
        }
    }

    /// The earliest instant a paused endpoint may be probed again.
    pub(crate) fn next_reopen(&self, now: Instant) -> Option<Instant> {
        self.endpoints
            .values()
            .filter_map(|e| e.open_until)
            .filter(|until| *until > now)
            .min()
    }
}

/// The delivery worker's breakers as others see them: for the dashboard, which
/// endpoint is paused and until when.
#[derive(Debug, Clone)]
pub struct Circuits(Arc<Mutex<Breakers>>);

impl Circuits {
    pub fn new(breakers: Arc<Mutex<Breakers>>) -> Circuits {
        Circuits(breakers)
    }

    /// When `endpoint`'s paused circuit lets a probe through, if it is paused now.
    pub fn open_until(&self, endpoint: &str) -> Option<SystemTime> {
        let now = Instant::now();
        match self.0.lock().expect("breaker lock").state(endpoint, now) {
            State::Open(until) => Some(SystemTime::now() + (until - now)),
            State::Closed | State::HalfOpen => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breakers::new(3, Duration::from_secs(30), Duration::from_secs(100));
        assert_eq!(b.failure("e", t0), Change::None);
        assert_eq!(b.failure("e", t0), Change::None);
        assert_eq!(b.state("e", t0), State::Closed);
        assert_eq!(
            b.failure("e", t0),
            Change::Opened {
                failures: 3,
                pause: Duration::from_secs(30)
            }
        );
        assert_eq!(b.state("e", t0), State::Open(t0 + Duration::from_secs(30)));
        assert_eq!(b.state("other", t0), State::Closed);
        assert_eq!(b.next_reopen(t0), Some(t0 + Duration::from_secs(30)));

        let later = t0 + Duration::from_secs(31);
        assert_eq!(b.state("e", later), State::HalfOpen);
        // A failed probe doubles the pause, up to the maximum.
        assert_eq!(
            b.failure("e", later),
            Change::Opened {
                failures: 4,
                pause: Duration::from_secs(60)
            }
        );
        let much_later = later + Duration::from_secs(61);
        assert_eq!(
            b.failure("e", much_later),
            Change::Opened {
                failures: 5,
                pause: Duration::from_secs(100)
            }
        );
        assert_eq!(b.success("e"), Change::Closed);
        assert_eq!(b.state("e", much_later), State::Closed);
        assert_eq!(b.success("e"), Change::None);
    }
}
