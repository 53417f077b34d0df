//! `PageSet`: the set of dirty table pages, as a bitmap (a put marks its page in O(1)).

/// A set of page numbers, one bit each.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageSet {
    words: Vec<u64>,
    len: usize,
}

impl PageSet {
    /// Adds `page`.
    #[inline]
    pub(crate) fn insert(&mut self, page: u64) {
        let (word, bit) = ((page / 64) as usize, page % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        if self.words[word] & mask == 0 {
            self.words[word] |= mask;
            self.len += 1;
        }
    }

    /// Adds every page in `pages`.
    pub(crate) fn extend(&mut self, pages: impl IntoIterator<Item = u64>) {
        for page in pages {
            self.insert(page);
        }
    }

    /// Whether `page` is in the set.
    pub(crate) fn contains(&self, page: u64) -> bool {
        self.words.get((page / 64) as usize).is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    /// Empties the set, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
        self.len = 0;
    }

    /// The largest page, if any.
    #[cfg(test)]
    pub(crate) fn last(&self) -> Option<u64> {
        let (index, word) = self.words.iter().enumerate().rev().find(|(_, w)| **w != 0)?;
        Some(index as u64 * 64 + 63 - u64::from(word.leading_zeros()))
    }

    /// Pages in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(index as u64 * 64 + u64::from(bit))
            })
        })
    }

    /// Pages in the set.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn behaves_like_a_btreeset(ops in proptest::collection::vec((0u64..700, any::<bool>()), 0..200)) {
            let mut set = PageSet::default();
            let mut model = std::collections::BTreeSet::new();
            for (page, clear) in ops {
                if clear && page % 17 == 0 {
                    set.clear();
                    model.clear();
                } else {
                    set.insert(page);
                    model.insert(page);
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert_eq!(set.last(), model.last().copied());
                prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            }
        }
    }
}
