//! A disk cache in front of a slow source: the first lookup of each key goes to the source
//! (here a function that sleeps), later ones, even after a restart, come from the cache.
//!
//! `cargo run -p bob-batch-io --example cache_in_front -- /tmp/cache.bob`

use std::time::{Duration, Instant};

use bob_batch_io::{DiskCache, DiskCacheOptions};

/// The slow source: 5 ms per fetch.
fn fetch(key: &str) -> Vec<u8> {
    std::thread::sleep(Duration::from_millis(5));
    format!("the page behind {key}").repeat(100).into_bytes()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "cache.bob".into());
    let options = DiskCacheOptions {
        capacity_bytes: 64 << 20,
        ttl: Some(Duration::from_secs(3600)),
        ..DiskCacheOptions::default()
    };
    let cache = DiskCache::open(&path, options)?;
    let started = Instant::now();
    for round in 0..3 {
        for i in 0..50 {
            let key = format!("/pages/{i}");
            if cache.lookup(key.as_bytes())?.is_none() {
                // A miss: fetch, and keep it (buffered: one commit per 32 stores).
                cache.store_buffered(key.as_bytes(), &fetch(&key))?;
            }
        }
        cache.flush_writes()?;
        println!("round {round}: {:?} so far, {:?}", started.elapsed(), cache.stats());
    }
    cache.close()?;
    Ok(())
}
