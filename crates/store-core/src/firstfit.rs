//! `FirstFit`: the lowest free extent that holds a length, in O(log n), for compaction.

use bob_alloc::Extent;

/// Holes that hold a request but not once aligned, skipped before an aligned request settles
/// for the lowest hole that holds it wherever it starts.
const ALIGNED_TRIES: usize = 64;

/// Free extents in ascending order under a max-segment tree of their lengths.
#[derive(Debug)]
pub(crate) struct FirstFit {
    holes: Vec<Extent>,
    /// `tree[size + i]` is hole `i`'s length; each inner node the max of its children.
    tree: Vec<u64>,
    size: usize,
}

impl FirstFit {
    /// Over `holes`, which must be ascending and disjoint.
    pub(crate) fn new(holes: Vec<Extent>) -> Self {
        let size = holes.len().next_power_of_two().max(1);
        let mut tree = vec![0; 2 * size];
        for (i, hole) in holes.iter().enumerate() {
            tree[size + i] = hole.len;
        }
        for node in (1..size).rev() {
            tree[node] = tree[2 * node].max(tree[2 * node + 1]);
        }
        Self { holes, tree, size }
    }

    /// Takes `len` bytes from the front of the lowest hole that holds them, if that space
    /// ends at or before `below`.
    #[cfg(test)]
    pub(crate) fn take(&mut self, len: u64, below: u64) -> Option<Extent> {
        self.take_aligned(len, below, 1).map(|(taken, _)| taken)
    }

    /// Takes `len` bytes starting at a multiple of `align` (a power of two) from the lowest
    /// hole that holds them so (among the first [`ALIGNED_TRIES`] holes of `len` bytes or
    /// more; past them, the lowest that holds them wherever it starts), if they end at or
    /// before `below`. Returns the extent and how many bytes before it, at the hole's front,
    /// were skipped to reach the boundary: they stay free, but this pass no longer offers
    /// them.
    pub(crate) fn take_aligned(
        &mut self,
        len: u64,
        below: u64,
        align: u64,
    ) -> Option<(Extent, u64)> {
        let fits = |hole: &Extent| hole.offset.next_multiple_of(align) + len <= hole.end();
        let mut leaf = self.first_at_least(len, 0)?;
        let mut tries = 0;
        while !fits(&self.holes[leaf - self.size]) {
            tries += 1;
            let next =
                if tries < ALIGNED_TRIES { self.first_at_least(len, leaf + 1) } else { None };
            leaf = match next {
                Some(next) => next,
                // Every hole of `len + align - 1` bytes holds them, wherever it starts.
                None => self.first_at_least(len + align - 1, 0)?,
            };
        }
        let hole = &mut self.holes[leaf - self.size];
        let at = hole.offset.next_multiple_of(align);
        if at + len > below {
            // The lowest fit found is not below: nothing lower is, among the holes looked at
            // (an aligned request past `ALIGNED_TRIES` misses settles for the lowest hole
            // that holds it anywhere, and may pass over a lower one that holds it aligned).
            return None;
        }
        let skipped = at - hole.offset;
        let end = hole.end();
        *hole = Extent::new(at + len, end - at - len);
        let mut node = leaf;
        self.tree[node] = hole.len;
        while node > 1 {
            node /= 2;
            self.tree[node] = self.tree[2 * node].max(self.tree[2 * node + 1]);
        }
        Some((Extent::new(at, len), skipped))
    }

    /// The leaf (tree index) of the lowest hole of at least `len` bytes whose index is
    /// `from` or more (a tree index, or 0 for the first).
    fn first_at_least(&self, len: u64, from: usize) -> Option<usize> {
        if self.holes.is_empty() {
            return None;
        }
        let from = from.max(self.size);
        if from >= 2 * self.size {
            return None;
        }
        if self.tree[from] >= len {
            return Some(from);
        }
        // Up until a right sibling holds one, then down its leftmost fit.
        let mut node = from;
        loop {
            if node == 1 {
                return None;
            }
            if node % 2 == 0 && self.tree[node + 1] >= len {
                node += 1;
                break;
            }
            node /= 2;
        }
        while node < self.size {
            node = if self.tree[2 * node] >= len { 2 * node } else { 2 * node + 1 };
        }
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Holes of `lens` bytes, each `gap` bytes past the end of the one before.
    fn laid_out(lens: &[u64], gaps: impl IntoIterator<Item = u64>) -> Vec<Extent> {
        let mut offset = 0;
        lens.iter()
            .zip(gaps)
            .map(|(&len, gap)| {
                offset += gap;
                let hole = Extent::new(offset, len);
                offset += len;
                hole
            })
            .collect()
    }

    proptest! {
        /// Agrees with a linear first-fit scan.
        #[test]
        fn matches_a_linear_scan(
            lens in proptest::collection::vec(1u64..50, 0..40),
            asks in proptest::collection::vec((1u64..60, 0u64..3000), 0..60),
        ) {
            let holes = laid_out(&lens, std::iter::repeat(7));
            let mut fast = FirstFit::new(holes.clone());
            let mut slow = holes;
            for (len, below) in asks {
                let expected = slow
                    .iter_mut()
                    .take_while(|h| h.offset + len <= below)
                    .find(|h| h.len >= len)
                    .map(|h| {
                        let taken = Extent::new(h.offset, len);
                        h.offset += len;
                        h.len -= len;
                        taken
                    });
                prop_assert_eq!(fast.take(len, below), expected);
            }
        }

        /// Past `ALIGNED_TRIES` holes that do not hold an aligned request, it takes the lowest
        /// hole that holds the request wherever it starts (aligned), if below.
        #[test]
        fn aligned_takes_settle_after_the_tries(
            misses in 65usize..90,
            below in prop_oneof![Just(u64::MAX), 0u64..2_000_000],
        ) {
            // `misses` holes of 6,000 B at 1 mod 4096 (an aligned page does not fit), then
            // three that hold one aligned, then one of 8,191 B (holds one anywhere).
            let mut holes: Vec<Extent> =
                (0..misses as u64).map(|i| Extent::new(i * 16_384 + 1, 6_000)).collect();
            let base = misses as u64 * 16_384;
            holes.extend((0..3u64).map(|i| Extent::new(base + i * 16_384, 4_096)));
            holes.push(Extent::new(base + 3 * 16_384 + 5, 8_191));
            let mut fast = FirstFit::new(holes.clone());
            let got = fast.take_aligned(4_096, below, 4_096);
            // The tries are spent on the misses; the fallback is the 8,191 B hole.
            let fallback = (base + 3 * 16_384 + 5).next_multiple_of(4_096);
            let expected = (fallback + 4_096 <= below)
                .then(|| (Extent::new(fallback, 4_096), fallback - (base + 3 * 16_384 + 5)));
            prop_assert_eq!(got, expected);
            if let Some((taken, _)) = got {
                prop_assert_eq!(taken.offset % 4_096, 0);
                prop_assert!(holes.iter().any(|h| h.offset <= taken.offset && taken.end() <= h.end()));
            }
        }

        /// Aligned takes agree with a linear scan for the first hole that holds the request
        /// from a multiple of the alignment (fewer holes than the tries bound).
        #[test]
        fn aligned_takes_match_a_linear_scan(
            lens in proptest::collection::vec(1u64..50, 0..40),
            gaps in proptest::collection::vec(1u64..9, 40),
            asks in proptest::collection::vec((1u64..40, 0u64..3000, 0u32..4), 0..60),
        ) {
            let holes = laid_out(&lens, gaps.iter().copied());
            let mut fast = FirstFit::new(holes.clone());
            let mut slow = holes;
            for (len, below, shift) in asks {
                let align = 1u64 << shift;
                let expected = slow
                    .iter_mut()
                    .find(|h| h.offset.next_multiple_of(align) + len <= h.end())
                    .filter(|h| h.offset.next_multiple_of(align) + len <= below)
                    .map(|h| {
                        let at = h.offset.next_multiple_of(align);
                        let skipped = at - h.offset;
                        let end = h.end();
                        *h = Extent::new(at + len, end - at - len);
                        (Extent::new(at, len), skipped)
                    });
                prop_assert_eq!(fast.take_aligned(len, below, align), expected);
            }
        }
    }
}
