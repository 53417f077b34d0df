//! Merged batch reads: requests sorted by offset, neighbours within a gap read with one
//! positioned read, split, checked, and returned in request order.

use std::collections::HashMap;

use bob_io_helpers::checksum;

use crate::{Error, Result};

/// One read of a batch: `len` bytes at `offset`, checked against `checksum` (xxh3-64, as
/// `bob_io_helpers::checksum` computes it) when one is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    /// Where the bytes start.
    pub offset: u64,
    /// How many.
    pub len: u64,
    /// Their checksum, if the caller knows it: a mismatch is [`Error::ChecksumMismatch`] for
    /// this request alone.
    pub checksum: Option<u64>,
}

impl ReadRequest {
    /// `len` bytes at `offset`, checked against `checksum`.
    pub fn checked(offset: u64, len: u64, checksum: u64) -> Self {
        Self { offset, len, checksum: Some(checksum) }
    }

    /// `len` bytes at `offset`, unchecked.
    pub fn unchecked(offset: u64, len: u64) -> Self {
        Self { offset, len, checksum: None }
    }
}

/// How a batch read merges its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchReadOptions {
    /// Requests whose bytes lie at most this far apart are read with one positioned read (the
    /// gap is read too, and dropped). Default 64 KiB.
    pub gap: u64,
    /// The longest merged read, in bytes (a request longer than this is read alone).
    /// Default 8 MiB.
    pub max_read: u64,
}

impl Default for BatchReadOptions {
    fn default() -> Self {
        Self { gap: 64 << 10, max_read: 8 << 20 }
    }
}

/// What a batch read did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReadReport {
    /// Requests asked for.
    pub requests: usize,
    /// Distinct `(offset, len)` among them: each read once.
    pub distinct: usize,
    /// Positioned reads made (one per merged group).
    pub reads: usize,
    /// Bytes those reads covered, gaps included.
    pub bytes_read: u64,
}

/// Runs a batch of `requests` through `read_range(offset, len)` over a file of `file_len`
/// bytes; results in request order. A request past `file_len` is `OutOfRange` alone, before
/// anything is allocated for it.
pub(crate) fn read_batch_with(
    requests: &[ReadRequest],
    options: &BatchReadOptions,
    file_len: u64,
    read_range: impl Fn(u64, u64) -> Result<Vec<u8>>,
) -> (Vec<Result<Vec<u8>>>, BatchReadReport) {
    let mut report = BatchReadReport { requests: requests.len(), ..BatchReadReport::default() };
    // Distinct ranges, each read once however often it was asked for.
    let mut distinct: Vec<(u64, u64)> = Vec::new();
    let mut index: HashMap<(u64, u64), usize> = HashMap::new();
    let mut bad = vec![None; requests.len()];
    for (i, r) in requests.iter().enumerate() {
        if r.offset.checked_add(r.len).is_none_or(|end| end > file_len) {
            bad[i] = Some(Error::OutOfRange { offset: r.offset, len: r.len, file_len });
            continue;
        }
        index.entry((r.offset, r.len)).or_insert_with(|| {
            distinct.push((r.offset, r.len));
            distinct.len() - 1
        });
    }
    report.distinct = distinct.len();
    let mut order: Vec<usize> = (0..distinct.len()).collect();
    order.sort_unstable_by_key(|&d| distinct[d]);
    let mut fetched: Vec<Option<Result<Vec<u8>>>> = vec![None; distinct.len()];
    let mut at = 0;
    while at < order.len() {
        // A group: requests that start within `gap` of the group's end so far.
        let (start, first_len) = distinct[order[at]];
        let mut end = start + first_len;
        let mut next = at + 1;
        while next < order.len() {
            let (offset, len) = distinct[order[next]];
            let new_end = end.max(offset + len);
            if offset > end.saturating_add(options.gap) || new_end - start > options.max_read {
                break;
            }
            end = new_end;
            next += 1;
        }
        let group = &order[at..next];
        if end == start {
            for &d in group {
                fetched[d] = Some(Ok(Vec::new()));
            }
        } else {
            report.reads += 1;
            report.bytes_read += end - start;
            match read_range(start, end - start) {
                Ok(bytes) => {
                    for &d in group {
                        let (offset, len) = distinct[d];
                        let from = (offset - start) as usize;
                        fetched[d] = Some(Ok(bytes[from..from + len as usize].to_vec()));
                    }
                }
                Err(e) if group.len() == 1 => fetched[group[0]] = Some(Err(e)),
                Err(_) => {
                    // A failed read of one range must not fail its neighbours: each is read
                    // again alone.
                    for &d in group {
                        let (offset, len) = distinct[d];
                        fetched[d] = Some(if len == 0 {
                            Ok(Vec::new())
                        } else {
                            report.reads += 1;
                            report.bytes_read += len;
                            read_range(offset, len)
                        });
                    }
                }
            }
        }
        at = next;
    }
    let results = requests
        .iter()
        .zip(bad)
        .map(|(r, bad)| {
            if let Some(e) = bad {
                return Err(e);
            }
            let bytes = fetched[index[&(r.offset, r.len)]].clone().expect("every range fetched")?;
            match r.checksum {
                Some(expected) => {
                    let computed = checksum(&bytes);
                    if computed == expected {
                        Ok(bytes)
                    } else {
                        Err(Error::ChecksumMismatch {
                            offset: r.offset,
                            len: r.len,
                            expected,
                            computed,
                        })
                    }
                }
                None => Ok(bytes),
            }
        })
        .collect();
    (results, report)
}

/// Reads a batch from `backend`: see [`BatchReadOptions`] for the merging; results in the
/// order of `requests`, duplicates read once, each checked against its checksum, a request
/// past the file's end [`Error::OutOfRange`] alone. If the file's length cannot be read,
/// every request gets that error.
pub fn read_batch<B: bob_io_helpers::FileBackend + ?Sized>(
    backend: &B,
    requests: &[ReadRequest],
    options: &BatchReadOptions,
) -> (Vec<Result<Vec<u8>>>, BatchReadReport) {
    let file_len = match backend.len() {
        Ok(len) => len,
        Err(e) => {
            let e = Error::from(e);
            let report = BatchReadReport { requests: requests.len(), ..BatchReadReport::default() };
            return (requests.iter().map(|_| Err(e.clone())).collect(), report);
        }
    };
    read_batch_with(requests, options, file_len, |offset, len| {
        let mut buf = Vec::new();
        backend.read_to_vec(&mut buf, len as usize, offset)?;
        Ok(buf)
    })
}
