//! Free-space checks for the low-disk reserve (`gateway.min_free_space` → `452 4.3.1` at MAIL
//! FROM). Only asks the filesystem; never writes.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// `true` when at least `reserve` bytes are free under `path` (reserve 0 always passes).
pub fn has_reserve(path: &Path, reserve: u64) -> io::Result<bool> {
    if reserve == 0 {
        return Ok(true);
    }
    Ok(free_space(path)? >= reserve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_a_temp_dir() {
        let d = tempfile::tempdir().unwrap();
        let free = free_space(d.path()).unwrap();
        assert!(free > 0);
        assert!(has_reserve(d.path(), 0).unwrap());
        assert!(has_reserve(d.path(), 1).unwrap());
        assert!(
            !has_reserve(d.path(), u64::MAX).unwrap(),
            "reserve above free space"
        );
    }

    #[test]
    fn missing_path_is_an_error() {
        assert!(free_space(Path::new("/nonexistent/cutover/x")).is_err());
    }
}
