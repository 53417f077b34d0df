//! A file cache: files kept by name in one bob database, across restarts.
//!
//! ```text
//! file_cache DB put NAME FILE   store FILE's bytes under NAME (replacing what was there)
//! file_cache DB get NAME        write NAME's bytes to standard output
//! file_cache DB ls              list the names, with sizes and when they were stored
//! file_cache DB rm NAME         remove NAME
//! ```
//!
//! Each command is one durable commit: once it prints, the change survives a crash. Two
//! named trees hold the data: `files` (name → bytes; bob keeps values over 1 KiB in objects
//! of their own) and `meta` (name → size and time, as a serde struct).

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use bob_btree::{Db, Durability, Postcard};
use serde::{Deserialize, Serialize};

/// What `ls` shows about a file.
#[derive(Clone, Serialize, Deserialize)]
struct Meta {
    size: u64,
    stored_at: u64,
}

type Error = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("file_cache: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let [db, command, rest @ ..] = args else {
        return Err("usage: file_cache DB (put NAME FILE | get NAME | ls | rm NAME)".into());
    };
    let db = Db::open_or_create(db)?;
    let result = match (command.as_str(), rest) {
        ("put", [name, file]) => match std::fs::read(file) {
            Ok(bytes) => put(&db, name, &bytes),
            Err(e) => Err(format!("could not read {file}: {e}").into()),
        },
        ("get", [name]) => get(&db, name),
        ("ls", []) => ls(&db),
        ("rm", [name]) => rm(&db, name),
        _ => Err(format!("unknown command or wrong arguments: {command} {rest:?}").into()),
    };
    // Closing checkpoints; skipping it loses nothing committed (the log replays).
    db.close()?;
    result
}

fn put(db: &Db, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let stored_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let meta = Postcard(Meta { size: bytes.len() as u64, stored_at });
    let mut tx = db.begin_write()?;
    tx.open_tree::<String, Vec<u8>>("files")?.put(name, bytes)?;
    tx.open_tree::<String, Postcard<Meta>>("meta")?.put(name, &meta)?;
    tx.commit(Durability::Durable)?;
    println!("stored {name} ({} bytes)", bytes.len());
    Ok(())
}

fn get(db: &Db, name: &str) -> Result<(), Error> {
    let read = db.begin_read();
    let bytes = read.open_tree::<String, Vec<u8>>("files").and_then(|t| t.get(name).transpose());
    match bytes {
        Some(bytes) => Ok(std::io::stdout().write_all(&bytes?)?),
        None => Err(format!("no file named {name}").into()),
    }
}

fn ls(db: &Db) -> Result<(), Error> {
    let read = db.begin_read();
    let Some(meta) = read.open_tree::<String, Postcard<Meta>>("meta") else { return Ok(()) };
    for entry in meta.iter()? {
        let (name, Postcard(meta)) = entry?;
        println!("{name}\t{} bytes\tstored at {}", meta.size, meta.stored_at);
    }
    Ok(())
}

fn rm(db: &Db, name: &str) -> Result<(), Error> {
    let mut tx = db.begin_write()?;
    let removed = tx.open_tree::<String, Vec<u8>>("files")?.delete(name)?;
    tx.open_tree::<String, Postcard<Meta>>("meta")?.delete(name)?;
    if !removed {
        return Err(format!("no file named {name}").into()); // the transaction is dropped
    }
    tx.commit(Durability::Durable)?;
    println!("removed {name}");
    Ok(())
}
