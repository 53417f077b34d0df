//! `FirstFit`: the lowest free extent that holds a length, in O(log n), for compaction.

use bob_alloc::Extent;

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
    pub(crate) fn take(&mut self, len: u64, below: u64) -> Option<Extent> {
        if self.holes.is_empty() || self.tree[1] < len {
            return None;
        }
        let mut node = 1;
        while node < self.size {
            node = if self.tree[2 * node] >= len { 2 * node } else { 2 * node + 1 };
        }
        let index = node - self.size;
        let hole = &mut self.holes[index];
        if hole.offset + len > below {
            return None; // the lowest fit is not below: nothing lower is
        }
        let taken = Extent::new(hole.offset, len);
        hole.offset += len;
        hole.len -= len;
        let mut at = node;
        self.tree[at] = hole.len;
        while at > 1 {
            at /= 2;
            self.tree[at] = self.tree[2 * at].max(self.tree[2 * at + 1]);
        }
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Agrees with a linear first-fit scan.
        #[test]
        fn matches_a_linear_scan(
            lens in proptest::collection::vec(1u64..50, 0..40),
            asks in proptest::collection::vec((1u64..60, 0u64..3000), 0..60),
        ) {
            let mut offset = 0;
            let holes: Vec<Extent> = lens
                .iter()
                .map(|&len| {
                    offset += 7;
                    let hole = Extent::new(offset, len);
                    offset += len;
                    hole
                })
                .collect();
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
    }
}
