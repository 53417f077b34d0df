//! A log directory of simulated disks, for crash tests.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use bob_alloc::BasicAllocator;
use bob_btree::{Db, LogDir, LogFile};
use bob_io_helpers::FileBackend;
use bob_io_helpers::testing::{CrashMode, SimDisk};
use bob_store_core::Store;

/// A database over simulated disks.
pub(crate) type SimDb = Db<Store<BasicAllocator, SimDisk>>;

/// A removal or retirement of segment `seq` no sync of the directory made durable (`Some(i)`:
/// kept as spare `i`).
type Unsynced = (u64, SimDisk, Option<usize>);

/// Segments as simulated disks; creating a name is durable at once (and makes the changes
/// before it durable, as the directory's sync that `OsLogDir` makes does); a removal or
/// retirement only once the directory is synced: a power loss may undo each one on its own.
/// Retired segments are kept (two at most) and reused, old groups and all.
#[derive(Clone, Default)]
pub(crate) struct SimLogDir {
    files: Arc<Mutex<BTreeMap<u64, SimDisk>>>,
    spares: Arc<Mutex<Vec<SimDisk>>>,
    unsynced: Arc<Mutex<Vec<Unsynced>>>,
}

impl SimLogDir {
    /// The directory after a crash: each segment as `mode` leaves it.
    /// A power loss undoes each unsynced removal or retirement with even odds.
    pub(crate) fn crashed(&self, mode: CrashMode, seed: u64) -> Self {
        let mut files = self.files.lock().unwrap().clone();
        let mut spares: Vec<Option<SimDisk>> =
            self.spares.lock().unwrap().iter().cloned().map(Some).collect();
        let unsynced = self.unsynced.lock().unwrap().clone();
        if mode == CrashMode::PowerLoss {
            for (j, (seq, disk, kept)) in unsynced.into_iter().enumerate() {
                let mixed = seed.wrapping_add(j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                if mixed >> 63 == 1 {
                    files.insert(seq, disk);
                    if let Some(slot) = kept.and_then(|i| spares.get_mut(i)) {
                        *slot = None;
                    }
                }
            }
        }
        let files = files
            .iter()
            .map(|(&seq, disk)| (seq, disk.crashed(mode, seed ^ seq.wrapping_mul(0x9E37))))
            .collect();
        let spares = spares.iter().flatten().map(|d| d.crashed(mode, seed ^ 0x5A5A)).collect();
        // After a process crash the kernel still holds the unsynced changes as they were.
        let unsynced = match mode {
            CrashMode::PowerLoss => Vec::new(),
            CrashMode::ProcessCrash => self
                .unsynced
                .lock()
                .unwrap()
                .iter()
                .map(|(s, d, k)| (*s, d.crashed(mode, seed), *k))
                .collect(),
        };
        Self {
            files: Arc::new(Mutex::new(files)),
            spares: Arc::new(Mutex::new(spares)),
            unsynced: Arc::new(Mutex::new(unsynced)),
        }
    }

    /// The directory a process replacing a crashed one finds: unsynced writes still unsynced.
    pub(crate) fn after_process_crash(&self) -> Self {
        let files = self.files.lock().unwrap();
        let files = files.iter().map(|(&seq, disk)| (seq, disk.after_process_crash())).collect();
        let spares = self.spares.lock().unwrap();
        let spares = spares.iter().map(SimDisk::after_process_crash).collect();
        let unsynced = self.unsynced.lock().unwrap();
        let unsynced = unsynced.iter().map(|(s, d, k)| (*s, d.after_process_crash(), *k)).collect();
        Self {
            files: Arc::new(Mutex::new(files)),
            spares: Arc::new(Mutex::new(spares)),
            unsynced: Arc::new(Mutex::new(unsynced)),
        }
    }

    /// The segments' sequence numbers and disks.
    pub(crate) fn segments(&self) -> Vec<(u64, SimDisk)> {
        self.files.lock().unwrap().iter().map(|(s, d)| (*s, d.clone())).collect()
    }
}

impl LogDir for SimLogDir {
    fn list(&self) -> io::Result<Vec<u64>> {
        Ok(self.files.lock().unwrap().keys().copied().collect())
    }

    fn create(&self, seq: u64, header: &[u8]) -> io::Result<LogFile> {
        if self.files.lock().unwrap().contains_key(&seq) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "segment exists"));
        }
        let disk = self.spares.lock().unwrap().pop().unwrap_or_default();
        disk.write_at(header, 0)?;
        disk.sync_all()?;
        let mut files = self.files.lock().unwrap();
        files.insert(seq, disk.clone());
        self.unsynced.lock().unwrap().clear();
        Ok(Arc::new(disk))
    }

    fn open(&self, seq: u64) -> io::Result<LogFile> {
        let files = self.files.lock().unwrap();
        let disk = files.get(&seq).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Arc::new(disk.clone()))
    }

    fn remove(&self, seq: u64) -> io::Result<()> {
        if let Some(disk) = self.files.lock().unwrap().remove(&seq) {
            self.unsynced.lock().unwrap().push((seq, disk, None));
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.unsynced.lock().unwrap().clear();
        Ok(())
    }

    fn retire(&self, seq: u64) -> io::Result<()> {
        let disk = self.files.lock().unwrap().remove(&seq);
        let mut spares = self.spares.lock().unwrap();
        if let Some(disk) = disk {
            let kept = (spares.len() < 2).then(|| {
                spares.push(disk.clone());
                spares.len() - 1
            });
            self.unsynced.lock().unwrap().push((seq, disk, kept));
        }
        Ok(())
    }
}
