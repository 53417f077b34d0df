//! Batched positioned writes: `write_batched_sections` and `write_zeros`.

use std::io::IoSlice;

use crate::section::checked_end;
use crate::{Error, FileBackend, Result};

/// Bytes of zeros written per call by [`write_zeros`].
const ZERO_CHUNK_BYTES: usize = 64 * 1024;
static ZEROS: [u8; ZERO_CHUNK_BYTES] = [0; ZERO_CHUNK_BYTES];

/// One piece of a batched write: `data` goes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section<'a> {
    /// Where the bytes go in the file.
    pub offset: u64,
    /// The bytes.
    pub data: &'a [u8],
}

impl<'a> Section<'a> {
    /// A section writing `data` at `offset`.
    pub fn new(offset: u64, data: &'a [u8]) -> Self {
        Self { offset, data }
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

/// What one call of [`write_batched_sections`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Non-empty sections written.
    pub sections: usize,
    /// Positioned writes issued: one per run of contiguous sections.
    pub runs: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes every section, coalescing sections that are exactly contiguous into one positioned
/// (vectored) write each. Gaps are never filled.
///
/// Sections may come in any order; empty ones are skipped. Overlapping sections, or a section
/// whose end passes the largest offset, are refused before anything is written. If a write
/// fails, runs before it have been written and the contents of the failed run are unknown.
pub fn write_batched_sections<B: FileBackend + ?Sized>(
    backend: &B,
    sections: &[Section<'_>],
) -> Result<BatchReport> {
    let sorted = sorted_disjoint(sections)?;
    let mut report = BatchReport { sections: sorted.len(), runs: 0, bytes: 0 };
    let mut slices: Vec<IoSlice<'_>> = Vec::new();
    for run in sorted.chunk_by(|a, b| a.offset + a.len() == b.offset) {
        report.runs += 1;
        report.bytes += run.iter().map(Section::len).sum::<u64>();
        if let [single] = run {
            backend.write_at(single.data, single.offset)?;
        } else {
            slices.clear();
            slices.extend(run.iter().map(|s| IoSlice::new(s.data)));
            backend.write_vectored_at(&slices, run[0].offset)?;
        }
    }
    Ok(report)
}

/// The non-empty sections sorted by offset, after checking that none passes the largest
/// offset and no two overlap.
fn sorted_disjoint<'a>(sections: &[Section<'a>]) -> Result<Vec<Section<'a>>> {
    let mut sorted: Vec<Section<'a>> =
        sections.iter().copied().filter(|s| !s.data.is_empty()).collect();
    for section in &sorted {
        checked_end(section.offset, section.len())?;
    }
    sorted.sort_unstable_by_key(|s| s.offset);
    for pair in sorted.windows(2) {
        if pair[1].offset < pair[0].offset + pair[0].len() {
            return Err(Error::OverlappingSections {
                first_offset: pair[0].offset,
                first_len: pair[0].len(),
                second_offset: pair[1].offset,
            });
        }
    }
    Ok(sorted)
}

/// Writes `len` zero bytes at `offset`, in chunks of 64 KiB.
pub fn write_zeros<B: FileBackend + ?Sized>(backend: &B, offset: u64, len: u64) -> Result<()> {
    let end = checked_end(offset, len)?;
    let mut position = offset;
    while position < end {
        let n = (end - position).min(ZERO_CHUNK_BYTES as u64) as usize;
        backend.write_at(&ZEROS[..n], position)?;
        position += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SimDisk;

    #[test]
    fn contiguous_sections_become_one_write_and_gaps_stay() {
        let disk = SimDisk::from_image(vec![0xEE; 40]);
        let a = [1u8; 4];
        let b = [2u8; 4];
        let c = [3u8; 4];
        // Given out of order; c is separated from a-b by a 4-byte gap.
        let sections = [Section::new(4, &b), Section::new(12, &c), Section::new(0, &a)];
        let before = disk.op_counts().writes;
        let report = write_batched_sections(&disk, &sections).unwrap();
        assert_eq!(report, BatchReport { sections: 3, runs: 2, bytes: 12 });
        assert_eq!(disk.op_counts().writes - before, 2);
        let image = disk.live_image();
        assert_eq!(&image[..8], &[1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(&image[8..12], &[0xEE; 4], "the gap is never filled");
        assert_eq!(&image[12..16], &[3; 4]);
    }

    #[test]
    fn overlapping_sections_are_refused_before_any_write() {
        let disk = SimDisk::new();
        let data = [1u8; 8];
        let err = write_batched_sections(
            &disk,
            &[Section::new(0, &data), Section::new(20, &data), Section::new(4, &data)],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::OverlappingSections { first_offset: 0, first_len: 8, second_offset: 4 }
            ),
            "{err}"
        );
        assert_eq!(disk.op_counts().writes, 0);
        assert_eq!(disk.live_image().len(), 0);
    }

    #[test]
    fn empty_sections_are_skipped_even_inside_others() {
        let disk = SimDisk::new();
        let data = [5u8; 8];
        let report =
            write_batched_sections(&disk, &[Section::new(0, &data), Section::new(3, &[])]).unwrap();
        assert_eq!(report, BatchReport { sections: 1, runs: 1, bytes: 8 });
    }

    #[test]
    fn a_section_past_the_largest_offset_is_refused() {
        let disk = SimDisk::new();
        let err = write_batched_sections(&disk, &[Section::new(u64::MAX, &[1])]).unwrap_err();
        assert!(matches!(err, Error::OffsetOverflow { .. }));
    }

    #[test]
    fn write_zeros_clears_exactly_the_range() {
        let disk = SimDisk::from_image(vec![0xFF; 200_000]);
        write_zeros(&disk, 7, 150_000).unwrap();
        let image = disk.live_image();
        assert_eq!(image[6], 0xFF);
        assert!(image[7..150_007].iter().all(|&b| b == 0));
        assert_eq!(image[150_007], 0xFF);
        assert!(matches!(write_zeros(&disk, u64::MAX, 2), Err(Error::OffsetOverflow { .. })));
    }
}
