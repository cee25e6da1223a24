//! The open-file limit, which bounds how many connections the daemon can hold: raised
//! to its hard limit at start, and the webhook listener's connection cap derived from
//! it so that clients cannot take the descriptors the store and deliveries need.

/// Descriptors kept for everything but webhook connections: the store's files and
/// connections, deliveries, S3, LiveKit's API and the operator listener.
pub(crate) const RESERVED: u64 = 256;

/// The connection cap when `server.max_connections` is not set (on a roomy limit).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The open-file limit before and after raising the soft limit to the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFileLimit {
    pub was: u64,
    pub now: u64,
}

/// The soft `RLIMIT_NOFILE` now.
pub(crate) fn open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a no-op when they are equal, as
/// under the unit's `LimitNOFILE=`).
pub(crate) fn raise_open_file_limit() -> std::io::Result<OpenFileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(OpenFileLimit {
        was,
        now: limit.rlim_cur,
    })
}

/// The webhook listener's connection cap under an open-file limit of `limit`, and a
/// warning when the configured one leaves too few descriptors for the rest.
pub(crate) fn connection_cap(configured: Option<usize>, limit: u64) -> (usize, Option<String>) {
    let room = limit.saturating_sub(RESERVED).max(limit / 2);
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    match configured {
        None => (DEFAULT_MAX_CONNECTIONS.min(room), None),
        Some(cap) if cap <= room => (cap, None),
        Some(cap) => (
            cap,
            Some(format!(
                "server.max_connections = {cap} leaves fewer than {RESERVED} of the {limit} \
                 open files allowed for the store and deliveries: when clients hold them all, \
                 accepts fail (counted, retried with backoff) and deliveries may fail too; \
                 raise LimitNOFILE= or lower it to {room}"
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_store_and_deliveries() {
        assert_eq!(connection_cap(None, 65_536), (4096, None));
        assert_eq!(connection_cap(None, 1024), (768, None));
        assert_eq!(connection_cap(None, 128), (64, None));
        assert_eq!(connection_cap(Some(100), 1024), (100, None));
        let (cap, warning) = connection_cap(Some(5000), 1024);
        assert_eq!(cap, 5000);
        assert!(warning.unwrap().contains("server.max_connections = 5000"));
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise_open_file_limit().unwrap();
        assert!(limit.now >= limit.was);
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) };
        assert_eq!(now.rlim_cur, now.rlim_max);
    }
}
