//! Counters kept by many threads: each thread adds one, many times, to counters picked at
//! random among 1,000, in one bob database; the total must come out exact.
//!
//! ```text
//! counters DB [THREADS] [ADDS]   (defaults: 8 threads, 1,000 adds each)
//! ```
//!
//! Each add is a read-modify-write in a write transaction (one writer at a time, so no add
//! is lost) and a durable commit: threads committing at the same time share one sync. The
//! counters are serde structs in a named tree; run it twice and the totals carry on.

use std::process::ExitCode;

use bob_btree::{Db, Durability, Postcard};
use serde::{Deserialize, Serialize};

/// One counter's value.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Counter {
    count: u64,
    last_thread: u32,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    match run(&std::env::args().skip(1).collect::<Vec<_>>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counters: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let path = args.first().ok_or("usage: counters DB [THREADS] [ADDS]")?;
    let threads: u32 = args.get(1).map_or(Ok(8), |a| a.parse())?;
    let adds: u64 = args.get(2).map_or(Ok(1000), |a| a.parse())?;
    let db = Db::open_or_create(path)?;
    let before = total(&db)?;
    let shared = &db;
    std::thread::scope(|scope| {
        let workers: Vec<_> =
            (0..threads).map(|t| scope.spawn(move || add(shared, t, adds))).collect();
        workers.into_iter().try_for_each(|w| w.join().map_err(|_| "a thread panicked")?)
    })?;
    let after = total(&db)?;
    db.close()?;
    println!("{threads} threads added {adds} each: total {before} -> {after}");
    if after != before + u64::from(threads) * adds {
        return Err("an add was lost".into());
    }
    Ok(())
}

/// `adds` times: one counter, picked at random, plus one.
fn add(db: &Db, thread: u32, adds: u64) -> Result<(), Error> {
    let mut seed = (u64::from(thread) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..adds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let name = format!("counter-{:03}", seed % 1000);
        let mut tx = db.begin_write()?;
        let mut counters = tx.open_tree::<String, Postcard<Counter>>("counters")?;
        let mut counter = counters.get(&name)?.map_or_else(Counter::default, |c| c.0);
        counter.count += 1;
        counter.last_thread = thread;
        counters.put(&name, &Postcard(counter))?;
        tx.commit(Durability::Durable)?;
    }
    Ok(())
}

/// Every counter's count, summed, as the last commit left them.
fn total(db: &Db) -> Result<u64, Error> {
    let read = db.begin_read();
    let Some(counters) = read.open_tree::<String, Postcard<Counter>>("counters") else {
        return Ok(0);
    };
    counters.iter()?.try_fold(0, |sum, entry| Ok(sum + entry?.1.0.count))
}
