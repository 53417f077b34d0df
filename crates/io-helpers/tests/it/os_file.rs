//! `OsFile`: one owner per file, enforced by an exclusive `flock`.

use std::path::Path;

use bob_io_helpers::{Error, FileBackend, OsFile};

/// Asserts that `path` cannot be opened while `owner` lives, and can once it is dropped.
fn assert_refused_until_dropped<T>(path: &Path, owner: T) {
    assert!(matches!(OsFile::open(path), Err(Error::Locked { .. })));
    drop(owner);
    OsFile::open(path).unwrap();
}

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
    assert_refused_until_dropped(&path, OsFile::open(&path).unwrap());
}

/// `create_new` locks the file it creates: an open while the creator lives is refused.
#[test]
fn regression_open_of_a_new_file_is_refused_while_its_creator_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    assert_refused_until_dropped(&path, OsFile::create_new(&path).unwrap());
}

#[test]
fn the_lock_stays_with_the_file_taken_out_of_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    assert_refused_until_dropped(&path, OsFile::create_new(&path).unwrap().into_inner());
}

/// The bench harness's drop-and-reopen failed with `Locked` while another thread ran `sync`:
/// the child held a copy of the dropped handle's descriptor, and so its lock, until its
/// `exec`. Open now waits out such a window (up to 500 ms) instead of refusing.
#[test]
fn regression_a_reopen_while_other_threads_start_processes_is_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    std::fs::write(&path, b"bob").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let failure = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::process::Command::new("true").status();
            }
        });
        let failure = (0..1_000).find_map(|round| match OsFile::open(&path) {
            Ok(owner) => {
                drop(owner);
                None
            }
            Err(e) => Some(format!("round {round}: {e}")),
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        failure
    });
    assert_eq!(failure, None);
}

/// An owner that puts a new file in its file's place (a compaction's copy, renamed over it)
/// and then lets the old one go: an opener waiting for the lock meanwhile ends up with the
/// new file, never the old one no path leads to (it would read a state the log no longer
/// matches).
#[test]
fn an_open_waiting_for_a_file_replaced_under_it_gets_the_new_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    let copy = dir.path().join("store.bob.compact");
    for _ in 0..20 {
        std::fs::write(&path, b"old").unwrap();
        let owner = OsFile::open(&path).unwrap();
        let opened = std::thread::scope(|scope| {
            let opener = scope.spawn(|| OsFile::open(&path));
            std::thread::sleep(std::time::Duration::from_millis(2));
            std::fs::write(&copy, b"new").unwrap();
            std::fs::rename(&copy, &path).unwrap();
            drop(owner);
            opener.join().unwrap()
        });
        let file = opened.unwrap();
        let mut read = [0u8; 3];
        file.read_at(&mut read, 0).unwrap();
        assert_eq!(&read, b"new");
        let named = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(file.file().metadata().unwrap().ino(), named);
    }
}

/// The byte the mapped-read tests keep at `offset`.
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

fn patterned(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(pattern).collect()
}

/// Reads through the memory map see what `pwrite` wrote (one page cache), cover the file's
/// length as it changes through the handle, fall back to `pread` past the mapping, and fail
/// past the end of the file like `pread`.
#[test]
fn mapped_reads_across_length_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = OsFile::create_new(&dir.path().join("m")).unwrap();
    file.write_at(&patterned(0, 100_000), 0).unwrap();
    assert_eq!(file.mapped_len(), 0, "off by default");
    file.map_reads(true);
    assert_eq!(file.mapped_len(), 100_000);
    let mut buf = vec![0u8; 4096];
    file.read_at(&mut buf, 12_345).unwrap();
    assert_eq!(buf, patterned(12_345, 4096));
    // A write after mapping is seen through the mapping.
    file.write_at(&[0xAB; 10], 50_000).unwrap();
    let mut small = [0u8; 10];
    file.read_at(&mut small, 50_000).unwrap();
    assert_eq!(small, [0xAB; 10]);
    file.write_at(&patterned(50_000, 10), 50_000).unwrap();
    // Grown by a write: the mapping (larger than the file) reaches it at once.
    file.write_at(&patterned(100_000, 20_000), 100_000).unwrap();
    assert_eq!(file.mapped_len(), 120_000);
    file.read_at(&mut buf, 99_000).unwrap();
    assert_eq!(buf, patterned(99_000, 4096));
    // Grown by `allocate`.
    file.allocate(200_000).unwrap();
    assert_eq!(file.mapped_len(), 200_000);
    file.read_at(&mut buf, 110_000).unwrap();
    assert_eq!(buf, patterned(110_000, 4096));
    file.read_at(&mut buf, 150_000).unwrap();
    assert_eq!(buf, vec![0u8; 4096]);
    // Shrunk: a read past the end fails as with `pread` (never faults).
    file.set_len(30_000).unwrap();
    assert_eq!(file.mapped_len(), 30_000);
    assert!(file.read_at(&mut buf, 29_000).is_err());
    file.read_at(&mut buf, 20_000).unwrap();
    assert_eq!(buf, patterned(20_000, 4096));
    // Past the first mapping (1 GiB of address space): mapped again, larger.
    file.set_len(3 << 30).unwrap();
    assert_eq!(file.mapped_len(), 3 << 30);
    file.write_at(&[5u8; 4096], (3 << 30) - 4096).unwrap();
    file.read_at(&mut buf, (3 << 30) - 4096).unwrap();
    assert_eq!(buf, vec![5u8; 4096]);
    file.set_len(30_000).unwrap();
    // Long reads use `pread`.
    file.write_at(&patterned(0, 300_000), 0).unwrap();
    let mut long = vec![0u8; 200_000];
    file.read_at(&mut long, 1000).unwrap();
    assert_eq!(long, patterned(1000, 200_000));
    file.map_reads(false);
    assert_eq!(file.mapped_len(), 0);
    file.read_at(&mut buf, 20_000).unwrap();
    assert_eq!(buf, patterned(20_000, 4096));
}

/// Readers copy out of the mapping while another thread shrinks and grows the file again
/// and again: no read faults (a read of a mapped page past the end would kill the process),
/// and every read returns the file's bytes or an error.
#[test]
fn mapped_reads_while_truncating() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const LEN: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(OsFile::create_new(&dir.path().join("t")).unwrap());
    file.write_at(&patterned(0, LEN as usize), 0).unwrap();
    file.map_reads(true);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2u64)
        .map(|t| {
            let (file, stop) = (file.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut state, mut ok, mut buf) = (t + 1, 0u64, vec![0u8; 4096]);
                while !stop.load(Ordering::Relaxed) {
                    state =
                        state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let at = (state >> 16) % (LEN - 4096);
                    if file.read_at(&mut buf, at).is_ok() {
                        // Bytes regrown by `allocate` read as zeros until rewritten.
                        let whole = buf == patterned(at, 4096);
                        assert!(whole || buf.contains(&0), "wrong bytes at {at}");
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    for round in 0..200u64 {
        let cut = 4096 + (round * 7919 * 4096) % (LEN - 8192);
        file.set_len(cut).unwrap();
        file.allocate(LEN).unwrap();
        file.write_at(&patterned(cut, (LEN - cut) as usize), cut).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
}

/// `open_or_create` makes a missing file (empty, locked), opens an existing one with its
/// bytes, and is refused, as `open` is, while another handle owns the file.
#[test]
fn open_or_create_creates_a_missing_file_and_opens_an_existing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    let created = OsFile::open_or_create(&path).unwrap();
    assert_eq!(created.len().unwrap(), 0);
    assert!(path.exists());
    assert!(matches!(OsFile::open_or_create(&path), Err(Error::Locked { .. })));
    created.write_at(b"bob", 0).unwrap();
    drop(created);
    let opened = OsFile::open_or_create(&path).unwrap();
    let mut buf = [0u8; 3];
    opened.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"bob");
    assert_refused_until_dropped(&path, opened);
    // A path whose directory is missing is an error naming the path, not a panic.
    let err = OsFile::open_or_create(&dir.path().join("no/such/dir.bob")).unwrap_err();
    assert!(err.to_string().contains("dir.bob"), "{err}");
    // A dangling symbolic link: not found, said at once.
    let link = dir.path().join("link.bob");
    std::os::unix::fs::symlink(dir.path().join("gone.bob"), &link).unwrap();
    let err = OsFile::open_or_create(&link).unwrap_err();
    assert!(
        matches!(&err, Error::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
}

/// Another process (here, a handle that ignores the lock) truncates a mapped file while two
/// threads read it: a read past the new end faults (`SIGBUS`), which the fault guard contains.
/// Every read returns the file's bytes or an error, never the zeros the guard maps over a
/// faulting page, and the process lives; reads below the new end keep working.
#[test]
fn a_truncation_behind_the_lock_is_an_error_not_a_crash() {
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const LEN: u64 = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let file = Arc::new(OsFile::create_new(&path).unwrap());
    file.write_at(&patterned(0, LEN as usize), 0).unwrap();
    file.map_reads(true);
    let faults_before = bob_io_helpers::mapped_read_faults();
    // One read maps the pages below 1 MiB, then the file is cut to 64 KiB behind the lock.
    let intruder = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut buf = vec![0u8; 4096];
    file.read_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(buf, patterned(1 << 20, 4096));
    intruder.set_len(64 << 10).unwrap();
    let err = file.read_at(&mut buf, 1 << 20).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert!(bob_io_helpers::mapped_read_faults() > faults_before, "the read went through the map");
    file.read_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, patterned(4096, 4096));
    // Grown again behind the lock: reads past the length this handle knows take `pread`.
    intruder.write_all_at(&patterned(64 << 10, (LEN - (64 << 10)) as usize), 64 << 10).unwrap();
    file.read_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(buf, patterned(1 << 20, 4096));

    // Readers race a truncation from the tail, a page at a time, behind the lock.
    file.set_len(0).unwrap();
    file.write_at(&patterned(0, LEN as usize), 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2u64)
        .map(|t| {
            let (file, stop, failed) = (file.clone(), stop.clone(), failed.clone());
            std::thread::spawn(move || {
                let (mut rng, mut ok, mut buf) = (fastrand::Rng::with_seed(t), 0u64, vec![0; 4000]);
                while !stop.load(Ordering::Relaxed) {
                    let at = rng.u64(..LEN - 4000);
                    match file.read_at(&mut buf, at) {
                        Ok(()) => {
                            assert!(buf == patterned(at, 4000), "wrong bytes at {at}");
                            ok += 1;
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                ok
            })
        })
        .collect();
    let mut len = LEN;
    while len > 64 << 10 {
        len -= 16 << 10;
        intruder.set_len(len).unwrap();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0 && failed.load(Ordering::Relaxed) > 0);
}

/// The fault guard keeps to bob's own mappings: a `SIGBUS` anywhere else (a fault in a mapping
/// of the application's, or the signal sent by a process) ends as it would without bob's
/// guard: the fault kills the process, and the sent signal goes to the handler that was there
/// before (Rust's own, which lets a sent `SIGBUS` pass), after which bob's guard still
/// contains a fault in its mapping. Run in child processes (this test binary, the test
/// below), with the guard installed and without.
#[test]
fn a_sigbus_outside_bob_mappings_ends_as_without_the_guard() {
    use std::os::unix::process::ExitStatusExt;
    let run = |how: &str, guard: bool| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "os_file::sigbus_child", "--nocapture", "--test-threads=1"])
            .env("BOB_SIGBUS_CHILD", how)
            .env("BOB_SIGBUS_GUARD", if guard { "1" } else { "0" })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
    };
    let fault = run("fault", true);
    assert_eq!(fault.signal(), Some(libc::SIGBUS), "{fault:?}");
    assert_eq!(run("fault", false).signal(), Some(libc::SIGBUS));
    let (with, without) = (run("raise", true), run("raise", false));
    assert_eq!((with.code(), with.signal()), (without.code(), without.signal()));
    // A crash reporter's handler, installed first, puts the default action back and sends the
    // signal again to die once it has reported: it dies, guard or not (the guard put its own
    // handler back after such a signal once, and the process went round forever).
    for guard in [true, false] {
        let status = run("reporter", guard);
        assert_eq!(status.signal(), Some(libc::SIGBUS), "guard {guard}: {status:?}");
    }
}

/// A crash reporter's `SIGBUS` handler: the default action back, the signal sent again.
extern "C" fn reporter(signal: std::ffi::c_int, _: *mut libc::siginfo_t, _: *mut std::ffi::c_void) {
    // SAFETY: `sigaction` with a zeroed action (the default) and `raise` are async-signal-safe
    // and take valid arguments.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(signal, &action, std::ptr::null_mut());
        libc::raise(signal);
    }
}

/// The child of the test above (does nothing unless `BOB_SIGBUS_CHILD` is set): installs
/// bob's guard through a mapped read, then takes a `SIGBUS` outside bob's mappings.
#[test]
fn sigbus_child() {
    let Ok(how) = std::env::var("BOB_SIGBUS_CHILD") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = OsFile::create_new(&dir.path().join("bob")).unwrap();
    file.write_at(&[1u8; 8192], 0).unwrap();
    let guard = std::env::var("BOB_SIGBUS_GUARD").is_ok_and(|g| g == "1");
    if how == "reporter" {
        // SAFETY: installs `reporter`, an `extern "C"` handler of the `SA_SIGINFO` signature.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = reporter as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    }
    if guard {
        file.map_reads(true);
        let mut buf = [0u8; 16];
        file.read_at(&mut buf, 0).unwrap();
        assert!(file.mapped_len() > 0);
    }
    if how == "reporter" {
        // SAFETY: `raise` has no preconditions.
        unsafe { libc::raise(libc::SIGBUS) };
        std::process::exit(5); // not reached: the reporter's second signal kills the process
    }
    if how == "raise" {
        // SAFETY: `raise` has no preconditions.
        unsafe { libc::raise(libc::SIGBUS) };
        if guard {
            // The guard outlived the signal: a fault in bob's mapping is still contained.
            file.write_at(&[1u8; 1 << 20], 0).unwrap();
            let mut buf = [0u8; 16];
            file.read_at(&mut buf, 512 << 10).unwrap();
            let intruder =
                std::fs::OpenOptions::new().write(true).open(dir.path().join("bob")).unwrap();
            intruder.set_len(4096).unwrap();
            let err = file.read_at(&mut buf, 512 << 10).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        }
        std::process::exit(3);
    } else {
        let theirs = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("theirs"))
            .unwrap();
        theirs.set_len(1 << 20).unwrap();
        // SAFETY: the test's own file; the read below faults on purpose (past the end after
        // the truncation), which is what this child is for.
        let map = unsafe { memmap2::Mmap::map(&theirs) }.unwrap();
        theirs.set_len(0).unwrap();
        std::hint::black_box(map[512 << 10]);
    }
    std::process::exit(4); // not reached: the fault kills the process
}

/// More mapped files than the fault guard has slots (256): the files past them are not mapped
/// (a mapping is read only while the guard covers it) and read through `pread`, each read
/// right; once the others are dropped, a file that grows is mapped again. In a child process
/// (the test below): taking every slot would leave the other tests of this binary, running
/// beside it, unmapped.
#[test]
fn files_past_the_guards_slots_read_through_pread() {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "os_file::slots_child", "--nocapture", "--test-threads=1"])
        .env("BOB_SLOTS_CHILD", "1")
        .status()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// The child of the test above (does nothing unless `BOB_SLOTS_CHILD` is set).
#[test]
fn slots_child() {
    if std::env::var("BOB_SLOTS_CHILD").is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<OsFile> = (0..300u64)
        .map(|i| {
            let file = OsFile::create_new(&dir.path().join(format!("f{i}"))).unwrap();
            file.write_at(&patterned(i, 8192), 0).unwrap();
            file.map_reads(true);
            file
        })
        .collect();
    let unmapped = files.iter().filter(|f| f.mapped_len() == 0).count();
    assert!(unmapped >= 300 - 256, "{unmapped} of 300 files unmapped");
    let mut buf = vec![0u8; 4096];
    for (i, file) in files.iter().enumerate() {
        file.read_at(&mut buf, 1000).unwrap();
        assert_eq!(buf, patterned(i as u64 + 1000, 4096), "file {i}");
    }
    let mut files = files;
    let last = files.pop().unwrap();
    let last_unmapped = last.mapped_len() == 0;
    drop(files);
    assert!(last_unmapped, "the last of 300 files found no slot");
    // The other files are gone: growth past a doubling maps it again.
    last.write_at(&patterned(299 + 8192, 3 * 8192), 8192).unwrap();
    assert!(last.mapped_len() > 0, "mapped again once slots were free");
    last.read_at(&mut buf, 20_000).unwrap();
    assert_eq!(buf, patterned(299 + 20_000, 4096));
}

/// `will_need` is a hint: after the range's pages are dropped and hinted again (part of it
/// past the end of the file), plain and mapped reads return the file's bytes.
#[test]
fn a_hinted_range_reads_as_the_file_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    let bytes: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();
    let file = OsFile::open(&path).unwrap();
    for mapped in [false, true] {
        file.map_reads(mapped);
        file.drop_cache(0, bytes.len() as u64).unwrap();
        file.will_need(4096, 8192).unwrap();
        file.will_need(60 * 1024, 1 << 20).unwrap();
        let mut buf = vec![0; 8192];
        file.read_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, bytes[4096..12288], "mapped {mapped}");
        file.read_at(&mut buf[..4096], 60 * 1024).unwrap();
        assert_eq!(buf[..4096], bytes[60 * 1024..], "mapped {mapped}");
    }
}

/// Starting the writeback of a range (`sync_file_range`) changes no byte a read returns,
/// before or after a later write to the same pages and a sync; ranges past the end, empty
/// ones and offsets past what the system takes are accepted as hints.
#[test]
fn a_range_whose_writeback_started_reads_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    let file = OsFile::create_new(&path).unwrap();
    let mut bytes: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 13 % 251) as u8).collect();
    file.write_at(&bytes, 0).unwrap();
    file.start_writeback(0, 128 * 1024).unwrap();
    file.start_writeback(4096 + 17, 3 * 4096).unwrap();
    file.start_writeback(200 * 1024, 1 << 30).unwrap();
    file.start_writeback(0, 0).unwrap();
    file.start_writeback(u64::MAX - 10, 5).unwrap();
    // Pages under writeback written again.
    bytes[5000..9000].fill(0xAB);
    file.write_at(&bytes[5000..9000], 5000).unwrap();
    for mapped in [false, true] {
        file.map_reads(mapped);
        let mut buf = vec![0; bytes.len()];
        file.read_at(&mut buf, 0).unwrap();
        assert!(buf == bytes, "mapped {mapped}");
    }
    file.sync_data().unwrap();
    drop(file);
    assert!(std::fs::read(&path).unwrap() == bytes);
}

/// A hint longer than one call of the kernel reads (about the device's largest request:
/// 1.25 MiB with default settings, 8 MiB on the CI machine) is given a MiB at a time: after
/// the pages of a 24 MiB file are dropped and the whole file hinted, all of it is read into
/// the page cache (`fincore`, util-linux, counts the file's cached bytes; without it the
/// test has nothing to look with and says so).
#[test]
fn a_long_hinted_range_is_read_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.bob");
    let len = 24u64 << 20;
    std::fs::write(&path, vec![7u8; len as usize]).unwrap();
    let file = OsFile::open(&path).unwrap();
    file.sync_data().unwrap();
    let cached = || -> Option<u64> {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(&path)
            .output()
            .ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    file.drop_cache(0, len).unwrap();
    let Some(before) = cached() else {
        eprintln!("no fincore here: the cached bytes cannot be counted");
        return;
    };
    assert!(before < len, "the pages were not dropped ({before} bytes cached)");
    file.will_need(0, len).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cached() != Some(len) {
        assert!(std::time::Instant::now() < deadline, "{:?} of {len} bytes read ahead", cached());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
