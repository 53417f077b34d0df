//! What the harness measures besides time: space on disk, device writes, peak memory, and
//! the machine banner (fsync latency, cached-read latency, sequential write bandwidth, and
//! what the first touch of freed memory costs), and the hold on the host's reclaim of freed
//! memory ([`HostMemoryHold`]).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Space on disk at one point of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Space {
    /// Where in the run.
    pub name: String,
    /// Bytes of live user data.
    pub live: u64,
    /// Sum of the engine's file lengths.
    pub apparent: u64,
    /// Blocks the file system allocated to them, in bytes.
    pub allocated: u64,
}

/// The space the files under `dir` take.
pub fn space(name: &str, dir: &Path, live: u64) -> Result<Space> {
    let mut out = Space { name: name.into(), live, apparent: 0, allocated: 0 };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.apparent += meta.len();
                out.allocated += meta.blocks() * 512;
            }
        }
    }
    Ok(out)
}

fn proc_field(file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// The block device statistics file of the device holding the engines' files, once known.
static DEVICE_STAT: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

/// Chooses the device whose writes [`device_write_bytes`] counts: the one holding `dir`.
pub fn watch_device(dir: &Path) {
    DEVICE_STAT.get_or_init(|| {
        let dev = std::fs::metadata(dir).ok()?.dev();
        // Linux's encoding of dev_t: major in bits 8..20 and 32.., minor in 0..8 and 20..32.
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let path = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}/stat"));
        path.exists().then_some(path)
    });
}

/// Bytes written to the watched block device so far (sectors written in its `stat` file,
/// after a `sync` so that pending writeback is counted). The count is the device's, not the
/// process's: it includes the file system's journal and metadata, and anything else writing
/// to that device meanwhile. Falls back to `/proc/self/io` (`write_bytes` less
/// `cancelled_write_bytes`), which with large page-cache folios counts a whole folio for a
/// small write and so overstates scattered writes.
pub fn device_write_bytes() -> Option<u64> {
    // Flush pending writeback first, so that the count covers everything written so far.
    let _ = std::process::Command::new("sync").status();
    if let Some(Some(path)) = DEVICE_STAT.get() {
        let text = std::fs::read_to_string(path).ok()?;
        let sectors: u64 = text.split_whitespace().nth(6)?.parse().ok()?;
        return Some(sectors * 512);
    }
    let written = proc_field("/proc/self/io", "write_bytes:")?;
    let cancelled = proc_field("/proc/self/io", "cancelled_write_bytes:").unwrap_or(0);
    Some(written.saturating_sub(cancelled))
}

/// This process's peak resident set, in KiB (`VmHWM`). It counts pages of files the process
/// maps and has touched (the page cache's, shared and reclaimable) beside its own memory: see
/// [`AnonPeak`] for the latter.
pub fn peak_rss_kib() -> Option<u64> {
    proc_field("/proc/self/status", "VmHWM:")
}

/// The peak of this process's anonymous resident memory (`RssAnon`: heap, stacks; not the
/// pages of mapped files), sampled every 5 ms by a thread until [`AnonPeak::stop`]. The kernel
/// keeps no peak of it, so a spike shorter than the period may be missed.
#[derive(Debug)]
pub struct AnonPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<Option<u64>>,
}

impl AnonPeak {
    /// Starts sampling.
    pub fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = None;
            loop {
                if let Some(kib) = proc_field("/proc/self/status", "RssAnon:") {
                    peak = Some(peak.map_or(kib, |p: u64| p.max(kib)));
                }
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        Self { stop, sampler }
    }

    /// Stops sampling; the peak in KiB, if `/proc` has it.
    pub fn stop(self) -> Option<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().ok().flatten()
    }
}

/// The machine, as far as storage goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Banner {
    /// Median latency of a 4 KiB write plus `fdatasync`, in microseconds.
    pub fsync_us: f64,
    /// Median latency of a cached 4 KiB `pread`, in microseconds.
    pub cached_read_us: f64,
    /// Sequential write bandwidth including a final sync, in MiB/s.
    pub seq_write_mib_s: f64,
    /// Cores available.
    pub cores: usize,
    /// MiB/s at which memory freed 2 s earlier is touched again (one write per 4 KiB page),
    /// before the run's [`HostMemoryHold`]: low where the host takes freed memory back.
    #[serde(default)]
    pub freed_memory_mib_s: Option<f64>,
    /// The same, measured while the run's hold is in place (`None`: no hold).
    #[serde(default)]
    pub held_memory_mib_s: Option<f64>,
}

/// Touches `mib` MiB of fresh anonymous memory (one write per 4 KiB page) and frees it;
/// the rate in MiB/s.
pub fn touch_memory(mib: usize) -> f64 {
    let started = Instant::now();
    let mut block = vec![0u8; mib << 20];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&block);
    drop(block);
    mib as f64 / started.elapsed().as_secs_f64()
}

/// The rate at which memory freed `pause` ago is touched again: 1 GiB touched, freed, and
/// touched again after the pause (less is not always reported).
pub fn freed_memory_rate(pause: std::time::Duration) -> f64 {
    touch_memory(1024);
    std::thread::sleep(pause);
    touch_memory(1024)
}

/// Where a Linux guest with free page reporting (virtio-balloon) says how long a free page
/// waits before it is reported to the host, which then takes its memory back.
const PAGE_REPORTING_DELAY: &str = "/sys/module/page_reporting/parameters/min_free_ms";

/// A hold on the host's reclaim of the guest's freed memory, for the length of a run.
///
/// On a virtual machine with free page reporting, memory the guest frees (a deleted file's
/// page cache, a freed heap) goes back to the host about a second later, and the next touch
/// of that memory waits for the host to back it again: measured on this project's machines,
/// 1 GiB touched again 1-10 s after it was freed took 1.5-4.9 s, against 0.6 s when touched
/// at once (210-680 MiB/s against 1,700). An engine that grows its files (new page cache)
/// then pays the host, not its own code, and how much depends on what ran a second before:
/// the objects suite's overwrite row moved from 24-31 K/s to 166-187 K/s for bob-base, and
/// from 36-49 K/s to 36-144 K/s for marble, with the hold. The hold raises the reporting
/// delay (where the guest has the setting and the harness may write it: as root) to five
/// minutes (the most the setting takes here), and puts the old value back when dropped.
/// Every engine runs under the same hold.
#[derive(Debug)]
pub struct HostMemoryHold {
    previous: String,
}

impl HostMemoryHold {
    /// Raises the reporting delay; `None` where there is no such setting or it cannot be
    /// written.
    pub fn take() -> Option<Self> {
        let previous = std::fs::read_to_string(PAGE_REPORTING_DELAY).ok()?;
        ["300000", "60000"].iter().find(|ms| std::fs::write(PAGE_REPORTING_DELAY, ms).is_ok())?;
        Some(Self { previous: previous.trim().to_string() })
    }

    /// The delay the hold replaced, in ms.
    pub fn previous(&self) -> &str {
        &self.previous
    }
}

impl Drop for HostMemoryHold {
    fn drop(&mut self) {
        if let Err(error) = std::fs::write(PAGE_REPORTING_DELAY, &self.previous) {
            eprintln!(
                "bob-bench: could not put back {PAGE_REPORTING_DELAY} = {}: {error}",
                self.previous
            );
        }
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Measures the banner's figures with a scratch file in `dir`.
pub fn banner(dir: &Path) -> Result<Banner> {
    let path = dir.join("banner.tmp");
    let file = File::options().read(true).write(true).create(true).truncate(true).open(&path)?;
    let block = crate::payload(99, 4096);
    let mut fsyncs = Vec::new();
    for i in 0..50u64 {
        let started = Instant::now();
        file.write_all_at(&block, i * 4096)?;
        file.sync_data()?;
        fsyncs.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let mut buf = vec![0u8; 4096];
    let mut reads = Vec::new();
    for i in 0..2_000u64 {
        let started = Instant::now();
        file.read_exact_at(&mut buf, (i % 50) * 4096)?;
        reads.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let chunk = crate::payload(98, 1 << 20);
    let mut writer = File::create(&path)?;
    let started = Instant::now();
    for _ in 0..64 {
        writer.write_all(&chunk)?;
    }
    writer.sync_all()?;
    let seq = 64.0 / started.elapsed().as_secs_f64();
    drop(writer);
    std::fs::remove_file(&path)?;
    Ok(Banner {
        fsync_us: median(fsyncs),
        cached_read_us: median(reads),
        seq_write_mib_s: seq,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        freed_memory_mib_s: None,
        held_memory_mib_s: None,
    })
}
