//! Files only the server's user may read: the data directory (0700), the database and the
//! JWT secret (0600). Secrets are created atomically and never overwritten.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Create `dir` with mode 0700, or tighten an existing one to 0700 (its files hold the
/// database and the token secret).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    tighten(dir, 0o700)
}

/// Make an existing file (or directory) readable by its owner only: `mode` when it allows
/// more. A file that does not exist is left alone.
pub fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            tracing::info!(path = %path.display(), "restricting permissions to the owner");
            std::fs::set_permissions(path, Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create `path` (0600) holding `contents`, unless it exists. Written to a temporary file
/// first and linked into place, so a reader never sees it half-written and two processes
/// creating it at once agree on one content. `Ok(false)`: it existed already.
pub fn create_new(path: &Path, contents: &[u8]) -> io::Result<bool> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Create an empty file with mode 0600 when it does not exist (so SQLite, which gives its
/// `-wal` and `-shm` files the database file's mode, never makes them world-readable).
pub fn touch_private(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(path, 0o600),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_the_owners_only_and_secrets_are_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an existing directory is tightened");

        let secret = dir.join("jwt.secret");
        assert!(create_new(&secret, b"one").unwrap());
        assert!(!create_new(&secret, b"two").unwrap(), "a second creation finds the first");
        assert_eq!(std::fs::read(&secret).unwrap(), b"one");
        assert_eq!(mode(&secret), 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file is left");

        let db = dir.join("tradewire.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, Permissions::from_mode(0o644)).unwrap();
        touch_private(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
    }
}
