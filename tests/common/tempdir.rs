//! The one scratch directory of the tests.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ringcast::{binary, SPAWN};

/// A fresh directory under the temporary directory, readable by every user
/// (a test may run ringcast as another user), removed with all it holds when
/// dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `ringcast-test-PID-TAG-N` in the temporary directory.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ringcast-test-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path in the directory (not created).
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Write `contents` to `name` in the directory; return its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Make a FIFO `name` in the directory; return its path.
    pub fn mkfifo(&self, name: &str) -> PathBuf {
        let path = self.join(name);
        let c = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call;
        // mkfifo only reads it.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(
            rc,
            0,
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        path
    }

    /// Copy the ringcast binary here as `name` (mode 0755); return its path.
    /// No process is started while it is written: a child forked meanwhile
    /// would hold the file open until it execs, and exec of the copy would
    /// fail with ETXTBSY.
    pub fn copy_binary(&self, name: &str) -> PathBuf {
        let dest = self.join(name);
        let _no_fork = SPAWN.write().unwrap_or_else(|e| e.into_inner());
        fs::copy(binary(), &dest).expect("copy the ringcast binary");
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).expect("chmod binary");
        dest
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
