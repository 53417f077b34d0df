//! Test support, behind the `testing` feature: [`SimDisk`], [`Hooked`] (a backend that runs a
//! test's hook before each operation of another), seeds for randomized tests, deterministic
//! payloads and image mutations for fuzzing.
//!
//! Randomized tests take their seed from [`test_seed`], which prints it; setting `BOB_SEED`
//! to that value replays the run.

use std::io::{self, IoSlice};
use std::sync::Arc;

use crate::FileBackend;

pub use crate::sim::{
    CrashMode, FaultKind, FaultPlan, OpCounts, OpFilter, OpKind, PAGE_BYTES, Repeat, SimDisk,
};

/// The seed for a randomized test: `BOB_SEED` (decimal, or hex with `0x`) when set, otherwise
/// a fresh random one. Either way it is printed to stderr, so a failure can be replayed.
///
/// # Panics
/// If `BOB_SEED` is set but is not a number: a replay with the wrong seed would be worthless.
pub fn test_seed() -> u64 {
    let seed = match std::env::var("BOB_SEED") {
        Ok(text) => parse_seed(&text)
            .unwrap_or_else(|| panic!("BOB_SEED={text:?} is not a decimal or 0x-hex u64")),
        Err(_) => fastrand::u64(..),
    };
    eprintln!("BOB_SEED={seed} (set BOB_SEED to this value to replay)");
    seed
}

/// Deterministic, incompressible-looking bytes: the same `seed` and `len` give the same bytes
/// on every run and machine. The generator is SplitMix64, fixed here so that payloads (and
/// corpora built from them) never change with a random-number crate's version.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A mutation of a file image for fuzzing: bit flips, an extreme 8-byte value, truncation,
/// extension with garbage, a random span, one region copied over another (a misdirected
/// write), or all-random bytes. Any input, empty included, gives an output.
pub fn mutate_image(rng: &mut fastrand::Rng, image: &[u8]) -> Vec<u8> {
    let mut out = image.to_vec();
    if out.len() < 16 {
        return (0..rng.usize(0..9000)).map(|_| rng.u8(..)).collect();
    }
    match rng.u8(0..7) {
        0 => {
            for _ in 0..rng.usize(1..9) {
                let at = rng.usize(..out.len());
                out[at] ^= 1 << rng.u8(0..8);
            }
        }
        1 => {
            // An extreme value in an 8-byte field, anywhere (headers, tables, roots).
            let at = rng.usize(..out.len() - 8);
            let value = [0, 1, u64::MAX, u64::MAX / 2, 1 << 40, 4096, rng.u64(..)][rng.usize(..7)];
            out[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        2 => out.truncate(rng.usize(..=out.len())),
        3 => out.extend((0..rng.usize(1..5000)).map(|_| rng.u8(..))),
        4 => {
            let at = rng.usize(..out.len());
            let len = rng.usize(1..64).min(out.len() - at);
            for b in &mut out[at..at + len] {
                *b = rng.u8(..);
            }
        }
        5 => {
            let len = rng.usize(1..512).min(out.len() / 2);
            let from = rng.usize(..=out.len() - len);
            let to = rng.usize(..=out.len() - len);
            let chunk = out[from..from + len].to_vec();
            out[to..to + len].copy_from_slice(&chunk);
        }
        _ => out = (0..rng.usize(0..9000)).map(|_| rng.u8(..)).collect(),
    }
    out
}

fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_deterministic_and_mutations_take_any_input() {
        assert_eq!(payload(1, 100), payload(1, 100));
        assert_ne!(payload(1, 100), payload(2, 100));
        assert_eq!(payload(3, 13).len(), 13);
        let mut rng = fastrand::Rng::with_seed(7);
        for len in [0, 1, 15, 16, 17, 4096] {
            for _ in 0..200 {
                mutate_image(&mut rng, &payload(len as u64, len));
            }
        }
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2A "), Some(42));
        assert_eq!(parse_seed("forty-two"), None);
    }
}

/// What a [`Hooked`] backend is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOp {
    /// A read of `len` bytes at `offset`.
    Read {
        /// Where.
        offset: u64,
        /// How many bytes.
        len: usize,
    },
    /// A write of `len` bytes at `offset` (a vectored write: its buffers together).
    Write {
        /// Where.
        offset: u64,
        /// How many bytes.
        len: usize,
    },
    /// `set_len`.
    SetLen(u64),
    /// `allocate`.
    Allocate(u64),
    /// `sync_data` or `sync_all`.
    Sync,
    /// `start_writeback` of `len` bytes at `offset`.
    Writeback {
        /// Where.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
}

/// A hook a [`Hooked`] backend runs before each operation.
pub type Hook = Arc<dyn Fn(HookOp) -> io::Result<()> + Send + Sync>;

/// A backend that runs a hook before each operation of the one it wraps (reads, writes,
/// length changes, syncs; not `len` or the cache hints), for tests that count, delay, gate or
/// fail operations: an `Err` from the hook is the operation's result, and the wrapped backend
/// is not called.
#[derive(Clone)]
pub struct Hooked<B> {
    inner: B,
    hook: Hook,
}

impl<B> Hooked<B> {
    /// `inner`, with `hook` run before each of its operations.
    pub fn new(inner: B, hook: impl Fn(HookOp) -> io::Result<()> + Send + Sync + 'static) -> Self {
        Self { inner, hook: Arc::new(hook) }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B> std::fmt::Debug for Hooked<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked").finish_non_exhaustive()
    }
}

impl<B: FileBackend> FileBackend for Hooked<B> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (self.hook)(HookOp::Read { offset, len: buf.len() })?;
        self.inner.read_at(buf, offset)
    }
    fn read_to_vec(&self, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
        (self.hook)(HookOp::Read { offset, len })?;
        self.inner.read_to_vec(buf, len, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (self.hook)(HookOp::Write { offset, len: buf.len() })?;
        self.inner.write_at(buf, offset)
    }
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let len = bufs.iter().map(|b| b.len()).sum();
        (self.hook)(HookOp::Write { offset, len })?;
        self.inner.write_vectored_at(bufs, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        (self.hook)(HookOp::SetLen(len))?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        (self.hook)(HookOp::Sync)?;
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        (self.hook)(HookOp::Sync)?;
        self.inner.sync_all()
    }
    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.drop_cache(offset, len)
    }
    fn will_need(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.will_need(offset, len)
    }
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        (self.hook)(HookOp::Writeback { offset, len })?;
        self.inner.start_writeback(offset, len)
    }
    fn map_reads(&self, on: bool) {
        self.inner.map_reads(on);
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        (self.hook)(HookOp::Allocate(len))?;
        self.inner.allocate(len)
    }
}

#[cfg(test)]
mod hooked_tests {
    use super::*;

    /// The hook sees each operation with its extent before the wrapped backend does; its
    /// error is the operation's, and the wrapped backend is then left alone.
    #[test]
    fn a_hook_sees_every_operation_and_its_error_stops_it() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let disk = Hooked::new(SimDisk::new(), move |op| {
            log.lock().unwrap().push(op);
            match op {
                HookOp::Write { offset: 4096, .. } => Err(io::Error::other("refused")),
                _ => Ok(()),
            }
        });
        disk.write_at(b"abc", 0).unwrap();
        assert!(disk.write_at(b"xyz", 4096).is_err());
        disk.write_vectored_at(&[IoSlice::new(b"de"), IoSlice::new(b"f")], 3).unwrap();
        let mut buf = [0u8; 6];
        disk.read_at(&mut buf, 0).unwrap();
        disk.sync_data().unwrap();
        disk.set_len(10).unwrap();
        assert_eq!(&buf, b"abcdef");
        assert_eq!(disk.inner().len().unwrap(), 10, "the refused write wrote nothing");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                HookOp::Write { offset: 0, len: 3 },
                HookOp::Write { offset: 4096, len: 3 },
                HookOp::Write { offset: 3, len: 3 },
                HookOp::Read { offset: 0, len: 6 },
                HookOp::Sync,
                HookOp::SetLen(10),
            ]
        );
    }
}
