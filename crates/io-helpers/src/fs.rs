//! Durable file creation: a new file and its directory entry both reach the disk.
//!
//! Creating a file and writing it is not enough to survive a power loss: the *name* lives in
//! the parent directory, which needs its own `fsync`.

use std::fs::File;
use std::path::Path;

use crate::{Error, Result};

/// Creates a new file at `path` for reading and writing (failing if it exists), syncs it, and
/// syncs its parent directory so the name survives a power loss.
pub fn create_new_durable(path: &Path) -> Result<File> {
    create_new_durable_with(path, |_| Ok(()))
}

/// [`create_new_durable`], running `prepare` on the new file before anything is synced (so
/// `OsFile::create_new` holds its lock before the name becomes durable).
pub fn create_new_durable_with(
    path: &Path,
    prepare: impl FnOnce(&File) -> Result<()>,
) -> Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| Error::File { action: "create", path: path.to_owned(), source })?;
    prepare(&file)?;
    file.sync_all().map_err(|source| Error::File {
        action: "sync",
        path: path.to_owned(),
        source,
    })?;
    sync_parent_dir(path)?;
    Ok(file)
}

/// Syncs the directory holding `path`, making creations, renames and removals in it durable.
pub fn sync_parent_dir(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(parent)
}

/// Syncs the directory `dir` itself.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let handle = File::open(dir).map_err(|source| Error::File {
        action: "open the directory",
        path: dir.to_owned(),
        source,
    })?;
    handle.sync_all().map_err(|source| Error::File {
        action: "sync the directory",
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.bob");
        create_new_durable(&path).unwrap();
        assert!(path.exists());
        let err = create_new_durable(&path).unwrap_err();
        assert!(matches!(&err, Error::File { action: "create", .. }), "{err}");
        assert!(err.to_string().contains("store.bob"));
    }

    #[test]
    fn syncing_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = sync_dir(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, Error::File { .. }));
        sync_parent_dir(Path::new("relative-name")).unwrap();
    }
}
