//! `WriteBuffer`: positioned writes held in memory and written at a flush, sorted, with
//! contiguous ones merged into one vectored write each, and one sync.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bob_io_helpers::FileBackend;

use crate::reads::{BatchReadOptions, BatchReadReport, ReadRequest, read_batch_with};
use crate::{Error, Result};

/// When a [`WriteBuffer`] flushes by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBufferOptions {
    /// Flush once this many writes are buffered. Default 32.
    pub max_ops: usize,
    /// Flush once the buffered bytes reach this. Default 4 MiB.
    pub max_bytes: usize,
    /// Flush at a write when the first write buffered since the last flush is this old.
    /// Checked at each write: no thread flushes an idle buffer. Default none.
    pub interval: Option<Duration>,
}

impl Default for WriteBufferOptions {
    fn default() -> Self {
        Self { max_ops: 32, max_bytes: 4 << 20, interval: None }
    }
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Buffered writes it covered (as the caller made them).
    pub writes: usize,
    /// Vectored writes it made: one per run of contiguous bytes.
    pub runs: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Syncs: 1, or 0 when nothing was buffered.
    pub syncs: usize,
}

/// Counters over a buffer's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBufferStats {
    /// Writes buffered.
    pub writes: u64,
    /// Flushes that wrote something.
    pub flushes: u64,
    /// Vectored writes made by them.
    pub runs: u64,
    /// Bytes they wrote.
    pub bytes: u64,
    /// Writes buffered now.
    pub pending_writes: usize,
    /// Bytes buffered now (overlaps counted once).
    pub pending_bytes: usize,
}

/// Positioned writes to a [`FileBackend`], held in memory until a flush.
///
/// - A flush sorts what is buffered by offset, merges only truly contiguous bytes (a write
///   ending exactly where the next begins) into one vectored positioned write per run, and
///   syncs **once**. A gap between buffered writes is never written: the file keeps its bytes
///   there.
/// - Overlapping buffered writes are last-wins: a later write replaces the bytes it covers.
/// - Reads ([`read_at`](Self::read_at), [`read_batch`](Self::read_batch)) see buffered
///   writes over the file's bytes.
/// - A flush writes the 4 KiB pages its runs touch. On a medium that damages whole pages
///   (bob's model: `docs/format.md`, "Assumptions about the medium"), a power loss during a
///   flush may also damage bytes that share a page with a buffered write, flushed before or
///   not: keep writes page-aligned, or keep what must survive off the pages later writes
///   touch. (bob's stores do; this buffer writes where it is told.)
/// - Nothing is durable before a flush returns `Ok`. A failed flush latches the buffer: what
///   it held may or may not be on the disk, and since the kernel may drop the writes of a
///   failed sync, it is not retried; every later call is [`Error::Failed`].
///
/// Calls take `&mut self` (reads `&self`): share a buffer behind a mutex.
///
/// ```
/// use bob_batch_io::{WriteBuffer, WriteBufferOptions};
/// # fn main() -> bob_batch_io::Result<()> {
/// let disk = bob_io_helpers::testing::SimDisk::new();
/// let mut buffer = WriteBuffer::new(disk.clone(), WriteBufferOptions::default());
/// buffer.write(0, b"hello ")?;
/// buffer.write(6, b"world")?;
/// let mut read = [0u8; 11];
/// buffer.read_at(&mut read, 0)?; // sees what is buffered
/// assert_eq!(&read, b"hello world");
/// let report = buffer.flush()?;
/// assert_eq!((report.runs, report.syncs), (1, 1)); // contiguous: one write, one sync
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WriteBuffer<B: FileBackend> {
    backend: B,
    options: WriteBufferOptions,
    /// Buffered bytes by offset, no two overlapping.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_writes: usize,
    pending_bytes: usize,
    /// The last flush, or the first write after it.
    since: Option<Instant>,
    stats: WriteBufferStats,
    failed: Option<String>,
}

impl<B: FileBackend> WriteBuffer<B> {
    /// A buffer in front of `backend`.
    pub fn new(backend: B, options: WriteBufferOptions) -> Self {
        Self {
            backend,
            options,
            pending: BTreeMap::new(),
            pending_writes: 0,
            pending_bytes: 0,
            since: None,
            stats: WriteBufferStats::default(),
            failed: None,
        }
    }

    /// The backend (reads through it do not see buffered writes).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn check(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(Error::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Buffers `bytes` at `offset`; flushes first-thing-after if a trigger is reached
    /// (returning that flush's report).
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<Option<FlushReport>> {
        self.check()?;
        let len = bytes.len() as u64;
        // A file offset is an `off_t`: a write past it would only fail at the flush, and
        // take every other buffered write down with it.
        let Some(end) = offset.checked_add(len).filter(|&end| end <= i64::MAX as u64) else {
            return Err(Error::InvalidArgument(format!("{len} bytes at {offset} pass 2^63")));
        };
        if len > 0 {
            self.carve(offset, end);
            self.pending.insert(offset, bytes.to_vec());
            self.pending_bytes += bytes.len();
        }
        self.pending_writes += 1;
        self.stats.writes += 1;
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let due = self.pending_writes >= self.options.max_ops.max(1)
            || self.pending_bytes >= self.options.max_bytes
            || self.options.interval.is_some_and(|every| now.duration_since(since) >= every);
        if due { self.flush().map(Some) } else { Ok(None) }
    }

    /// Removes the buffered bytes in `[start, end)`, keeping what lies outside it.
    fn carve(&mut self, start: u64, end: u64) {
        // A write that begins before the range and reaches into it keeps its head (and its
        // tail past the range, if it covers the whole range).
        if let Some((&before, bytes)) = self.pending.range_mut(..start).next_back() {
            let before_end = before + bytes.len() as u64;
            if before_end > start {
                let tail = (before_end > end).then(|| bytes[(end - before) as usize..].to_vec());
                bytes.truncate((start - before) as usize);
                self.pending_bytes -= (before_end - start) as usize;
                if let Some(tail) = tail {
                    self.pending_bytes += tail.len();
                    self.pending.insert(end, tail);
                }
            }
        }
        // Writes that begin inside it keep only what lies past its end.
        let inside: Vec<u64> = self.pending.range(start..end).map(|(&at, _)| at).collect();
        for at in inside {
            let bytes = self.pending.remove(&at).expect("listed");
            self.pending_bytes -= bytes.len();
            let at_end = at + bytes.len() as u64;
            if at_end > end {
                let tail = bytes[(end - at) as usize..].to_vec();
                self.pending_bytes += tail.len();
                self.pending.insert(end, tail);
            }
        }
    }

    /// Writes everything buffered: sorted, one vectored write per run of contiguous bytes,
    /// then one sync (none when nothing is buffered).
    pub fn flush(&mut self) -> Result<FlushReport> {
        self.check()?;
        let mut report = FlushReport { writes: self.pending_writes, ..FlushReport::default() };
        self.pending_writes = 0;
        self.since = None;
        if self.pending.is_empty() {
            return Ok(report);
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let result = (|| {
            let mut runs: Vec<(u64, Vec<IoSlice<'_>>)> = Vec::new();
            let mut run_end = None;
            for (&offset, bytes) in &pending {
                match runs.last_mut() {
                    Some((_, slices)) if run_end == Some(offset) => {
                        slices.push(IoSlice::new(bytes))
                    }
                    _ => runs.push((offset, vec![IoSlice::new(bytes)])),
                }
                run_end = Some(offset + bytes.len() as u64);
                report.bytes += bytes.len() as u64;
            }
            for (offset, slices) in &runs {
                self.backend.write_vectored_at(slices, *offset)?;
            }
            report.runs = runs.len();
            self.backend.sync_data()?;
            report.syncs = 1;
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = result {
            self.failed = Some(e.to_string());
            return Err(e.into());
        }
        self.stats.flushes += 1;
        self.stats.runs += report.runs as u64;
        self.stats.bytes += report.bytes;
        Ok(report)
    }

    /// The file's length as reads see it: the backend's, or past it where a buffered write
    /// ends later.
    pub fn len(&self) -> Result<u64> {
        self.check()?;
        Ok(self.backend.len()?.max(self.buffered_end()))
    }

    /// Where the last buffered write ends (0 when none is buffered).
    fn buffered_end(&self) -> u64 {
        self.pending.iter().next_back().map_or(0, |(&at, bytes)| at + bytes.len() as u64)
    }

    /// Whether [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` with the bytes at `offset`: the file's, with buffered writes over them
    /// (between the file's end and a buffered write past it, the zeros a flush will leave
    /// there). Bytes past [`len`](Self::len) are [`Error::OutOfRange`].
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check()?;
        let len = buf.len() as u64;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::InvalidArgument(format!("{len} bytes at {offset} overflow")))?;
        let file_len = self.backend.len()?;
        let logical = file_len.max(self.buffered_end());
        if end > logical {
            return Err(Error::OutOfRange { offset, len, file_len: logical });
        }
        // Past the file's end, bytes no buffered write covers are the zeros the flush's
        // extension of the file will hold.
        let in_file = end.min(file_len).saturating_sub(offset) as usize;
        buf[in_file..].fill(0);
        if in_file > 0 {
            self.backend.read_at(&mut buf[..in_file], offset)?;
        }
        for (&at, bytes) in self.overlapping(offset, end) {
            let from = at.max(offset);
            let to = (at + bytes.len() as u64).min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
        }
        Ok(())
    }

    /// The buffered writes that overlap `[start, end)`, ascending.
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = (&u64, &Vec<u8>)> {
        let before = self
            .pending
            .range(..start)
            .next_back()
            .filter(|(at, bytes)| **at + bytes.len() as u64 > start);
        before.into_iter().chain(self.pending.range(start..end))
    }

    /// A batch read (see [`crate::read_batch`]) that sees buffered writes.
    pub fn read_batch(
        &self,
        requests: &[ReadRequest],
        options: &BatchReadOptions,
    ) -> Result<(Vec<Result<Vec<u8>>>, BatchReadReport)> {
        self.check()?;
        let file_len = self.len()?;
        Ok(read_batch_with(requests, options, file_len, |offset, len| {
            let mut buf = vec![0u8; len as usize];
            self.read_at(&mut buf, offset)?;
            Ok(buf)
        }))
    }

    /// Counters over the buffer's life, and what it holds now.
    pub fn stats(&self) -> WriteBufferStats {
        WriteBufferStats {
            pending_writes: self.pending_writes,
            pending_bytes: self.pending_bytes,
            ..self.stats
        }
    }
}
