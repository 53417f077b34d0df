//! `bob import`: JSON lines or CSV into a tree, in durable commits of `batch` entries, with a
//! progress bar on a terminal (bytes of the input read).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use bob_btree::{Db, Durability};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{Error, Result, parse_line};

/// The input's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `{"key":…,"value":…}` per line; blank lines are skipped.
    JsonLines,
    /// `key,value` records, no header.
    Csv,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Imported {
    pub(crate) entries: u64,
    pub(crate) commits: u64,
}

/// Counts the bytes read through it (the progress bar's position).
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Imports `source` into `tree` of `db`. A bad line stops the import with its line number;
/// the commits made before it stay (each batch is durable when it commits).
pub(crate) fn import(
    db: &Db,
    tree: &str,
    source: &Path,
    format: Format,
    batch: u64,
) -> Result<Imported> {
    let name = source.display().to_string();
    let file = std::fs::File::open(source).map_err(|e| Error::io(&name, e))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {msg} ({eta} left)",
        )
        .map_err(|e| Error::Failed(e.to_string()))?
        .progress_chars("=> "),
    );
    let reader = BufReader::new(Counting { inner: file, bar: bar.clone() });
    let mut done = Imported::default();
    let mut pending: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(batch.min(100_000) as usize);
    let commit = |pending: &mut Vec<(Vec<u8>, Vec<u8>)>, done: &mut Imported| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let failed = |e| Error::db(source, e);
        let mut txn = db.begin_write().map_err(failed)?;
        {
            let mut t = txn.open_tree::<Vec<u8>, Vec<u8>>(tree).map_err(failed)?;
            for (key, value) in pending.iter() {
                t.put(key.as_slice(), value.as_slice()).map_err(failed)?;
            }
        }
        txn.commit(Durability::Durable).map_err(failed)?;
        done.entries += pending.len() as u64;
        done.commits += 1;
        pending.clear();
        bar.set_message(format!("{} entries", done.entries));
        Ok(())
    };
    match format {
        Format::JsonLines => {
            let mut reader = reader;
            let mut bytes = Vec::new();
            for n in 1.. {
                bytes.clear();
                if reader.read_until(b'\n', &mut bytes).map_err(|e| Error::io(&name, e))? == 0 {
                    break;
                }
                let bad = |why: String| Error::Usage(format!("{name}, line {n}: {why}"));
                let mut line =
                    std::str::from_utf8(&bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
                if n == 1 {
                    line = line.strip_prefix('\u{feff}').unwrap_or(line); // a byte-order mark
                }
                if line.trim().is_empty() {
                    continue;
                }
                let entry = parse_line(line.trim_end_matches(['\n', '\r'])).map_err(bad)?;
                pending.push(entry);
                if pending.len() as u64 >= batch {
                    commit(&mut pending, &mut done)?;
                }
            }
        }
        Format::Csv => {
            let mut records = csv::ReaderBuilder::new().has_headers(false).from_reader(reader);
            for (n, record) in records.byte_records().enumerate() {
                let record =
                    record.map_err(|e| Error::Usage(format!("{name}, record {}: {e}", n + 1)))?;
                if record.len() != 2 {
                    return Err(Error::Usage(format!(
                        "{name}, record {}: {} fields, not 2 (key,value)",
                        n + 1,
                        record.len()
                    )));
                }
                crate::check_entry(&record[0], &record[1])
                    .map_err(|why| Error::Usage(format!("{name}, record {}: {why}", n + 1)))?;
                pending.push((record[0].to_vec(), record[1].to_vec()));
                if pending.len() as u64 >= batch {
                    commit(&mut pending, &mut done)?;
                }
            }
        }
    }
    commit(&mut pending, &mut done)?;
    bar.finish_and_clear();
    Ok(done)
}
