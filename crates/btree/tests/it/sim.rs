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

/// Segments as simulated disks; creating, retiring and removing names is durable at once.
/// Retired segments are kept (two at most) and reused, old groups and all.
#[derive(Clone, Default)]
pub(crate) struct SimLogDir {
    files: Arc<Mutex<BTreeMap<u64, SimDisk>>>,
    spares: Arc<Mutex<Vec<SimDisk>>>,
}

impl SimLogDir {
    /// The directory after a crash: each segment as `mode` leaves it.
    pub(crate) fn crashed(&self, mode: CrashMode, seed: u64) -> Self {
        let files = self.files.lock().unwrap();
        let files = files
            .iter()
            .map(|(&seq, disk)| (seq, disk.crashed(mode, seed ^ seq.wrapping_mul(0x9E37))))
            .collect();
        let spares = self.spares.lock().unwrap();
        let spares = spares.iter().map(|d| d.crashed(mode, seed ^ 0x5A5A)).collect();
        Self { files: Arc::new(Mutex::new(files)), spares: Arc::new(Mutex::new(spares)) }
    }

    /// The directory a process replacing a crashed one finds: unsynced writes still unsynced.
    pub(crate) fn after_process_crash(&self) -> Self {
        let files = self.files.lock().unwrap();
        let files = files.iter().map(|(&seq, disk)| (seq, disk.after_process_crash())).collect();
        let spares = self.spares.lock().unwrap();
        let spares = spares.iter().map(SimDisk::after_process_crash).collect();
        Self { files: Arc::new(Mutex::new(files)), spares: Arc::new(Mutex::new(spares)) }
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
        let disk = self.spares.lock().unwrap().pop().unwrap_or_default();
        disk.write_at(header, 0)?;
        disk.sync_all()?;
        let mut files = self.files.lock().unwrap();
        if files.contains_key(&seq) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "segment exists"));
        }
        files.insert(seq, disk.clone());
        Ok(Arc::new(disk))
    }

    fn open(&self, seq: u64) -> io::Result<LogFile> {
        let files = self.files.lock().unwrap();
        let disk = files.get(&seq).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Arc::new(disk.clone()))
    }

    fn remove(&self, seq: u64) -> io::Result<()> {
        self.files.lock().unwrap().remove(&seq);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn retire(&self, seq: u64) -> io::Result<()> {
        let disk = self.files.lock().unwrap().remove(&seq);
        let mut spares = self.spares.lock().unwrap();
        if let Some(disk) = disk.filter(|_| spares.len() < 2) {
            spares.push(disk);
        }
        Ok(())
    }
}
