//! Campaign 3: real process kills (`SIGKILL`) of a child that reports acknowledged commits.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use bob_store_core::{BaseStore, ObjectId, StoreOptions, Storer};

use super::{Budget, scratch_dir, spawn_child};
use crate::bytes;
use crate::report::Figures;

/// The child of the process-kill campaign: commits objects to the store at `path` until
/// killed, reporting on stdout each batch's changes (`put id seed len`, `del id`) before its
/// commit and `ok` once the commit has returned.
pub fn kill_child(path: &Path, seed: u64) -> bob_store_core::Result<()> {
    let mut store = if path.exists() {
        BaseStore::open(path, StoreOptions::default())?
    } else {
        BaseStore::create(path, StoreOptions::default())?
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = std::io::stdout().lock();
    let mut mine: Vec<ObjectId> = Vec::new();
    loop {
        let mut lines = Vec::new();
        for _ in 0..rng.usize(1..6) {
            let object_seed = rng.u64(..);
            let len =
                if rng.u8(0..10) == 0 { rng.usize(4096..200_000) } else { rng.usize(0..4096) };
            let id = store.write_new_obj_from_bytes(&bytes(object_seed, len))?;
            mine.push(id);
            lines.push(format!("put {} {object_seed} {len}", id.0));
        }
        if rng.u8(0..4) == 0 && !mine.is_empty() {
            let id = mine.swap_remove(rng.usize(..mine.len()));
            store.delete_obj(id)?;
            lines.push(format!("del {}", id.0));
        }
        // The parent may be gone; the commit is what matters.
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        store.commit()?;
        let _ = writeln!(out, "ok");
        let _ = out.flush();
    }
}

/// Campaign 3: Real process kills: a child commits and reports through a pipe; it is killed at a
/// random moment; every acknowledged change must survive.
pub fn process_kills(budget: &Budget, seed: u64, exe: &Path) -> Figures {
    let mut figures = Figures::new("3. real process kills (SIGKILL)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let Some(dir) = scratch_dir(&mut figures) else { return figures };
    let path = dir.path().join("killed.bob");
    let mut expected: HashMap<u64, Option<(u64, usize)>> = HashMap::new();
    let (mut checked, mut lost, mut wrong, mut reopen_failed, mut child_failed) = (0, 0, 0, 0, 0);
    for round in 0..budget.kill_rounds {
        let Some((mut child, stdout)) = spawn_child(exe, rng.u64(..), &path) else {
            child_failed += 1;
            continue;
        };
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(rng.u64(20..250)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let lines = reader.join().unwrap_or_default();
        // Changes of the batch whose `ok` has not come yet: that commit was in flight, so
        // each of its ids may hold the old or the new state.
        let mut in_flight: HashMap<u64, Option<(u64, usize)>> = HashMap::new();
        for line in lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["put", id, s, len] => {
                    if let (Ok(id), Ok(s), Ok(len)) = (id.parse(), s.parse(), len.parse()) {
                        in_flight.insert(id, Some((s, len)));
                    }
                }
                ["del", id] => {
                    if let Ok(id) = id.parse() {
                        in_flight.insert(id, None);
                    }
                }
                ["ok"] => expected.extend(in_flight.drain()),
                _ => {}
            }
        }
        let store = match BaseStore::open(&path, StoreOptions::default()) {
            Ok(store) => store,
            Err(_) => {
                reopen_failed += 1;
                continue;
            }
        };
        let ids: std::collections::BTreeSet<u64> =
            expected.keys().chain(in_flight.keys()).copied().collect();
        for id in ids {
            checked += 1;
            let got = store.read_bytes_from_obj(ObjectId(id));
            let matches = |want: &Option<(u64, usize)>| match (want, &got) {
                (Some((s, len)), Ok(bytes_read)) => *bytes_read == bytes(*s, *len),
                (
                    None,
                    Err(bob_store_core::Error::NotFound(_) | bob_store_core::Error::StaleId { .. }),
                ) => true,
                _ => false,
            };
            let acknowledged = expected.get(&id).copied().unwrap_or(None);
            let ok = matches(&acknowledged) || in_flight.get(&id).is_some_and(&matches);
            if !ok {
                match got {
                    Ok(_) if acknowledged.is_some() => wrong += 1,
                    _ => lost += 1,
                }
            } else if let Some(new) = in_flight.get(&id) {
                // The in-flight commit settled one way or the other: so does the model.
                if matches(new) {
                    expected.insert(id, *new);
                }
            }
        }
        if round + 1 == budget.kill_rounds && !store.verify().is_ok_and(|r| r.is_clean()) {
            wrong += 1;
        }
    }
    figures.info("rounds (child killed at a random moment)", budget.kill_rounds);
    figures.info("acknowledged ids checked", checked);
    figures.zero("acknowledged changes lost", lost);
    figures.zero("ids reading wrong bytes", wrong);
    figures.zero("reopens that failed", reopen_failed);
    figures.zero("children that could not start", child_failed);
    figures
}
