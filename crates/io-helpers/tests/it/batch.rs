//! `write_batched_sections` against a model: applying the sections one by one to a `Vec`.

use bob_io_helpers::testing::SimDisk;
use bob_io_helpers::{Error, FileBackend, OsFile, Section, write_batched_sections};
use proptest::prelude::*;

fn apply_one_by_one(mut image: Vec<u8>, sections: &[(u64, Vec<u8>)]) -> Vec<u8> {
    for (offset, data) in sections {
        if data.is_empty() {
            continue;
        }
        let start = *offset as usize;
        let end = start + data.len();
        if image.len() < end {
            image.resize(end, 0);
        }
        image[start..end].copy_from_slice(data);
    }
    image
}

/// Any two non-empty sections share a byte.
fn overlaps(sections: &[(u64, Vec<u8>)]) -> bool {
    let ranges: Vec<_> = sections
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(o, d)| (*o, *o + d.len() as u64))
        .collect();
    ranges.iter().enumerate().any(|(i, a)| ranges[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1))
}

/// The number of maximal runs of exactly contiguous non-empty sections.
fn expected_runs(sections: &[(u64, Vec<u8>)]) -> usize {
    let mut ranges: Vec<_> = sections
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(o, d)| (*o, *o + d.len() as u64))
        .collect();
    ranges.sort();
    ranges.windows(2).filter(|w| w[0].1 != w[1].0).count() + usize::from(!ranges.is_empty())
}

/// Sections that are often contiguous: each starts at the previous end, or a little after,
/// or somewhere random.
fn sections_strategy() -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
    prop::collection::vec((0u8..4, 0u64..2048, prop::collection::vec(any::<u8>(), 0..200)), 0..12)
        .prop_map(|raw| {
            let mut end = 0u64;
            let mut out = Vec::new();
            for (how, random_offset, data) in raw {
                let offset = match how {
                    0 | 1 => end,
                    2 => end + random_offset % 16,
                    _ => random_offset,
                };
                end = offset + data.len() as u64;
                out.push((offset, data));
            }
            out
        })
        .prop_shuffle()
}

fn check_backend<B: FileBackend>(
    backend: &B,
    sections: &[(u64, Vec<u8>)],
) -> Result<(), TestCaseError> {
    let initial: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8 + 1).collect();
    backend.write_at(&initial, 0).unwrap();
    let refs: Vec<Section<'_>> = sections.iter().map(|(o, d)| Section::new(*o, d)).collect();
    let result = write_batched_sections(backend, &refs);
    let mut image = vec![0u8; backend.len().unwrap() as usize];
    backend.read_at(&mut image, 0).unwrap();
    if overlaps(sections) {
        prop_assert!(matches!(result, Err(Error::OverlappingSections { .. })), "{:?}", result);
        prop_assert_eq!(image, initial, "a refused batch wrote nothing");
    } else {
        let report = result.unwrap();
        prop_assert_eq!(report.runs, expected_runs(sections));
        prop_assert_eq!(report.sections, sections.iter().filter(|(_, d)| !d.is_empty()).count());
        prop_assert_eq!(image, apply_one_by_one(initial, sections));
    }
    Ok(())
}

proptest! {
    #[test]
    fn batched_sections_match_one_by_one_on_sim_disk(sections in sections_strategy()) {
        let disk = SimDisk::new();
        check_backend(&disk, &sections)?;
    }

    #[test]
    fn batched_sections_match_one_by_one_on_a_real_file(sections in sections_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let file = OsFile::create_new(&dir.path().join("f")).unwrap();
        check_backend(&file, &sections)?;
    }
}

#[test]
fn contiguous_sections_cost_one_write_per_run() {
    let disk = SimDisk::new();
    let blocks: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 4096]).collect();
    let contiguous: Vec<Section<'_>> =
        blocks.iter().enumerate().map(|(i, b)| Section::new(i as u64 * 4096, b)).collect();
    let report = write_batched_sections(&disk, &contiguous).unwrap();
    assert_eq!((report.runs, disk.op_counts().writes), (1, 1));

    let scattered: Vec<Section<'_>> =
        blocks.iter().enumerate().map(|(i, b)| Section::new(i as u64 * 8192, b)).collect();
    let report = write_batched_sections(&disk, &scattered).unwrap();
    assert_eq!(report.runs, 64);
}
