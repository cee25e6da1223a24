//! LiveKit's clocks, read with suspicion.
//!
//! LiveKit gives times in three units (seconds, milliseconds, nanoseconds) as 64-bit
//! integers, and any of them can be zero, missing, or nonsense from a broken clock or a
//! hostile sender. A customer bills from the durations we derive, so a time is only
//! believed if its conversion to milliseconds does not overflow and it falls inside
//! [`EARLIEST_MS`]..[`LATEST_MS`]; anything else is treated as absent, and the caller
//! falls back to another time it has.

/// 2000-01-01T00:00:00Z: no LiveKit event happened before it.
pub(crate) const EARLIEST_MS: i64 = 946_684_800_000;
/// 2100-01-01T00:00:00Z (exclusive): no LiveKit event happens after it.
pub(crate) const LATEST_MS: i64 = 4_102_444_800_000;

const NS_PER_MS: i64 = 1_000_000;

/// `ms` if it lies in the sane window.
pub fn sane_ms(ms: i64) -> Option<i64> {
    (EARLIEST_MS..LATEST_MS).contains(&ms).then_some(ms)
}

/// Unix seconds to milliseconds, if they convert without overflow to a sane time.
pub(crate) fn ms_from_secs(secs: i64) -> Option<i64> {
    secs.checked_mul(1000).and_then(sane_ms)
}

/// Unix nanoseconds to milliseconds (rounded down), if they are a sane time.
pub(crate) fn ms_from_nanos(nanos: i64) -> Option<i64> {
    sane_ms(nanos.div_euclid(NS_PER_MS))
}

/// `nanos` if they are a sane time (still in nanoseconds).
pub(crate) fn sane_nanos(nanos: i64) -> Option<i64> {
    ms_from_nanos(nanos).map(|_| nanos)
}

/// Milliseconds to nanoseconds; only for sane times, which never overflow.
pub(crate) fn nanos_from_ms(ms: i64) -> i64 {
    debug_assert!(sane_ms(ms).is_some(), "{ms} ms is outside the sane window");
    ms.saturating_mul(NS_PER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_2000_to_2100() {
        assert_eq!(sane_ms(EARLIEST_MS - 1), None);
        assert_eq!(sane_ms(EARLIEST_MS), Some(EARLIEST_MS));
        assert_eq!(sane_ms(1_761_234_567_123), Some(1_761_234_567_123));
        assert_eq!(sane_ms(LATEST_MS - 1), Some(LATEST_MS - 1));
        assert_eq!(sane_ms(LATEST_MS), None);
        assert_eq!(sane_ms(0), None);
        assert_eq!(sane_ms(-1), None);
    }

    #[test]
    fn conversions_that_overflow_are_absent() {
        assert_eq!(ms_from_secs(9_999_999_999_999_999), None);
        assert_eq!(ms_from_secs(i64::MIN), None);
        assert_eq!(ms_from_secs(i64::MAX), None);
        assert_eq!(ms_from_secs(1_761_234_567), Some(1_761_234_567_000));
        assert_eq!(ms_from_nanos(i64::MIN), None);
        assert_eq!(ms_from_nanos(i64::MAX), None);
        assert_eq!(ms_from_nanos(-1), None);
        assert_eq!(
            ms_from_nanos(1_749_599_765_791_839_485),
            Some(1_749_599_765_791)
        );
        assert_eq!(
            sane_nanos(1_749_599_765_791_839_485),
            Some(1_749_599_765_791_839_485)
        );
        assert_eq!(
            sane_nanos(1_749_599_765),
            None,
            "seconds are not nanoseconds"
        );
        assert_eq!(nanos_from_ms(1_749_599_765_791), 1_749_599_765_791_000_000);
    }
}
