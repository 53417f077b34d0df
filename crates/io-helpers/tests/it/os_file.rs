//! `OsFile`: one owner per file, enforced by an exclusive `flock`.

use bob_io_helpers::{Error, OsFile};

/// Two handles on one file destroyed each other's commits: the second open now fails.
#[test]
fn regression_second_open_of_a_file_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    std::fs::write(&path, b"bob").unwrap();
    let _owner = OsFile::open(&path).unwrap();
    let err = OsFile::open(&path).unwrap_err();
    assert!(matches!(&err, Error::Locked { path: locked } if *locked == path), "{err}");
    let message = err.to_string();
    assert!(message.contains("store.bob"), "{message}");
    assert!(message.contains("one owner at a time"), "{message}");
    assert_eq!(err.into_io().kind(), std::io::ErrorKind::ResourceBusy);
}

#[test]
fn a_file_opens_again_once_its_owner_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    std::fs::write(&path, b"bob").unwrap();
    let owner = OsFile::open(&path).unwrap();
    assert!(matches!(OsFile::open(&path), Err(Error::Locked { .. })));
    drop(owner);
    let _next = OsFile::open(&path).unwrap();
}

/// `create_new` locks the file it creates: an open while the creator lives is refused.
#[test]
fn regression_open_of_a_new_file_is_refused_while_its_creator_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    let creator = OsFile::create_new(&path).unwrap();
    assert!(matches!(OsFile::open(&path), Err(Error::Locked { .. })));
    drop(creator);
    let _next = OsFile::open(&path).unwrap();
}

#[test]
fn the_lock_stays_with_the_file_taken_out_of_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    let file = OsFile::create_new(&path).unwrap().into_inner();
    assert!(matches!(OsFile::open(&path), Err(Error::Locked { .. })));
    drop(file);
    let _next = OsFile::open(&path).unwrap();
}
