//! `SimDisk`: an in-memory `FileBackend` that injects faults and simulates crashes.
//!
//! It keeps two images of the file: the *live* one (what reads see, what a process crash
//! leaves) and the *durable* one (what a sync has made safe), plus every write and length change
//! issued since the last sync. [`SimDisk::crash_image`] turns that into the file a restart
//! would find:
//! - [`CrashMode::ProcessCrash`]: the live image; the kernel still had every write.
//! - [`CrashMode::PowerLoss`]: the durable image, then each pending operation replayed in order
//!   with each 512-byte sector of each write independently applied, dropped, zeroed or
//!   garbled, and each length change applied or not, chosen by the seed.
//!
//! So a power-loss image differs from the durable image only in bytes some pending write
//! touched (or in length, where a pending write or `set_len` changed it), and it always holds
//! every write that was synced.
//!
//! Every operation is counted. A [`FaultPlan`] fails the k-th operation of a kind, once or
//! from then on; a space limit makes growth past it fail with `StorageFull`. A crash sweep runs
//! a workload once to count its operations, then once per k with a sticky fault at k (nothing
//! after k reaches the disk) and checks the crash images.

use std::fmt;
use std::io::{self, IoSlice};

use crate::FileBackend;
use crate::sync::{Arc, Mutex};

/// Sector size of the power-loss model: writes tear at these boundaries.
pub const SECTOR_BYTES: u64 = 512;

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
        Self { at, on: OpFilter::Any, kind: FaultKind::Io, repeat: Repeat::Always }
    }
}

/// How the machine went down, for [`SimDisk::crash_image`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// The process died; the kernel kept every write.
    ProcessCrash,
    /// The power failed; unsynced writes tear per sector as the seed decides.
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

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen { len: u64 },
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
            CrashMode::PowerLoss => power_loss_image(&state.durable, &state.pending, seed),
        }
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
        apply_write(&mut state.live, start, data);
        state.pending.push(Pending::Write { offset, data: data.to_vec() });
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
    }
}

/// Replays `pending` over `durable`, tearing each write per sector as `seed` decides.
fn power_loss_image(durable: &[u8], pending: &[Pending], seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut image = durable.to_vec();
    for op in pending {
        match op {
            Pending::SetLen { len } => {
                if rng.bool() {
                    // Lengths were checked to fit a usize when the operation was issued.
                    apply_set_len(&mut image, *len as usize);
                }
            }
            Pending::Write { offset, data } => {
                let mut position = *offset;
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let to_boundary = SECTOR_BYTES - position % SECTOR_BYTES;
                    let n = rest.len().min(to_boundary as usize);
                    let (piece, after) = rest.split_at(n);
                    let start = position as usize;
                    match rng.u8(0..10) {
                        0..4 => apply_write(&mut image, start, piece),
                        4..7 => {} // dropped: the old bytes (or nothing) stay
                        7..9 => apply_write(&mut image, start, &vec![0; n]),
                        _ => {
                            let garbage: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                            apply_write(&mut image, start, &garbage);
                        }
                    }
                    position += n as u64;
                    rest = after;
                }
            }
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
        apply_set_len(&mut state.live, new_len);
        state.pending.push(Pending::SetLen { len });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Some(kind) = self.begin(&mut state, OpKind::Sync) {
            // A failed sync promises nothing; the pending writes stay pending.
            return Err(fault_error(kind));
        }
        let pending = std::mem::take(&mut state.pending);
        for op in &pending {
            match op {
                Pending::Write { offset, data } => {
                    apply_write(&mut state.durable, *offset as usize, data)
                }
                Pending::SetLen { len } => apply_set_len(&mut state.durable, *len as usize),
            }
        }
        // O(1) self-check; the crash-image proptest compares whole images against a model.
        debug_assert_eq!(state.durable.len(), state.live.len());
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}
