//! Free space under the SQLite file. After a commit failed on a full disk, the probe
//! write that tells readiness the store takes writes again is small enough to fit in
//! the pages the failed commit left behind, while a webhook's commit still does not:
//! the probe also asks for this much room, so readiness does not flicker back to
//! ready on a disk that is still full.

use std::path::Path;

use crate::store::StoreError;

/// The free space a probe needs: far more than one commit of a burst writes.
pub(super) const PROBE_HEADROOM: u64 = 1 << 20;

/// Fails with [`StoreError::LowDisk`] when less than [`PROBE_HEADROOM`] is free on the
/// file system holding `file`. A file system that cannot say is taken as roomy: the
/// probe write itself then decides.
pub(super) fn check(file: &Path) -> Result<(), StoreError> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match free_bytes(dir) {
        Some(free) if free < PROBE_HEADROOM => Err(StoreError::LowDisk {
            dir: dir.to_owned(),
            free,
            needed: PROBE_HEADROOM,
        }),
        _ => Ok(()),
    }
}

/// Bytes an unprivileged writer may still use under `dir` (`statvfs`'s `f_bavail`).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is a writable statvfs the call fills.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    stat.f_bavail.checked_mul(stat.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roomy_directory_passes_and_its_free_space_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|free| free > 0));
        check(&dir.path().join("bridge.db")).unwrap();
        // A bare file name lives in the working directory.
        check(Path::new("bridge.db")).unwrap();
    }

    #[test]
    fn a_directory_that_cannot_be_read_is_left_to_the_probe() {
        check(Path::new("/nonexistent-voicekit-bridge-dir/bridge.db")).unwrap();
    }
}
