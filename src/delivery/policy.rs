//! When to try a failed delivery again, and when to give up on it.

use std::time::Duration;

use rand::Rng;

/// A fixed schedule of delays with +-20% jitter, so retries of many events to one
/// recovering endpoint do not arrive in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    schedule: Vec<Duration>,
}

impl RetryPolicy {
    pub(crate) fn new(schedule: Vec<Duration>) -> RetryPolicy {
        RetryPolicy { schedule }
    }

    /// The delay after the `failures`-th failed attempt, or `None` once the schedule is
    /// exhausted and the delivery is dead.
    pub(crate) fn delay_after(&self, failures: usize) -> Option<Duration> {
        let base = *self.schedule.get(failures.checked_sub(1)?)?;
        let factor = rand::rng().random_range(0.8..=1.2);
        Some(base.mul_f64(factor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_schedule_within_jitter_then_gives_up() {
        let p = RetryPolicy::new(vec![Duration::from_secs(5), Duration::from_secs(300)]);
        for _ in 0..100 {
            let d = p.delay_after(1).unwrap().as_secs_f64();
            assert!((4.0..=6.0).contains(&d), "{d}");
            let d = p.delay_after(2).unwrap().as_secs_f64();
            assert!((240.0..=360.0).contains(&d), "{d}");
        }
        assert_eq!(p.delay_after(3), None);
        assert_eq!(RetryPolicy::new(Vec::new()).delay_after(1), None);
    }
}
