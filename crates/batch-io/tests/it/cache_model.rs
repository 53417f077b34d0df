//! The disk cache against a model (a `BTreeMap` with the cache's LRU and TTL rules) under
//! random stores, buffered stores, flushes, lookups, batches, removes, a clock that moves
//! and reopens, with compression off and on: the answers, the entries, the bytes kept and
//! every counter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bob_batch_io::{DiskCache, DiskCacheOptions};
use proptest::prelude::*;

/// The tests' clock, in milliseconds since the epoch (only this module's tests read it; each
/// holds `CLOCK` while it runs, so two running at once do not move each other's clock).
static NOW_MS: AtomicU64 = AtomicU64::new(0);
static CLOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(NOW_MS.load(Ordering::SeqCst))
}

const CAPACITY: u64 = 8_000;
const TTL_MS: u64 = 1_000;
const MAX_BUFFERED: usize = 3;

fn options(compress: bool) -> DiskCacheOptions {
    DiskCacheOptions {
        compress,
        capacity_bytes: CAPACITY,
        ttl: Some(Duration::from_millis(TTL_MS)),
        max_buffered: MAX_BUFFERED,
        now,
        // Every batch of three blobs or more prefetches, about three blobs ahead.
        device_read: Some(Duration::ZERO),
        prefetch_bytes: 1_500,
        ..DiskCacheOptions::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Store(u8, usize, u8),
    Buffered(u8, usize, u8),
    Flush,
    Lookup(u8),
    Batch(Vec<u8>),
    Remove(u8),
    Advance(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..6;
    prop_oneof![
        4 => (key.clone(), 0usize..3000, any::<u8>()).prop_map(|(k, l, t)| Op::Store(k, l, t)),
        3 => (key.clone(), 0usize..3000, any::<u8>()).prop_map(|(k, l, t)| Op::Buffered(k, l, t)),
        1 => Just(Op::Flush),
        4 => key.clone().prop_map(Op::Lookup),
        2 => prop::collection::vec(key.clone(), 0..8).prop_map(Op::Batch),
        2 => key.prop_map(Op::Remove),
        2 => (0u64..1500).prop_map(Op::Advance),
        1 => Just(Op::Reopen),
    ]
}

fn value(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| tag ^ (i as u8).wrapping_mul(7)).collect()
}

/// The cache's rules, on a map.
#[derive(Debug, Default)]
struct Model {
    compress: bool,
    /// key → (value, time stored, expiry).
    entries: BTreeMap<Vec<u8>, (Vec<u8>, u64, u64)>,
    pending: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Least recently used first.
    recency: Vec<Vec<u8>>,
    /// (hits, misses, evictions, expirations) since the last open.
    counters: (u64, u64, u64, u64),
}

impl Model {
    /// The bytes a value takes in the cache: compressed when that makes it shorter.
    fn kept(&self, value: &[u8]) -> u64 {
        let packed = lz4_flex::compress_prepend_size(value).len();
        if self.compress && packed < value.len() { packed as u64 } else { value.len() as u64 }
    }

    fn bytes(&self) -> u64 {
        self.entries.values().map(|(v, ..)| self.kept(v)).sum()
    }

    fn touch(&mut self, key: &[u8]) {
        self.recency.retain(|k| k != key);
        self.recency.push(key.to_vec());
    }

    fn commit(&mut self, puts: Vec<(Vec<u8>, Vec<u8>)>, removes: &[Vec<u8>], now: u64) {
        let before = self.recency.clone();
        let mut gone = Vec::new();
        for key in removes {
            self.entries.remove(key);
            gone.push(key.clone());
        }
        for (key, value) in &puts {
            self.entries.insert(key.clone(), (value.clone(), now, now + TTL_MS));
        }
        let mut bytes = self.bytes();
        // Expired entries first, soonest expired first; then the least recently used.
        let mut past: Vec<(u64, Vec<u8>)> = self
            .entries
            .iter()
            .filter(|(_, (_, _, expires))| *expires <= now)
            .map(|(k, (_, _, expires))| (*expires, k.clone()))
            .collect();
        past.sort();
        for key in past.into_iter().map(|(_, k)| k).chain(before) {
            if bytes <= CAPACITY {
                break;
            }
            if puts.iter().any(|(k, _)| *k == key) {
                continue;
            }
            if let Some((v, _, expires)) = self.entries.remove(&key) {
                bytes -= self.kept(&v);
                if expires <= now {
                    self.counters.3 += 1;
                } else {
                    self.counters.2 += 1;
                }
                gone.push(key);
            }
        }
        self.recency.retain(|k| !gone.contains(k));
        for (key, _) in &puts {
            self.touch(key);
        }
    }

    fn flush(&mut self, now: u64) {
        if !self.pending.is_empty() {
            let puts: Vec<_> = std::mem::take(&mut self.pending).into_iter().collect();
            self.commit(puts, &[], now);
        }
    }

    fn lookup(&mut self, key: &[u8], now: u64) -> Option<Vec<u8>> {
        if let Some(v) = self.pending.get(key) {
            self.counters.0 += 1;
            return Some(v.clone());
        }
        match self.entries.get(key) {
            Some((v, _, expires)) if now < *expires => {
                let v = v.clone();
                self.touch(key);
                self.counters.0 += 1;
                Some(v)
            }
            Some(_) => {
                self.counters.1 += 1;
                self.counters.3 += 1;
                None
            }
            None => {
                self.counters.1 += 1;
                None
            }
        }
    }

    fn reopen(&mut self, now: u64) {
        self.flush(now);
        let mut order: Vec<(u64, Vec<u8>)> =
            self.entries.iter().map(|(k, (_, stored, _))| (*stored, k.clone())).collect();
        order.sort();
        self.recency = order.into_iter().map(|(_, k)| k).collect();
        self.counters = (0, 0, 0, 0);
    }
}

fn run(ops: Vec<Op>, compress: bool) {
    let _clock = CLOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    NOW_MS.store(1_000_000, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache");
    let mut cache = DiskCache::open(&path, options(compress)).unwrap();
    let mut model = Model { compress, ..Model::default() };
    for (step, op) in ops.into_iter().enumerate() {
        let now = NOW_MS.load(Ordering::SeqCst);
        match &op {
            Op::Store(k, len, tag) => {
                let v = value(*len, *tag);
                cache.store(&[*k], &v).unwrap();
                model.pending.remove(&vec![*k]);
                model.commit(vec![(vec![*k], v)], &[], now);
            }
            Op::Buffered(k, len, tag) => {
                let v = value(*len, *tag);
                cache.store_buffered(&[*k], &v).unwrap();
                model.pending.insert(vec![*k], v);
                if model.pending.len() >= MAX_BUFFERED {
                    model.flush(now);
                }
            }
            Op::Flush => {
                cache.flush_writes().unwrap();
                model.flush(now);
            }
            Op::Lookup(k) => {
                let got = cache.lookup(&[*k]).unwrap();
                assert_eq!(got, model.lookup(&[*k], now), "step {step}: {op:?}");
            }
            Op::Batch(keys) => {
                let asked: Vec<[u8; 1]> = keys.iter().map(|k| [*k]).collect();
                let asked: Vec<&[u8]> = asked.iter().map(|k| &k[..]).collect();
                let got: Vec<Option<Vec<u8>>> =
                    cache.lookup_batch(&asked).into_iter().map(Result::unwrap).collect();
                let want: Vec<Option<Vec<u8>>> =
                    asked.iter().map(|k| model.lookup(k, now)).collect();
                assert_eq!(got, want, "step {step}: {op:?}");
            }
            Op::Remove(k) => {
                let key = vec![*k];
                let there = model.pending.remove(&key).is_some() | model.entries.contains_key(&key);
                if model.entries.contains_key(&key) {
                    model.commit(Vec::new(), &[key], now);
                }
                assert_eq!(cache.remove(&[*k]).unwrap(), there, "step {step}: {op:?}");
            }
            Op::Advance(ms) => {
                NOW_MS.fetch_add(*ms, Ordering::SeqCst);
            }
            Op::Reopen => {
                cache.close().unwrap();
                model.reopen(now);
                cache = DiskCache::open(&path, options(compress)).unwrap();
            }
        }
        let stats = cache.stats();
        assert_eq!(
            (stats.entries, stats.bytes, stats.pending_writes),
            (model.entries.len() as u64, model.bytes(), model.pending.len()),
            "step {step}: {op:?}"
        );
        let counters = (stats.hits, stats.misses, stats.evictions, stats.expirations);
        assert_eq!(
            counters, model.counters,
            "step {step}: {op:?}: hits, misses, evictions, expirations"
        );
    }
    // Everything, after a last reopen.
    cache.close().unwrap();
    let now = NOW_MS.load(Ordering::SeqCst);
    model.reopen(now);
    let cache = DiskCache::open(&path, options(compress)).unwrap();
    for k in 0u8..6 {
        assert_eq!(cache.lookup(&[k]).unwrap(), model.lookup(&[k], now), "key {k} at the end");
    }
    cache.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_cache_matches_a_model_with_lru_and_ttl(
        ops in prop::collection::vec(op(), 1..50),
        compress in any::<bool>(),
    ) {
        run(ops, compress);
    }
}

/// Found by the model test (the case proptest shrank it to): a flush whose stores add up to
/// more than the capacity keeps them all (a commit never evicts what it stores); `close`
/// then ran a commit of nothing but the deletion of the blobs the flush dropped, which
/// evicted the least recently used entry (key 0, just stored), so the reopened cache had
/// lost it. Such a commit now changes no entry.
#[test]
fn regression_a_close_evicts_nothing_after_a_flush_past_the_capacity() {
    run(
        vec![
            Op::Store(0, 0, 0),
            Op::Buffered(0, 2473, 0),
            Op::Buffered(1, 2813, 0),
            Op::Buffered(2, 2715, 0),
            Op::Advance(0),
        ],
        false,
    );
}
