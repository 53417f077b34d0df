//! `SimDisk`: an in-memory `FileBackend` that injects faults and simulates crashes.
//!
//! It keeps two images of the file: the *live* one (what reads see, what a process crash
//! leaves) and the *durable* one (what a sync has made safe), plus every write and length change
//! issued since the last sync. [`SimDisk::crash_image`] turns that into the file a restart
//! would find:
//! - [`CrashMode::ProcessCrash`]: the live image; the kernel still had every write.
//! - [`CrashMode::PowerLoss`]: the durable image, with each [`PAGE_BYTES`] page that a pending
//!   operation touched independently *new* (its live content), *old* (its durable content),
//!   zeroed or garbage, as the seed picks. The unit of damage is the whole page, the bytes no
//!   write changed included: the kernel writes back whole 4 KiB pages, and a drive may rewrite
//!   a whole 4 KiB sector. Each pending length change (a `set_len`, or a write that extended
//!   the file) survives or not by a coin flip, in order; pages past the resulting length do not
//!   exist.
//!
//! A write touches the pages of its bytes and, if it starts past the end of the file, those of
//! the gap it fills with zeros; a `set_len` touches the pages between the old and the new
//! length (the page holding the old or new end is rewritten too). So a power-loss image differs
//! from the durable image only in pages some pending operation touched, and in length.
//!
//! A successful sync makes durable the live content of every touched page, and the live length.
//! A failed sync (any injected fault but [`FaultKind::Crash`]) drops the pending operations
//! without making them durable, as Linux does when `fdatasync` fails with EIO: the kernel marks
//! the dirty pages clean, so they may never reach the disk. Their pages keep their durable
//! content through later syncs and power losses until a later write touches them again (then
//! the whole live page, as the page cache holds it, is what the next sync writes), while the
//! live image still shows the new bytes, as the page cache would. A [`FaultKind::Crash`] is the
//! machine going down instead: the sync does nothing, and the pending operations stay in flight
//! for a power-loss image to tear.
//!
//! Every operation is counted. A [`FaultPlan`] fails the k-th operation of a kind, once or
//! from then on; a space limit makes growth past it fail with `StorageFull`. A crash sweep runs
//! a workload once to count its operations, then once per k with a sticky crash at k (nothing
//! after k reaches the disk) and checks the crash images.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, IoSlice};
use std::ops::Range;

use crate::FileBackend;
use crate::sync::{Arc, Mutex};

/// Page size of the power-loss model: the unit in which unsynced writes are damaged.
pub const PAGE_BYTES: u64 = 4096;

/// Kinds of backend operation, for counting and for aiming faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `read_at`.
    Read,
    /// `write_at` or `write_vectored_at` (one operation each).
    Write,
    /// `set_len`.
    SetLen,
    /// `sync_data` or `sync_all`.
    Sync,
    /// `len`.
    Len,
}

/// Which operations a fault plan counts and fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpFilter {
    /// Every operation.
    Any,
    /// Writes, length changes and syncs: the operations that change what a crash leaves.
    Mutating,
    /// One kind only.
    Only(OpKind),
}

impl OpFilter {
    fn matches(self, kind: OpKind) -> bool {
        match self {
            OpFilter::Any => true,
            OpFilter::Mutating => matches!(kind, OpKind::Write | OpKind::SetLen | OpKind::Sync),
            OpFilter::Only(only) => only == kind,
        }
    }
}

/// What an injected fault looks like to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A plain I/O error (`ErrorKind::Other`); nothing is done.
    Io,
    /// `ErrorKind::StorageFull`; nothing is done.
    StorageFull,
    /// On a write: the first half of the bytes are written, then an I/O error is returned.
    /// On other operations, the same as `Io`.
    TornWrite,
    /// The machine is down: an I/O error, and nothing is done. Unlike `Io`, a failed sync
    /// leaves the pending operations in flight, so a power-loss image can still tear them;
    /// [`FaultPlan::crash_at`] uses it.
    Crash,
}

/// Whether a fault fires once or on every matching operation from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Only the k-th matching operation fails (a transient fault).
    Once,
    /// The k-th matching operation and every one after it fail (a dead disk, or a crash).
    Always,
}

/// Fail the `at`-th (0-based) operation matching `on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// Index, among operations matching `on`, of the first that fails.
    pub at: u64,
    /// Which operations are counted and failed.
    pub on: OpFilter,
    /// How the failure looks.
    pub kind: FaultKind,
    /// Once or from then on.
    pub repeat: Repeat,
}

impl FaultPlan {
    /// A crash at operation `at` (of any kind): it and everything after it fail, so the disk
    /// holds what the first `at` operations left.
    pub fn crash_at(at: u64) -> Self {
        Self { at, on: OpFilter::Any, kind: FaultKind::Crash, repeat: Repeat::Always }
    }
}

/// How the machine went down, for [`SimDisk::crash_image`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// The process died; the kernel kept every write.
    ProcessCrash,
    /// The power failed; each page touched since the last sync is new, old, zeroed or garbage
    /// as the seed decides.
    PowerLoss,
}

/// Operations issued so far, by kind (failed ones included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// `read_at` calls.
    pub reads: u64,
    /// `write_at` and `write_vectored_at` calls.
    pub writes: u64,
    /// `set_len` calls.
    pub set_lens: u64,
    /// `sync_data` and `sync_all` calls.
    pub syncs: u64,
    /// `len` calls.
    pub lens: u64,
}

impl OpCounts {
    /// All operations.
    pub fn total(&self) -> u64 {
        self.reads + self.writes + self.set_lens + self.syncs + self.lens
    }

    /// Operations matching `filter`.
    pub fn matching(&self, filter: OpFilter) -> u64 {
        [
            (OpKind::Read, self.reads),
            (OpKind::Write, self.writes),
            (OpKind::SetLen, self.set_lens),
            (OpKind::Sync, self.syncs),
            (OpKind::Len, self.lens),
        ]
        .iter()
        .filter(|(kind, _)| filter.matches(*kind))
        .map(|(_, n)| n)
        .sum()
    }

    fn bump(&mut self, kind: OpKind) {
        let slot = match kind {
            OpKind::Read => &mut self.reads,
            OpKind::Write => &mut self.writes,
            OpKind::SetLen => &mut self.set_lens,
            OpKind::Sync => &mut self.syncs,
            OpKind::Len => &mut self.lens,
        };
        *slot += 1;
    }
}

/// A write or length change issued since the last sync.
#[derive(Debug, Clone)]
struct Pending {
    /// Bytes whose content the operation changed: a write's range (from the old end of the
    /// file, if it started past it), or the span between a `set_len`'s old and new lengths.
    touched: Range<u64>,
    /// How the operation changed the file's length.
    len_change: LenChange,
}

#[derive(Debug, Clone, Copy)]
enum LenChange {
    /// A write inside the file.
    None,
    /// A write that ended past the end of the file, at this offset.
    Extend(u64),
    /// A `set_len` to this length.
    Set(u64),
}

#[derive(Debug, Default)]
struct State {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
    counts: OpCounts,
    fault: Option<FaultPlan>,
    space_limit: Option<u64>,
}

/// An in-memory, fault-injecting [`FileBackend`]; see the module docs.
///
/// Clones share one disk, so a test can keep a handle while a store owns another.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("SimDisk")
            .field("live_len", &state.live.len())
            .field("durable_len", &state.durable.len())
            .field("pending", &state.pending.len())
            .field("counts", &state.counts)
            .field("fault", &state.fault)
            .finish()
    }
}

fn io_len(len: usize) -> u64 {
    len as u64
}

fn to_index(offset: u64) -> io::Result<usize> {
    usize::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

fn apply_write(image: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset..end].copy_from_slice(data);
}

fn apply_set_len(image: &mut Vec<u8>, len: usize) {
    image.resize(len, 0);
}

impl Default for SimDisk {
    fn default() -> Self {
        Self::new()
    }
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::from_image(Vec::new())
    }

    /// A disk whose live and durable images are both `image`, as after a restart.
    pub fn from_image(image: Vec<u8>) -> Self {
        let state = State { durable: image.clone(), live: image, ..State::default() };
        Self { state: Arc::new(Mutex::new(state)) }
    }

    /// A disk of its own with this one's images and writes in flight (the page cache and the
    /// device as they are now, a failed sync's pages included), no fault armed and its
    /// counts from zero: to try several futures of one moment.
    pub fn fork(&self) -> Self {
        let state = self.state.lock();
        let copy = State {
            live: state.live.clone(),
            durable: state.durable.clone(),
            pending: state.pending.clone(),
            space_limit: state.space_limit,
            ..State::default()
        };
        Self { state: Arc::new(Mutex::new(copy)) }
    }

    /// Arms `plan`, replacing any earlier one. Counting is over all operations so far, so
    /// `FaultPlan { at: disk.op_counts().matching(on) + 2, .. }` fails the second one from now.
    pub fn set_fault(&self, plan: FaultPlan) {
        self.state.lock().fault = Some(plan);
    }

    /// Disarms any fault plan.
    pub fn clear_fault(&self) {
        self.state.lock().fault = None;
    }

    /// Makes any write or `set_len` that would grow the file past `limit` bytes fail with
    /// `StorageFull`; `None` removes the limit.
    pub fn set_space_limit(&self, limit: Option<u64>) {
        self.state.lock().space_limit = limit;
    }

    /// Operations issued so far.
    pub fn op_counts(&self) -> OpCounts {
        self.state.lock().counts
    }

    /// All operations issued so far; a crash sweep crashes at each index below this.
    pub fn ops(&self) -> u64 {
        self.op_counts().total()
    }

    /// A copy of what reads see now.
    pub fn live_image(&self) -> Vec<u8> {
        self.state.lock().live.clone()
    }

    /// A copy of what the last sync made durable.
    pub fn durable_image(&self) -> Vec<u8> {
        self.state.lock().durable.clone()
    }

    /// Writes and length changes issued since the last sync.
    pub fn pending_ops(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// The file a restart after a crash of kind `mode` would find; `seed` picks the tears.
    pub fn crash_image(&self, mode: CrashMode, seed: u64) -> Vec<u8> {
        let state = self.state.lock();
        match mode {
            CrashMode::ProcessCrash => state.live.clone(),
            CrashMode::PowerLoss => {
                power_loss_image(&state.live, &state.durable, &state.pending, seed)
            }
        }
    }

    /// A new handle on this disk as a process that replaces a crashed one finds it: the same
    /// bytes, and the writes the crashed process never synced still unsynced (a power loss
    /// later may still lose them, unless someone syncs). Counts and faults start afresh.
    pub fn after_process_crash(&self) -> SimDisk {
        let state = self.state.lock();
        let copy = State {
            live: state.live.clone(),
            durable: state.durable.clone(),
            pending: state.pending.clone(),
            ..State::default()
        };
        SimDisk { state: Arc::new(Mutex::new(copy)) }
    }

    /// A fresh disk holding [`crash_image`](Self::crash_image), as a restarted machine sees it.
    pub fn crashed(&self, mode: CrashMode, seed: u64) -> SimDisk {
        SimDisk::from_image(self.crash_image(mode, seed))
    }

    /// Counts an operation of `kind` and returns the injected fault due for it, if any.
    fn begin(&self, state: &mut State, kind: OpKind) -> Option<FaultKind> {
        let fault = state.fault.filter(|plan| plan.on.matches(kind)).and_then(|plan| {
            let index = state.counts.matching(plan.on);
            let due = match plan.repeat {
                Repeat::Once => index == plan.at,
                Repeat::Always => index >= plan.at,
            };
            due.then_some(plan.kind)
        });
        state.counts.bump(kind);
        fault
    }

    fn grow_check(state: &State, new_len: u64) -> io::Result<()> {
        match state.space_limit {
            Some(limit) if new_len > limit && new_len > io_len(state.live.len()) => {
                Err(io::Error::new(io::ErrorKind::StorageFull, "simulated disk is full"))
            }
            _ => Ok(()),
        }
    }

    fn write_locked(state: &mut State, data: &[u8], offset: u64) -> io::Result<()> {
        let start = to_index(offset)?;
        let end = offset
            .checked_add(io_len(data.len()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past u64::MAX"))?;
        to_index(end)?;
        Self::grow_check(state, end)?;
        let old_len = io_len(state.live.len());
        apply_write(&mut state.live, start, data);
        let len_change = if end > old_len { LenChange::Extend(end) } else { LenChange::None };
        state.pending.push(Pending { touched: offset.min(old_len)..end, len_change });
        Ok(())
    }

    fn write_inner(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        match self.begin(&mut state, OpKind::Write) {
            None => Self::write_locked(&mut state, data, offset),
            Some(FaultKind::TornWrite) => {
                let half = &data[..data.len() / 2];
                Self::write_locked(&mut state, half, offset)?;
                Err(fault_error(FaultKind::TornWrite))
            }
            Some(kind) => Err(fault_error(kind)),
        }
    }
}

fn fault_error(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::StorageFull => io::Error::new(io::ErrorKind::StorageFull, "injected: disk full"),
        FaultKind::Io | FaultKind::TornWrite => io::Error::other("injected I/O error"),
        FaultKind::Crash => io::Error::other("injected crash: the machine is down"),
    }
}

/// The pages holding any byte that `pending` touched.
fn touched_pages(pending: &[Pending]) -> BTreeSet<u64> {
    let mut pages = BTreeSet::new();
    for op in pending.iter().filter(|op| !op.touched.is_empty()) {
        pages.extend(op.touched.start / PAGE_BYTES..=(op.touched.end - 1) / PAGE_BYTES);
    }
    pages
}

/// The bytes of page `page` that lie in a file of `len` bytes (empty if none do).
fn page_range(page: u64, len: usize) -> Range<usize> {
    // Pages come from operations whose ends were checked to fit a usize when issued.
    let start = (page * PAGE_BYTES) as usize;
    let end = ((page + 1) * PAGE_BYTES) as usize;
    start.min(len)..end.min(len)
}

/// What a power loss leaves of one touched page.
#[derive(Debug, Clone, Copy)]
enum PageFate {
    /// Its live content: every pending write to it landed.
    New,
    /// Its durable content: none did.
    Old,
    /// All zeros.
    Zeroed,
    /// Random bytes.
    Garbage,
}

impl PageFate {
    fn pick(rng: &mut fastrand::Rng) -> Self {
        match rng.u8(0..10) {
            0..4 => PageFate::New,
            4..7 => PageFate::Old,
            7..9 => PageFate::Zeroed,
            _ => PageFate::Garbage,
        }
    }
}

/// The file a power loss leaves: `durable`, cut or extended to the length the surviving length
/// changes give, with each page `pending` touched new (from `live`), old, zeroed or garbage,
/// as `seed` decides.
fn power_loss_image(live: &[u8], durable: &[u8], pending: &[Pending], seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut len = io_len(durable.len());
    for op in pending {
        match op.len_change {
            LenChange::None => {}
            LenChange::Extend(end) if rng.bool() => len = len.max(end),
            LenChange::Set(new_len) if rng.bool() => len = new_len,
            LenChange::Extend(_) | LenChange::Set(_) => {} // the change did not survive
        }
    }
    let mut image = durable.to_vec();
    // Lengths were checked to fit a usize when the operations were issued.
    apply_set_len(&mut image, len as usize);
    for page in touched_pages(pending) {
        // Pick for every page, so a page's fate does not depend on the surviving length.
        let fate = PageFate::pick(&mut rng);
        let range = page_range(page, image.len());
        let bytes = &mut image[range.clone()];
        match fate {
            PageFate::New => {
                let from_live = page_range(page, live.len());
                let n = from_live.len().min(bytes.len());
                bytes[..n].copy_from_slice(&live[from_live.start..from_live.start + n]);
                // Past the live end, the page holds nothing; it reads as zeros.
                bytes[n..].fill(0);
            }
            PageFate::Old => {} // the image started as the durable content
            PageFate::Zeroed => bytes.fill(0),
            PageFate::Garbage => rng.fill(bytes),
        }
    }
    image
}

impl FileBackend for SimDisk {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Some(kind) = self.begin(&mut state, OpKind::Read) {
            return Err(fault_error(kind));
        }
        let start = to_index(offset)?;
        match start.checked_add(buf.len()).filter(|&end| end <= state.live.len()) {
            Some(end) => {
                buf.copy_from_slice(&state.live[start..end]);
                Ok(())
            }
            None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of file")),
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_inner(buf, offset)
    }

    /// One operation, like one `pwritev`.
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let flat: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.write_inner(&flat, offset)
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.state.lock();
        if let Some(kind) = self.begin(&mut state, OpKind::Len) {
            return Err(fault_error(kind));
        }
        Ok(io_len(state.live.len()))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Some(kind) = self.begin(&mut state, OpKind::SetLen) {
            return Err(fault_error(kind));
        }
        let new_len = to_index(len)?;
        Self::grow_check(&state, len)?;
        let old_len = io_len(state.live.len());
        apply_set_len(&mut state.live, new_len);
        let touched = old_len.min(len)..old_len.max(len);
        state.pending.push(Pending { touched, len_change: LenChange::Set(len) });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        match self.begin(&mut state, OpKind::Sync) {
            None => {}
            // The machine is down: nothing happens, and the writes stay in flight.
            Some(FaultKind::Crash) => return Err(fault_error(FaultKind::Crash)),
            Some(kind) => {
                // As Linux after a failed fdatasync: the dirty pages are marked clean without
                // reaching the disk, so no later sync writes them unless they are written again.
                state.pending.clear();
                return Err(fault_error(kind));
            }
        }
        let pending = std::mem::take(&mut state.pending);
        let State { live, durable, .. } = &mut *state;
        durable.resize(live.len(), 0);
        for page in touched_pages(&pending) {
            let range = page_range(page, live.len());
            durable[range.clone()].copy_from_slice(&live[range]);
        }
        // O(1) self-check; the crash-image proptest compares whole images against a model.
        debug_assert_eq!(state.durable.len(), state.live.len());
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    /// Clean pages of the range (touched by no pending operation) read as the durable image
    /// again: a page a failed sync dropped loses the bytes only the page cache still had.
    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        let dirty = touched_pages(&state.pending);
        let State { live, durable, .. } = &mut *state;
        let end = offset.saturating_add(len).min(io_len(live.len().min(durable.len())));
        let mut page = offset / PAGE_BYTES;
        while page * PAGE_BYTES < end {
            if !dirty.contains(&page) {
                let range = page_range(page, live.len().min(durable.len()));
                live[range.clone()].copy_from_slice(&durable[range]);
            }
            page += 1;
        }
        Ok(())
    }
}
