//! Turns the `SIGBUS` of a read through a memory map into a read error.
//!
//! A read through a file's memory map that touches a page the system cannot supply (a device
//! read error while the page is brought in, or a page past the end of a file that another
//! process truncated, ignoring the file's lock) raises `SIGBUS`, which kills the process by
//! default. LMDB, and every store that reads through a map, accepts that; bob maps its reads by
//! default, so it must not:
//!
//! - every mapping reads go through is registered here: its address range and a `faulted`
//!   flag ([`register`]; a mapping that cannot be registered is not used, reads then take
//!   `pread`);
//! - the first registration installs a `SIGBUS` handler, once per process. The handler it
//!   replaces is kept and called for every `SIGBUS` that is not a fault inside a registered
//!   mapping (Rust's own, which reports stack overflows, or the application's);
//! - for a fault (`BUS_ADRERR`) inside a registered mapping, the handler sets that mapping's
//!   flag, puts a page of zeros in place of the faulting page (an anonymous `mmap` with
//!   `MAP_FIXED`) and returns: the interrupted copy finishes, reading zeros there;
//! - every read through a mapping checks the flag after its copy ([`Registration::faulted`]).
//!   Set, the copy is thrown away and the read is done again with `pread`, which returns the
//!   device's error, a short read past a truncated end, or the bytes if the error has passed;
//!   and the mapping is made again (the zero page goes with the old one).
//!
//! A reader that copies a zero page another thread's fault put there sees the flag too: the
//! handler sets the flag before the `mmap` system call that maps the page; that call takes
//! and releases the process's memory-map lock, and another reader reaches the new page only
//! through a page fault of its own, which takes that lock after it; so the flag's store comes
//! before the reader's copy, and the reader's acquire fence keeps its copy's loads before its
//! load of the flag.
//!
//! Tested by truncating a mapped file from another handle while threads read it
//! (`tests/it/os_file.rs`): reads return the bytes or an error, and the process lives; a
//! `SIGBUS` outside bob's mappings ends as it would without the guard (a fault kills the
//! process; a signal another process sent goes to the handler that was there before, and
//! bob's handler stays in place after it).
//!
//! What is not contained:
//! - a fault in a thread that blocks `SIGBUS` (Linux then kills the process: no handler runs);
//! - a hardware memory error in a cached page (`BUS_MCEERR_AR`), passed on as any other;
//! - a fault the handler cannot cover (its `mmap` refused, e.g. at the limit of mappings);
//! - an application handler installed *after* bob's: it replaces bob's. bob notices at its next
//!   mapping (made only while its handler is in place; reads of a file it could not map use
//!   `pread`), but mappings made before then are no longer guarded. Installed *before*, it is
//!   called for every `SIGBUS` that is not bob's.
//!
//! And what a mapping reads that `pread` would refuse: a file truncated behind the lock to a
//! length inside a page reads as zeros up to that page's end (the kernel zeroes the tail of a
//! file's last page; no fault), where `pread` stops at the end. Above this layer the checksums
//! report it as damage. A page that keeps failing (a bad block) costs a fault and a new mapping
//! at each read of it.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

/// How many mappings can be registered at once (each open store file with mapped reads holds
/// one; a mapping made past this many is dropped at once, and its reads take `pread`).
const SLOTS: usize = 256;

/// A slot's state word: its kind in the low two bits, and above them a generation that every
/// change of kind advances, so the handler can tell a slot it read whole from one that changed
/// while it read (a sequence lock).
const KIND: u64 = 0b11;
const FREE: u64 = 0;
const CLAIMED: u64 = 1;
const LIVE: u64 = 2;

/// `state` moved on to `kind`, its generation advanced.
fn next(state: u64, kind: u64) -> u64 {
    ((state & !KIND).wrapping_add(KIND + 1)) | kind
}

/// One registered mapping. Only atomics: the signal handler reads it.
struct Slot {
    state: AtomicU64,
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Self {
            state: AtomicU64::new(FREE),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            faulted: AtomicBool::new(false),
        }
    }
}

static REGISTRY: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// The system's page size, set before the handler is installed.
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// Faults contained since the process started.
static CONTAINED: AtomicU64 = AtomicU64::new(0);

/// How many reads through bob's memory maps faulted in this process (a device read error, or a
/// page past the end of a file another process truncated behind the lock) and were contained:
/// each was read again with `pread`, which returned the error or, if it had passed, the bytes.
/// A diagnostic: a count above 0 means the device, or another process, misbehaved.
pub fn mapped_read_faults() -> u64 {
    CONTAINED.load(Ordering::Relaxed)
}

/// The `SIGBUS` action that was in place when bob's handler was installed.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A mapping's place in the registry; dropping it lets the slot go. Drop it before the
/// mapping is unmapped, once nothing reads through it: a registered range must always be
/// bob's mapping.
#[derive(Debug)]
pub(crate) struct Registration {
    index: usize,
    /// The slot's state word while this registration holds it.
    live: u64,
}

impl Registration {
    /// Whether a read through this mapping faulted since it was registered: a copy made
    /// before this returned `false` holds the file's bytes (or bytes a write changed under it,
    /// as any read racing a write may), a copy made before it returned `true` may hold
    /// zeros in place of a page the system could not supply.
    pub(crate) fn faulted(&self) -> bool {
        // The copy's loads come before the flag's (an acquire fence orders earlier loads
        // before later ones; on x86 it costs nothing, loads are not reordered there).
        fence(Ordering::Acquire);
        REGISTRY[self.index].faulted.load(Ordering::Relaxed)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        REGISTRY[self.index].state.store(next(self.live, FREE), Ordering::Release);
    }
}

/// Registers the mapping of `len` bytes at `start` (page-aligned, as `mmap` returns it), the
/// handler installed first if it is not yet; `None` if the handler cannot be installed, is no
/// longer the one in place (the application installed its own since), or every slot is taken:
/// the mapping must then not be read through.
pub(crate) fn register(start: *const u8, len: usize) -> Option<Registration> {
    if !installed() || !still_installed() {
        return None;
    }
    let start = start as usize;
    let end = start.checked_add(len)?;
    for (index, slot) in REGISTRY.iter().enumerate() {
        let state = slot.state.load(Ordering::Relaxed);
        if state & KIND != FREE {
            continue;
        }
        let claimed = next(state, CLAIMED);
        if slot.state.compare_exchange(state, claimed, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            // The claim is seen before the new range (a sequence lock's writer).
            fence(Ordering::Release);
            slot.start.store(start, Ordering::Relaxed);
            slot.end.store(end, Ordering::Relaxed);
            slot.faulted.store(false, Ordering::Relaxed);
            let live = next(claimed, LIVE);
            slot.state.store(live, Ordering::Release);
            return Some(Registration { index, live });
        }
    }
    None
}

/// bob's action for `SIGBUS`.
fn action() -> libc::sigaction {
    // SAFETY: all-zero is a valid `sigaction` (no handler, no flags); `sigemptyset` only
    // writes the mask it is given.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        action
    }
}

/// Whether bob's handler is the one in place for `SIGBUS` now.
fn still_installed() -> bool {
    // SAFETY: `sigaction` with no new action only writes the struct passed.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == on_sigbus as *const () as libc::sighandler_t
    }
}

/// Installs the handler, once; whether it is installed.
fn installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: `sysconf` has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        match usize::try_from(page) {
            Ok(page) if page.is_power_of_two() => PAGE.store(page, Ordering::Relaxed),
            _ => return false,
        }
        // SAFETY: `sigaction` reads and writes the two structs passed, which are valid and
        // initialised (all-zero is a valid `sigaction`). The handler installed is `on_sigbus`,
        // an `extern "C"` function of the `SA_SIGINFO` signature, which does only what a
        // signal handler may (atomics, and the system calls `mmap`, `sigaction` and `raise`,
        // besides calling the previous handler); `PREVIOUS` is set before it is installed.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(old);
            libc::sigaction(libc::SIGBUS, &action(), std::ptr::null_mut()) == 0
        }
    })
}

/// The handler: a fault inside a registered mapping is contained; anything else goes to the
/// handler that was there before.
extern "C" fn on_sigbus(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to a handler installed with `SA_SIGINFO`;
    // `si_addr` is the field a `SIGBUS` fills.
    let (code, address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code == libc::BUS_ADRERR && contain(address) {
        return;
    }
    // SAFETY: the arguments are the ones this handler was called with.
    unsafe { forward(signal, code, info, context) }
}

/// If `address` lies in a registered mapping: flags it and maps a page of zeros over the
/// faulting page, so the faulting read can finish; whether it did.
fn contain(address: usize) -> bool {
    let page = PAGE.load(Ordering::Relaxed);
    for slot in &REGISTRY {
        let state = slot.state.load(Ordering::Acquire);
        if state & KIND != LIVE {
            continue;
        }
        let (start, end) = (slot.start.load(Ordering::Relaxed), slot.end.load(Ordering::Relaxed));
        // The range read belongs to the registration seen only if the state did not change
        // meanwhile (a slot freed and claimed again moved on a generation).
        fence(Ordering::Acquire);
        if slot.state.load(Ordering::Relaxed) != state || address < start || address >= end {
            continue;
        }
        slot.faulted.store(true, Ordering::SeqCst);
        let at = address & !(page - 1);
        // SAFETY: `at..at + page` lies inside a live registered mapping (registered ranges are
        // page-aligned mappings of bob's, unregistered before they are unmapped and only once
        // nothing reads them), a read-only mapping bob reads only by copying out of it and
        // checking this slot's flag afterwards, so replacing one of its pages with zeros
        // changes no memory anything else relies on. `mmap` is a plain system call (POSIX
        // does not list it as async-signal-safe; on Linux it is the system call alone).
        let mapped = unsafe {
            libc::mmap(
                at as *mut c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return false;
        }
        CONTAINED.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    false
}

/// Hands a `SIGBUS` that is not bob's to the action that was in place before bob's handler:
/// its handler, or the default (the process dies: for a fault, when the faulting instruction
/// runs again; for a signal sent by a process, when the handler returns and it is delivered
/// again), or nothing (ignored, if it was sent by a process).
///
/// # Safety
/// The arguments are those of the handler's call.
unsafe fn forward(signal: c_int, code: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // A fault of the interrupted instruction (it runs again when the handler returns), or
    // anything else: a signal a process sent (`SI_USER`, `SI_TKILL`, ...), or the kernel's
    // asynchronous report of memory poisoned in the background (`BUS_MCEERR_AO`).
    let synchronous = matches!(
        code,
        libc::BUS_ADRALN | libc::BUS_ADRERR | libc::BUS_OBJERR | libc::BUS_MCEERR_AR
    );
    let sent = !synchronous;
    let Some(previous) = PREVIOUS.get() else {
        return restore_default(signal, sent);
    };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_IGN && sent {
        return;
    }
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return restore_default(signal, sent);
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: an `SA_SIGINFO` handler has this signature; it is called with the arguments
        // the kernel gave this one.
        let call: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        call(signal, info, context);
    } else {
        // SAFETY: a handler without `SA_SIGINFO` takes the signal number alone.
        let call: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
        call(signal);
    }
    if sent {
        reinstall_after(signal);
    }
}

/// After the previous handler returned from a signal that was not a fault: the process lives
/// on, but that handler may have put the default action back (Rust's does, and returns), and
/// a later fault in a mapping would then kill the process; so bob's action goes back, but
/// only if the action now is the default and no `SIGBUS` is pending. A handler that chose
/// another action keeps it, and one that put the default back and sent the signal again
/// (a crash reporter does, to die once it has reported) gets its way: the pending signal
/// meets the default action. (After a fault nothing is put back: the faulting instruction
/// runs again and must meet the action the previous handler chose.)
fn reinstall_after(signal: c_int) {
    // SAFETY: `sigaction` (no new action), `sigpending` and `sigismember` only write or read
    // the structs passed, which are valid; installing bob's action is what `installed` did.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signal, std::ptr::null(), &mut current) != 0
            || current.sa_sigaction != libc::SIG_DFL
        {
            return;
        }
        let mut pending: libc::sigset_t = std::mem::zeroed();
        if libc::sigpending(&mut pending) != 0 || libc::sigismember(&pending, signal) != 0 {
            return;
        }
        libc::sigaction(signal, &action(), std::ptr::null_mut());
    }
}

/// Puts the default action back, and for a signal a process sent, sends it again (delivered,
/// and deadly, once the handler returns).
fn restore_default(signal: c_int, sent: bool) {
    // SAFETY: a zeroed `sigaction` with `SIG_DFL` is the default action; `sigaction` and
    // `raise` are async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(signal, &action, std::ptr::null_mut());
        if sent {
            libc::raise(signal);
        }
    }
}
