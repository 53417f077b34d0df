//! The write-ahead log: one record per committed write transaction, in segment files
//! (`docs/format.md`, "B-tree write-ahead log").
//!
//! A record is appended as one *group* (a checksummed header and the record) with one
//! positioned write; a durable commit then syncs the segment, and the next group starts on a
//! fresh 4 KiB page, so no write ever touches a page that holds a synced group. Each database
//! open appends to a segment of its own, created (durable with its directory) at the first
//! append, so a torn tail left by a crash is never continued. A checkpoint makes the records
//! up to its LSN redundant; segments holding only those are removed.
//!
//! Recovery reads the segments in order and follows the chain of groups (consecutive LSNs,
//! each group at the end of the previous one or on the next page). The chain ends at the
//! first group that does not verify: a torn tail, dropped. A group past that point that does
//! verify and says the missing LSN had been synced means a durable record was damaged: an
//! error, never a silent rollback. A break inside the checkpoint (a damaged group whose
//! record the checkpoint holds) is stepped over when a later group witnesses the
//! checkpoint's LSN + 1 as synced: the chain resumes at the group holding it, wherever in
//! the segment it starts.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bob_io_helpers::{FileBackend, OsFile, checksum};

use crate::{Error, Result};

/// A segment file as the log uses it.
pub type LogFile = Arc<dyn FileBackend + Send + Sync>;

/// Where the log's segment files live. [`OsLogDir`] is a directory; tests use one that can
/// simulate crashes.
pub trait LogDir: Send + Sync {
    /// The sequence numbers of the segments present.
    fn list(&self) -> io::Result<Vec<u64>>;
    /// Creates segment `seq` holding `header` (one whole page) at its start, durable
    /// (contents and name) on return. It may be a retired segment put back to use: its header
    /// page is rewritten and synced before it takes the new name, and the rest keeps old
    /// groups, which carry another salt.
    fn create(&self, seq: u64, header: &[u8]) -> io::Result<LogFile>;
    /// Opens segment `seq`.
    fn open(&self, seq: u64) -> io::Result<LogFile>;
    /// Removes segment `seq` (need not be durable until [`sync`](Self::sync): a segment that
    /// comes back holds only records a checkpoint made redundant).
    fn remove(&self, seq: u64) -> io::Result<()>;
    /// Makes earlier removals and retirements durable.
    fn sync(&self) -> io::Result<()>;
    /// Retires segment `seq`, whose records a checkpoint holds: kept as a spare for
    /// [`create`](Self::create) to reuse (its blocks are already allocated and written, so
    /// appending over them changes no file metadata and a sync writes the data alone), or
    /// removed. Need not be durable until [`sync`](Self::sync).
    fn retire(&self, seq: u64) -> io::Result<()> {
        self.remove(seq)
    }
    /// Prepares a spare of `len` written bytes, if the directory keeps spares and has none:
    /// the first segments of a new log then need no file-size or allocation metadata at their
    /// syncs either. Run off the commit path (the persistence thread). Returns whether one
    /// was made.
    fn prepare_spare(&self, len: u64) -> io::Result<bool> {
        let _ = len;
        Ok(false)
    }
    /// Removes the spares (a closed database keeps no more than its segments).
    fn drop_spares(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Spare segments a directory keeps for reuse.
const SPARES: usize = 2;
/// No spare prepared ahead is longer.
const MAX_SPARE: u64 = 256 << 20;

/// Segments as files `<seq>.log` (20 digits) in a directory.
#[derive(Debug, Clone)]
pub struct OsLogDir {
    dir: PathBuf,
}

impl OsLogDir {
    /// The log directory `dir`, created (durably) if missing.
    pub fn new(dir: &Path) -> io::Result<Self> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            bob_io_helpers::sync_parent_dir(dir).map_err(io::Error::other)?;
        }
        // A spare whose preparation a crash cut short.
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(path)?;
            }
        }
        Ok(Self { dir: dir.to_owned() })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.log"))
    }

    fn spares(&self) -> io::Result<Vec<PathBuf>> {
        let mut spares = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "spare") {
                spares.push(path);
            }
        }
        spares.sort();
        Ok(spares)
    }
}

impl LogDir for OsLogDir {
    fn list(&self) -> io::Result<Vec<u64>> {
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = name.strip_suffix(".log").and_then(|s| s.parse().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    fn create(&self, seq: u64, header: &[u8]) -> io::Result<LogFile> {
        let path = self.path(seq);
        if let Some(spare) = self.spares()?.pop() {
            // Header first, synced, under the spare's name (which no recovery reads); then
            // the new name, made durable with the directory. Opened without a lock: a
            // retired segment's old handle may still be alive (a group commit's sync that
            // began before the release), and its lock would refuse this open; the database
            // file's lock already gives the directory one owner.
            let file = std::fs::File::options().read(true).write(true).open(&spare)?;
            let file = OsFile::new(file);
            file.write_at(header, 0)?;
            file.sync_data()?;
            std::fs::rename(&spare, &path)?;
            self.sync()?;
            return Ok(Arc::new(file));
        }
        let file = bob_io_helpers::create_new_durable_with(&path, |file| {
            use std::os::unix::fs::FileExt;
            Ok(file.write_all_at(header, 0)?)
        })
        .map_err(io::Error::other)?;
        Ok(Arc::new(OsFile::new(file)))
    }

    fn open(&self, seq: u64) -> io::Result<LogFile> {
        Ok(Arc::new(OsFile::open(&self.path(seq)).map_err(io::Error::other)?))
    }

    fn remove(&self, seq: u64) -> io::Result<()> {
        std::fs::remove_file(self.path(seq))
    }

    fn sync(&self) -> io::Result<()> {
        bob_io_helpers::sync_dir(&self.dir).map_err(io::Error::other)
    }

    fn retire(&self, seq: u64) -> io::Result<()> {
        if self.spares()?.len() >= SPARES {
            return self.remove(seq);
        }
        std::fs::rename(self.path(seq), self.dir.join(format!("{seq:020}.spare")))
    }

    fn drop_spares(&self) -> io::Result<()> {
        let spares = self.spares()?;
        for spare in &spares {
            std::fs::remove_file(spare)?;
        }
        if !spares.is_empty() {
            self.sync()?;
        }
        Ok(())
    }

    fn prepare_spare(&self, len: u64) -> io::Result<bool> {
        if !self.spares()?.is_empty() {
            return Ok(false);
        }
        let len = len.min(MAX_SPARE);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = self.dir.join(format!("prepared-{stamp}.tmp"));
        let written = (|| {
            let file = std::fs::File::options().write(true).create_new(true).open(&tmp)?;
            let file = OsFile::new(file);
            bob_io_helpers::write_zeros(&file, 0, len).map_err(io::Error::other)?;
            file.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(format!("prepared-{stamp}.spare")))?;
            self.sync()
        })();
        if let Err(e) = written {
            // A full disk, say: the space goes back at once.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(true)
    }
}

/// Groups start on pages of this size after a sync.
const PAGE: u64 = 4096;
const SEGMENT_MAGIC: &[u8; 4] = b"BOBL";
const GROUP_MAGIC: &[u8; 4] = b"BOBG";
/// The log layout version this build writes and reads.
pub(crate) const WAL_VERSION: u8 = 1;
const SEGMENT_HEADER: usize = 48;
const GROUP_HEADER: usize = 48;
/// Bytes read at a time when a segment is searched past the end of its chain.
const SCAN_CHUNK: u64 = 1 << 20;
/// No record is longer (a write transaction's log of changes).
const MAX_RECORD: usize = 1 << 30;

fn round_up(pos: u64) -> u64 {
    pos.next_multiple_of(PAGE)
}

struct SegmentHeader {
    seq: u64,
    salt: u64,
    first_lsn: u64,
    log_id: u64,
}

impl SegmentHeader {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEGMENT_HEADER);
        out.extend_from_slice(SEGMENT_MAGIC);
        out.push(WAL_VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.salt.to_le_bytes());
        out.extend_from_slice(&self.first_lsn.to_le_bytes());
        out.extend_from_slice(&self.log_id.to_le_bytes());
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    fn decode(seq: u64, bytes: &[u8]) -> Result<Self> {
        let corrupt = |why: &str| Error::Corrupt(format!("log segment {seq}: {why}"));
        if bytes.len() < SEGMENT_HEADER || &bytes[..4] != SEGMENT_MAGIC {
            return Err(corrupt("no segment header"));
        }
        if bytes[4] != WAL_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "B-tree log segment",
                found: u32::from(bytes[4]),
                read: u32::from(WAL_VERSION),
            });
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        if checksum(&bytes[..40]) != u64_at(40) || bytes[5..8] != [0; 3] {
            return Err(corrupt("damaged segment header"));
        }
        if u64_at(8) != seq {
            return Err(corrupt("the header names another segment"));
        }
        if u64_at(24) == 0 || u64_at(24) == u64::MAX {
            return Err(corrupt("a first LSN out of range"));
        }
        Ok(Self { seq, salt: u64_at(16), first_lsn: u64_at(24), log_id: u64_at(32) })
    }
}

/// A verified group's header fields.
struct Group {
    len: u64,
    first_lsn: u64,
    durable_lsn: u64,
    count: u32,
}

fn group_bytes(first_lsn: u64, durable_lsn: u64, salt: u64, record: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(GROUP_MAGIC);
    out.extend_from_slice(&((4 + record.len()) as u32).to_le_bytes());
    out.extend_from_slice(&first_lsn.to_le_bytes());
    out.extend_from_slice(&durable_lsn.to_le_bytes());
    out.extend_from_slice(&salt.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(record);
    let mut sum = checksum(&out[..40]);
    sum ^= checksum(&out[GROUP_HEADER..]).rotate_left(17);
    out[40..48].copy_from_slice(&sum.to_le_bytes());
}

/// The group at `pos` if one that verifies (for `salt`) starts there; its records' bytes
/// in `body`. A read error is an error, never taken for a torn tail.
fn read_group(
    file: &LogFile,
    file_len: u64,
    pos: u64,
    salt: u64,
    body: &mut Vec<u8>,
) -> Result<Option<Group>> {
    if pos.saturating_add(GROUP_HEADER as u64) > file_len {
        return Ok(None);
    }
    let mut header = [0u8; GROUP_HEADER];
    file.read_at(&mut header, pos)?;
    if &header[..4] != GROUP_MAGIC {
        return Ok(None);
    }
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8"));
    let len = u64::from(u32::from_le_bytes(header[4..8].try_into().expect("4")));
    if u64_at(24) != salt
        || len as usize > MAX_RECORD + 4
        || pos + GROUP_HEADER as u64 + len > file_len
    {
        return Ok(None);
    }
    body.clear();
    file.read_to_vec(body, len as usize, pos + GROUP_HEADER as u64)?;
    let sum = checksum(&header[..40]) ^ checksum(body).rotate_left(17);
    if sum != u64_at(40) || header[36..40] != [0; 4] {
        return Ok(None);
    }
    let count = u32::from_le_bytes(header[32..36].try_into().expect("4"));
    let first_lsn = u64_at(8);
    // A group's LSNs are numbered from 1 and never wrap.
    if first_lsn == 0 || first_lsn.checked_add(u64::from(count)).is_none() {
        return Ok(None);
    }
    Ok(Some(Group { len: GROUP_HEADER as u64 + len, first_lsn, durable_lsn: u64_at(16), count }))
}

/// Whether a group at a page boundary from `from` (page-aligned) on verifies for `salt`
/// and says every LSN up to `lsn` had been synced (its `durable_lsn`): the first group after
/// each sync starts on a page. Pages are read in chunks, and only those starting with a
/// group header of this salt are read whole (a reused segment holds old groups to its end).
fn has_witness(file: &LogFile, file_len: u64, from: u64, salt: u64, lsn: u64) -> Result<bool> {
    let mut chunk = Vec::new();
    let mut body = Vec::new();
    let mut at = from;
    while at.saturating_add(GROUP_HEADER as u64) <= file_len {
        let n = (file_len - at).min(SCAN_CHUNK);
        file.read_to_vec(&mut chunk, n as usize, at)?;
        for start in (0..chunk.len()).step_by(PAGE as usize) {
            let head = &chunk[start..];
            let candidate = head.len() >= GROUP_HEADER
                && &head[..4] == GROUP_MAGIC
                && head[24..32] == salt.to_le_bytes();
            if candidate
                && let Some(g) = read_group(file, file_len, at + start as u64, salt, &mut body)?
                && g.durable_lsn >= lsn
            {
                return Ok(true);
            }
        }
        at += n;
    }
    Ok(false)
}

/// The first group from byte `from` on that verifies for `salt` and holds record `lsn`:
/// where it starts and its first LSN. Every byte offset is tried (groups written without a
/// sync between them are packed, not page-aligned); read only after a witness said `lsn`
/// had been synced in this segment (see [`has_witness`]), so the cost falls on a damaged
/// log alone. A salt is one segment's, and a segment holds each LSN once; the witness is
/// of the history that synced `lsn` (a history an earlier open rolled back never synced its
/// lost LSN, and its witnesses stay below it), so the group found is that history's.
fn find_group_holding(
    file: &LogFile,
    file_len: u64,
    from: u64,
    salt: u64,
    lsn: u64,
) -> Result<Option<(u64, u64)>> {
    let mut chunk = Vec::new();
    let mut body = Vec::new();
    let mut at = from;
    while at.saturating_add(GROUP_HEADER as u64) <= file_len {
        // Chunks overlap by a header less one byte, so a header across a chunk's end is
        // seen whole.
        let n = (file_len - at).min(SCAN_CHUNK);
        file.read_to_vec(&mut chunk, n as usize, at)?;
        let mut i = 0;
        while i + GROUP_HEADER <= chunk.len() {
            let head = &chunk[i..];
            if &head[..4] == GROUP_MAGIC && head[24..32] == salt.to_le_bytes() {
                let pos = at + i as u64;
                if let Some(g) = read_group(file, file_len, pos, salt, &mut body)?
                    && g.count > 0
                    && g.first_lsn <= lsn
                    && lsn - g.first_lsn < u64::from(g.count)
                {
                    return Ok(Some((pos, g.first_lsn)));
                }
            }
            i += 1;
        }
        if at + n >= file_len {
            break;
        }
        at += n - GROUP_HEADER as u64 + 1;
    }
    Ok(None)
}

/// The segment appended to.
struct Active {
    seq: u64,
    file: LogFile,
    salt: u64,
    /// Where the next group goes.
    end: u64,
}

/// The log; see the module docs.
pub(crate) struct Wal {
    dir: Arc<dyn LogDir>,
    log_id: u64,
    segment_limit: u64,
    /// Segments that may hold records, oldest first: (seq, the LSN its first group has).
    segments: Vec<(u64, u64)>,
    active: Option<Active>,
    next_seq: u64,
    next_lsn: u64,
    durable_lsn: u64,
    /// Bytes written since the last sync.
    unsynced: u64,
    /// Bytes appended since the log was opened.
    appended: u64,
    /// `appended` as of the last release's checkpoint.
    released_at: u64,
    buf: Vec<u8>,
    syncs: Arc<Syncs>,
}

/// A sync of the log run without its lock: see [`Wal::begin_sync`].
pub(crate) struct SyncJob {
    /// The segment to sync.
    file: LogFile,
    /// The last LSN it holds.
    pub(crate) through: u64,
    syncs: Arc<Syncs>,
}

/// What every sync of the log shares: they run one at a time, and once one failed every
/// later one fails too.
struct Syncs {
    failed: bob_io_helpers::sync::Mutex<bool>,
}

impl Default for Syncs {
    // By hand: the loom build's `Mutex` has no `Default`.
    fn default() -> Self {
        Self { failed: bob_io_helpers::sync::Mutex::new(false) }
    }
}

impl Syncs {
    fn check(&self) -> Result<()> {
        if *self.failed.lock() { Err(poisoned()) } else { Ok(()) }
    }
}

/// The error of every log operation after a failed sync.
fn poisoned() -> Error {
    Error::Log(io::Error::other("an earlier sync of the write-ahead log failed"))
}

impl SyncJob {
    /// Syncs the segment. Syncs run one at a time (the log's lock may be held by the
    /// caller, never taken inside); after a failed one, every later one fails without
    /// syncing: the kernel may have dropped the pages it could not write, and a retry would
    /// report them durable.
    pub(crate) fn run(&self) -> Result<()> {
        let mut failed = self.syncs.failed.lock();
        if *failed {
            return Err(poisoned());
        }
        if let Err(e) = self.file.sync_data() {
            *failed = true;
            return Err(e.into());
        }
        Ok(())
    }
}

/// A record read back at open: its LSN and bytes.
pub(crate) type Recovered = Vec<(u64, Vec<u8>)>;

impl Wal {
    /// Opens the log in `dir` and reads back every record after `after_lsn` (the checkpoint's).
    pub(crate) fn open(
        dir: Arc<dyn LogDir>,
        log_id: u64,
        after_lsn: u64,
        segment_limit: u64,
    ) -> Result<(Self, Recovered)> {
        if after_lsn >= u64::MAX - 1 {
            return Err(Error::Corrupt("the catalog's log LSN is out of range".into()));
        }
        let seqs = dir.list()?;
        let mut records: Recovered = Vec::new();
        let mut segments = Vec::new();
        let mut expected: Option<u64> = None;
        let mut body = Vec::new();
        let mut opened = Vec::with_capacity(seqs.len());
        for &seq in &seqs {
            let file = dir.open(seq)?;
            let file_len = file.len()?;
            let mut head = vec![0u8; SEGMENT_HEADER.min(file_len as usize)];
            file.read_at(&mut head, 0)?;
            opened.push((seq, file, file_len, SegmentHeader::decode(seq, &head)));
        }
        // The last segment's creation may have been cut short (it is created under its name
        // before its header page is synced): with nothing past its header page it holds no
        // record, and it is removed so that it never stands before a later segment.
        if let Some((seq, _, file_len, Err(_))) = opened.last()
            && *file_len <= PAGE
        {
            dir.remove(*seq)?;
            dir.sync()?;
            opened.pop();
        }
        let first_lsns: Vec<Option<u64>> =
            opened.iter().map(|o| o.3.as_ref().ok().map(|h| h.first_lsn)).collect();
        // Each segment's successor, to read its first group's witness: a roll to a new
        // segment syncs the old one first, and the new one's first group says so.
        let successors: Vec<Option<(LogFile, u64, u64)>> = (0..opened.len())
            .map(|i| {
                let (_, file, len, header) = opened.get(i + 1)?;
                Some((Arc::clone(file), *len, header.as_ref().ok()?.salt))
            })
            .collect();
        let next_seq = seqs.last().map_or(1, |s| s + 1);
        for (i, (seq, file, file_len, header)) in opened.into_iter().enumerate() {
            let header = header?;
            if header.log_id != log_id {
                return Err(Error::Corrupt(format!(
                    "log segment {seq} belongs to another database (log id {:#x}, not {log_id:#x})",
                    header.log_id
                )));
            }
            let start = header.first_lsn;
            match expected {
                // The segment continues the one before; or it starts inside the checkpoint
                // (records between are in it), where the one before held nothing past it.
                Some(e) if start == e => {}
                Some(e) if start <= after_lsn + 1 && e <= after_lsn + 1 => {}
                Some(e) => {
                    return Err(Error::Corrupt(format!(
                        "log segment {seq} starts at LSN {start}, the segments before it end \
                         before LSN {e}: records are missing or overlap"
                    )));
                }
                None if start > after_lsn + 1 => {
                    return Err(Error::Corrupt(format!(
                        "the log starts at LSN {start}, after the checkpoint's {after_lsn} + 1: \
                         records are missing"
                    )));
                }
                None => {}
            }
            segments.push((seq, start));
            if first_lsns.get(i + 1).copied().flatten().is_some_and(|next| next <= after_lsn + 1) {
                // The next segment starts at or before the checkpoint's LSN + 1: every record
                // of this one is in the checkpoint, and nothing of it is read.
                expected = None;
                continue;
            }
            let mut want = start;
            let mut pos = PAGE;
            loop {
                loop {
                    let mut found =
                        read_group(&file, file_len, pos, header.salt, &mut body)?.map(|g| (g, pos));
                    let page = round_up(pos);
                    if found.is_none() && page != pos {
                        found = read_group(&file, file_len, page, header.salt, &mut body)?
                            .map(|g| (g, page));
                    }
                    // A group that is not the next one ends the chain as a torn one does (a
                    // group after a torn one may start on the page boundary the torn one ended
                    // at); the scan below decides whether a synced record went missing.
                    let Some((group, at)) =
                        found.filter(|(g, _)| g.first_lsn == want && g.count > 0)
                    else {
                        break;
                    };
                    let mut off = 0usize;
                    for k in 0..u64::from(group.count) {
                        let len = body
                            .get(off..off + 4)
                            .map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize)
                            .filter(|&len| off + 4 + len <= body.len())
                            .ok_or_else(|| {
                                Error::Corrupt(format!(
                                    "log segment {seq}: a group's records overrun it"
                                ))
                            })?;
                        let lsn = group.first_lsn + k;
                        if lsn > after_lsn {
                            records.push((lsn, body[off + 4..off + 4 + len].to_vec()));
                        }
                        off += 4 + len;
                    }
                    want = group.first_lsn + u64::from(group.count);
                    pos = at + group.len;
                }
                // The chain broke inside the checkpoint (a damaged group whose record the
                // checkpoint holds, or a torn tail the checkpoint covered). If a later group
                // (of this segment, or the next segment's first) says the checkpoint's LSN + 1
                // was synced, that record is in this segment past the break, and the chain
                // goes on from it. Without such a witness the groups past the break may be a
                // history an earlier open rolled back (their LSNs reused since in a later
                // segment, which a power loss may have removed while this one's removal was
                // undone): none is read.
                let witnessed_next = || -> Result<bool> {
                    let Some((next, len, salt)) = &successors[i] else { return Ok(false) };
                    let first = read_group(next, *len, PAGE, *salt, &mut Vec::new())?;
                    Ok(first.is_some_and(|g| g.durable_lsn > after_lsn))
                };
                if want <= after_lsn
                    && (has_witness(&file, file_len, round_up(pos), header.salt, after_lsn + 1)?
                        || witnessed_next()?)
                    && let Some((at, first)) =
                        find_group_holding(&file, file_len, pos, header.salt, after_lsn + 1)?
                {
                    want = first;
                    pos = at;
                    continue;
                }
                break;
            }
            // The chain ended: nothing after it may say a missing record past the checkpoint
            // had been synced.
            let missing = want.max(after_lsn + 1);
            if has_witness(&file, file_len, round_up(pos), header.salt, missing)? {
                return Err(Error::Corrupt(format!(
                    "log segment {seq}: the group of LSN {missing} is damaged, and a later \
                     group says it had been synced"
                )));
            }
            expected = Some(want);
        }
        let next_lsn = expected.map_or(after_lsn + 1, |e| e.max(after_lsn + 1));
        let wal = Self {
            dir,
            log_id,
            segment_limit,
            segments,
            active: None,
            next_seq,
            next_lsn,
            durable_lsn: next_lsn - 1,
            unsynced: 0,
            appended: 0,
            released_at: 0,
            buf: Vec::new(),
            syncs: Arc::default(),
        };
        Ok((wal, records))
    }

    /// Whether the next segment may be needed soon: none is open, or the open one is three
    /// quarters full.
    pub(crate) fn next_segment_near(&self) -> bool {
        self.active.as_ref().is_none_or(|a| a.end >= self.segment_limit / 4 * 3)
    }

    /// Bytes appended since the last [`release`](Self::release).
    pub(crate) fn since_release(&self) -> u64 {
        self.appended - self.released_at
    }

    /// Bytes appended since the log was opened (a checkpoint notes it with its LSN).
    pub(crate) fn appended(&self) -> u64 {
        self.appended
    }

    /// Whether `record` is too long for a log record (a caller's error, checked before any
    /// write).
    pub(crate) fn check_len(record: &[u8]) -> Result<()> {
        if record.len() > MAX_RECORD {
            return Err(Error::TooLarge {
                what: "transaction's log record",
                len: record.len(),
                max: MAX_RECORD,
            });
        }
        Ok(())
    }

    /// Appends `record`; syncs when `sync` or when a megabyte is waiting. Returns its LSN.
    pub(crate) fn append(&mut self, record: &[u8], sync: bool) -> Result<u64> {
        self.append_group(record, sync, sync)
    }

    /// Appends `record` padded to its page end, for a sync to come (group commit: the sync
    /// then writes no padding of its own). Returns its LSN.
    pub(crate) fn append_padded(&mut self, record: &[u8]) -> Result<u64> {
        self.append_group(record, true, false)
    }

    fn append_group(&mut self, record: &[u8], pad: bool, sync: bool) -> Result<u64> {
        Self::check_len(record)?;
        self.syncs.check()?;
        let lsn = self.next_lsn;
        if lsn >= u64::MAX - 1 {
            return Err(Error::Corrupt("the log's LSNs are used up".into()));
        }
        let needed = (GROUP_HEADER + 4 + record.len()) as u64;
        let roll = self
            .active
            .as_ref()
            .is_none_or(|a| a.end > PAGE && a.end + needed > self.segment_limit);
        if roll {
            self.sync()?;
            let salt = fresh_salt(self.next_seq);
            let header =
                SegmentHeader { seq: self.next_seq, salt, first_lsn: lsn, log_id: self.log_id };
            let mut page = header.encode();
            page.resize(PAGE as usize, 0);
            let file = self.dir.create(self.next_seq, &page)?;
            self.segments.push((self.next_seq, lsn));
            self.active = Some(Active { seq: self.next_seq, file, salt, end: PAGE });
            self.next_seq += 1;
        }
        let active = self.active.as_mut().expect("made above");
        group_bytes(lsn, self.durable_lsn, active.salt, record, &mut self.buf);
        if pad {
            // The file ends on a page boundary after every sync, so no later write (nor the
            // zeroing of a partial last page that extending a file may cause) touches a page
            // holding a synced group.
            let end = active.end + self.buf.len() as u64;
            self.buf.resize((round_up(end) - active.end) as usize, 0);
        }
        active.file.write_at(&self.buf, active.end)?;
        active.end += self.buf.len() as u64;
        self.next_lsn += 1;
        self.unsynced += self.buf.len() as u64;
        if sync {
            let file = Arc::clone(&active.file);
            SyncJob { file, through: lsn, syncs: Arc::clone(&self.syncs) }.run()?;
            self.durable_lsn = lsn;
            self.unsynced = 0;
        }
        self.appended += self.buf.len() as u64;
        if self.unsynced >= 1 << 20 {
            self.sync()?;
        }
        Ok(lsn)
    }

    /// Makes every appended record durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if let Some(job) = self.begin_sync()? {
            job.run()?;
            self.end_sync(job.through);
        }
        Ok(())
    }

    /// The first half of a sync run without the log's lock (group commit): pads the active
    /// segment to its page end (so no later group touches a page this sync makes durable)
    /// and returns the file to sync and the last LSN it then holds; `None` when every record
    /// is durable. Hand `through` to [`end_sync`](Self::end_sync) once the file's sync
    /// returned `Ok`.
    pub(crate) fn begin_sync(&mut self) -> Result<Option<SyncJob>> {
        self.syncs.check()?;
        if self.durable_lsn + 1 >= self.next_lsn {
            return Ok(None);
        }
        // Records not durable yet live in the active segment: a roll to a new one, and a
        // release that retires the active one, make everything before durable first.
        let active = self.active.as_mut().expect("records that are not durable have a segment");
        if self.unsynced > 0 {
            let end = round_up(active.end);
            if end > active.end {
                bob_io_helpers::write_zeros(&*active.file, active.end, end - active.end)
                    .map_err(io::Error::other)?;
            }
            active.end = end;
            self.unsynced = 0;
        }
        let file = Arc::clone(&active.file);
        Ok(Some(SyncJob { file, through: self.next_lsn - 1, syncs: Arc::clone(&self.syncs) }))
    }

    /// Records that a sync [`begin_sync`](Self::begin_sync) started returned `Ok`: every
    /// record up to `through` is durable (what later groups say as their witness).
    pub(crate) fn end_sync(&mut self, through: u64) {
        self.durable_lsn = self.durable_lsn.max(through);
    }

    /// Removes the segments that hold only records at or before `lsn` (a checkpoint has them);
    /// `appended`: [`appended`](Self::appended) when that checkpoint took its records.
    pub(crate) fn release(&mut self, lsn: u64, appended: u64) -> Result<()> {
        let active = self.active.as_ref().map(|a| a.seq);
        let mut keep = Vec::new();
        let mut retired = false;
        let segments = std::mem::take(&mut self.segments);
        for (i, &(seq, first)) in segments.iter().enumerate() {
            let last_lsn =
                segments.get(i + 1).map_or(self.next_lsn - 1, |&(_, next)| next.saturating_sub(1));
            if last_lsn <= lsn {
                if Some(seq) == active {
                    // Everything in it is in the checkpoint: the next append starts a segment.
                    self.active = None;
                    self.unsynced = 0;
                    self.durable_lsn = self.next_lsn - 1;
                }
                self.dir.retire(seq)?;
                retired = true;
            } else {
                keep.push((seq, first));
            }
        }
        if retired {
            // Before a spare's header is rewritten for reuse, its retirement is durable: no
            // crash brings it back under its old name with the new header.
            self.dir.sync()?;
        }
        self.segments = keep;
        // What was appended after the checkpoint's records is still to be released.
        self.released_at = self.released_at.max(appended);
        Ok(())
    }
}

/// A salt no earlier segment of this log had (the time and the sequence number, mixed).
pub(crate) fn fresh_salt(seq: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut bytes = [0u8; 24];
    bytes[..8].copy_from_slice(&nanos.to_le_bytes());
    bytes[8..16].copy_from_slice(&seq.to_le_bytes());
    bytes[16..].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
    checksum(&bytes) | 1
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use bob_io_helpers::testing::SimDisk;

    use super::*;

    #[derive(Clone, Default)]
    struct Dir(Arc<Mutex<BTreeMap<u64, SimDisk>>>);

    impl LogDir for Dir {
        fn list(&self) -> io::Result<Vec<u64>> {
            Ok(self.0.lock().unwrap().keys().copied().collect())
        }
        fn create(&self, seq: u64, header: &[u8]) -> io::Result<LogFile> {
            let disk = SimDisk::new();
            disk.write_at(header, 0)?;
            disk.sync_data()?;
            self.0.lock().unwrap().insert(seq, disk.clone());
            Ok(Arc::new(disk))
        }
        fn open(&self, seq: u64) -> io::Result<LogFile> {
            Ok(Arc::new(self.0.lock().unwrap()[&seq].clone()))
        }
        fn remove(&self, seq: u64) -> io::Result<()> {
            self.0.lock().unwrap().remove(&seq);
            Ok(())
        }
        fn sync(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn segment(dir: &Dir, seq: u64) -> SimDisk {
        dir.0.lock().unwrap()[&seq].clone()
    }

    /// A torn buffered group that ends exactly on a page boundary, followed by an intact one
    /// that starts there: a torn tail (the later group was never synced), not damage.
    #[test]
    fn a_torn_group_ending_on_a_page_boundary_is_a_tail() {
        let dir = Dir::default();
        let (mut wal, _) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        // 48 + 4 + 4,044 bytes: the first group fills page 1 exactly.
        wal.append(&[1u8; 4044], false).unwrap();
        wal.append(&[2u8; 10], false).unwrap();
        let disk = segment(&dir, 1);
        disk.write_at(&[0xEE; 100], PAGE + 200).unwrap();
        let (wal, records) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        assert!(records.is_empty());
        assert_eq!(wal.next_lsn, 1);
    }

    /// The same damage when the later group says the first had been synced: an error.
    #[test]
    fn a_damaged_group_a_later_one_says_was_synced_is_an_error() {
        let dir = Dir::default();
        let (mut wal, _) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        wal.append(&[1u8; 4044], true).unwrap();
        wal.append(&[2u8; 10], false).unwrap();
        segment(&dir, 1).write_at(&[0xEE; 100], PAGE + 200).unwrap();
        let err = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).err().expect("an error");
        assert!(matches!(err, Error::Corrupt(ref why) if why.contains("synced")), "{err}");
        // Inside the checkpoint, the same damage costs nothing.
        let (_, records) = Wal::open(Arc::new(dir), 7, 2, 1 << 20).unwrap();
        assert!(records.is_empty());
    }

    /// A damaged group whose record a checkpoint holds, with synced records after the
    /// checkpoint in the same segment: the chain goes on past the damage when a later group
    /// witnesses the first record past the checkpoint (the review's silent rollback: they were
    /// dropped, and the open said `Ok`).
    #[test]
    fn damage_inside_the_checkpoint_does_not_hide_the_records_after_it() {
        let dir = Dir::default();
        let (mut wal, _) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        for record in [&b"one"[..], b"two", b"three", b"four"] {
            wal.append(record, true).unwrap();
        }
        // Each synced group has a page of its own: damage the first.
        segment(&dir, 1).write_at(&[0xEE; 64], PAGE).unwrap();
        let (wal, records) = Wal::open(Arc::new(dir.clone()), 7, 1, 1 << 20).unwrap();
        let lsns: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert_eq!(lsns, [2, 3, 4]);
        assert_eq!(records[0].1, b"two");
        assert_eq!(wal.next_lsn, 5);
        // The second damaged too: record 2 is lost, and group 3 says it was synced.
        segment(&dir, 1).write_at(&[0xEE; 64], 2 * PAGE).unwrap();
        let err = Wal::open(Arc::new(dir.clone()), 7, 1, 1 << 20).err().expect("an error");
        assert!(matches!(err, Error::Corrupt(ref why) if why.contains("LSN 2")), "{err}");
        // With the checkpoint at 2, records 3 and 4 are needed; group 4 witnesses 3.
        let (_, records) = Wal::open(Arc::new(dir.clone()), 7, 2, 1 << 20).unwrap();
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), [3, 4]);
        // With the checkpoint at 3, nothing witnesses record 4 (the last sync): past a break
        // it cannot be told from a history an earlier open rolled back, and is not read (the
        // witness's documented blind spot).
        let (wal, records) = Wal::open(Arc::new(dir), 7, 3, 1 << 20).unwrap();
        assert!(records.is_empty());
        assert_eq!(wal.next_lsn, 4);
    }

    /// A helper's review of the resume: an open rolls back a tail (its first group lost, the
    /// rest unsynced and intact), the next session reuses those LSNs in a new segment and a
    /// checkpoint releases both segments; a power loss undoes the old segment's removal
    /// only. The old segment's intact groups past the checkpoint are not replayed.
    #[test]
    fn a_rolled_back_tail_is_not_replayed_past_a_later_checkpoint() {
        let dir = Dir::default();
        let (mut wal, _) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        for i in 1..=5u8 {
            wal.append(&[i; 5000], false).unwrap();
        }
        drop(wal);
        segment(&dir, 1).write_at(&[0xEE; PAGE as usize], PAGE).unwrap();
        let old = segment(&dir, 1);
        let (mut wal, records) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        assert!(records.is_empty());
        for record in [&b"new1"[..], b"new2", b"new3"] {
            wal.append(record, true).unwrap();
        }
        wal.release(3, wal.appended()).unwrap();
        assert!(dir.list().unwrap().is_empty());
        dir.0.lock().unwrap().insert(1, old);
        let (wal, records) = Wal::open(Arc::new(dir), 7, 3, 1 << 20).unwrap();
        assert!(records.is_empty(), "{:?}", records.iter().map(|r| r.0).collect::<Vec<_>>());
        assert_eq!(wal.next_lsn, 4);
    }

    /// Damage inside the checkpoint, and the records past it packed in the rest of the
    /// segment with no sync between them: the roll to the next segment synced them, and that
    /// segment's first group is their witness (helper-49's review: the resume looked for a
    /// witness in the damaged segment only, and the next segment's start then failed the
    /// continuity check with `Corrupt`, every record past the checkpoint intact).
    #[test]
    fn the_next_segments_first_group_witnesses_the_records_past_a_break() {
        let dir = Dir::default();
        let limit = 4 * PAGE;
        let (mut wal, _) = Wal::open(Arc::new(dir.clone()), 7, 0, limit).unwrap();
        wal.append(b"one", true).unwrap();
        wal.append(b"two", true).unwrap();
        wal.append(b"three", false).unwrap();
        wal.append(b"four", false).unwrap();
        // Too long for segment 1: it is synced, and segment 2's first group says so.
        wal.append(&[5u8; 4000], true).unwrap();
        assert_eq!(dir.list().unwrap(), [1, 2]);
        drop(wal);
        let lsns = |after: u64| -> Result<Vec<u64>> {
            let (_, records) = Wal::open(Arc::new(dir.clone()), 7, after, limit)?;
            Ok(records.iter().map(|r| r.0).collect())
        };
        assert_eq!(lsns(2).unwrap(), [3, 4, 5]);
        segment(&dir, 1).write_at(&[0xEE; 64], PAGE).unwrap();
        assert_eq!(lsns(2).unwrap(), [3, 4, 5]);
        assert_eq!(lsns(1).unwrap(), [2, 3, 4, 5]);
        // Past the checkpoint the damage is an error.
        assert!(matches!(lsns(0), Err(Error::Corrupt(_))));
    }

    /// Groups appended without a sync between them are packed, not page-aligned: the group
    /// after a damaged one inside the checkpoint is found at any byte offset.
    #[test]
    fn the_chain_resumes_at_a_packed_group_after_damage_inside_the_checkpoint() {
        let dir = Dir::default();
        let (mut wal, _) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        for record in [&b"one"[..], b"two", b"three"] {
            wal.append(record, false).unwrap();
        }
        wal.sync().unwrap();
        wal.append(b"four", true).unwrap();
        segment(&dir, 1).write_at(&[0xEE; 8], PAGE + 16).unwrap();
        let (_, records) = Wal::open(Arc::new(dir.clone()), 7, 1, 1 << 20).unwrap();
        let lsns: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert_eq!(lsns, [2, 3, 4]);
        assert_eq!(records[0].1, b"two");
        // Past the checkpoint the same damage is an error: group 4 says 1 was synced.
        assert!(matches!(Wal::open(Arc::new(dir), 7, 0, 1 << 20), Err(Error::Corrupt(_))));
    }

    /// A last segment whose creation a crash cut short is removed, so that it never stands
    /// before a later segment; a damaged header with groups after it is an error.
    #[test]
    fn a_segment_cut_short_at_creation_is_removed_and_a_damaged_one_refused() {
        let dir = Dir::default();
        let (mut wal, _) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        wal.append(b"one", true).unwrap();
        dir.0.lock().unwrap().insert(2, SimDisk::from_image(vec![b'B'; 20]));
        let (mut wal, records) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        assert_eq!(records, [(1, b"one".to_vec())]);
        assert_eq!(dir.list().unwrap(), [1]);
        wal.append(b"two", true).unwrap();
        let (_, records) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        assert_eq!(records.len(), 2);
        // Damage the header of a segment that holds groups.
        segment(&dir, 1).write_at(&[0; 8], 8).unwrap();
        assert!(Wal::open(Arc::new(dir), 7, 0, 1 << 20).is_err());
    }

    /// A failed sync poisons the log: a later sync (the kernel may have marked the pages it
    /// could not write clean, so the disk would report success) and a later append fail,
    /// and nothing is reported durable.
    #[test]
    fn a_failed_sync_fails_every_later_sync_and_append() {
        use bob_io_helpers::testing::{FaultKind, FaultPlan, OpFilter, OpKind, Repeat};
        let dir = Dir::default();
        let (mut wal, _) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        wal.append(b"one", true).unwrap();
        wal.append_padded(b"two").unwrap();
        let disk = segment(&dir, 1);
        disk.set_fault(FaultPlan {
            at: disk.op_counts().syncs,
            on: OpFilter::Only(OpKind::Sync),
            kind: FaultKind::Io,
            repeat: Repeat::Once,
        });
        let job = wal.begin_sync().unwrap().expect("a record to sync");
        assert_eq!(job.through, 2);
        assert!(job.run().is_err());
        assert_eq!(wal.durable_lsn, 1);
        assert!(wal.sync().is_err(), "a retry would find the pages clean and succeed");
        assert!(wal.begin_sync().is_err());
        assert!(wal.append(b"three", false).is_err());
        assert_eq!(wal.durable_lsn, 1);
    }

    /// A spare is reused while a handle to it as a retired segment is still alive (a group
    /// commit's sync that began before the release): the reuse must not wait on that
    /// handle (it did, on its lock, and the commit failed with `Locked` after 500 ms).
    #[test]
    fn a_spare_is_reused_while_its_old_handle_is_alive() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OsLogDir::new(tmp.path()).unwrap();
        assert!(dir.prepare_spare(8 * PAGE).unwrap());
        let header = vec![0u8; PAGE as usize];
        let first = dir.create(1, &header).unwrap();
        dir.retire(1).unwrap();
        dir.sync().unwrap();
        let second = dir.create(2, &header).unwrap();
        first.sync_data().unwrap();
        second.write_at(b"group", PAGE).unwrap();
        second.sync_data().unwrap();
        assert_eq!(dir.list().unwrap(), [2]);
    }

    /// A read error is an error, never the end of the log.
    #[test]
    fn a_read_error_is_not_a_torn_tail() {
        use bob_io_helpers::testing::{FaultKind, FaultPlan, OpFilter, OpKind, Repeat};
        let dir = Dir::default();
        let (mut wal, _) = Wal::open(Arc::new(dir.clone()), 7, 0, 1 << 20).unwrap();
        wal.append(b"one", true).unwrap();
        wal.append(b"two", true).unwrap();
        segment(&dir, 1).set_fault(FaultPlan {
            at: 1,
            on: OpFilter::Only(OpKind::Read),
            kind: FaultKind::Io,
            repeat: Repeat::Always,
        });
        assert!(matches!(Wal::open(Arc::new(dir), 7, 0, 1 << 20), Err(Error::Log(_))));
    }
}
