//! The envelope and field codec shared by every allocator's encoding (`docs/format.md`,
//! "Allocator state").
//!
//! ```text
//! offset  width  field
//! 0       4      magic      b"BOBA"
//! 4       2      version    u16, 1
//! 6       2      kind       u16: 1 basic, 2 block, 3 multi-block, 4 omni
//! 8       8      body_len   u64
//! 16      n      body       per kind
//! 16+n    8      checksum   u64, xxh3-64 over bytes [0, 16+n)
//! ```

use bob_io_helpers::checksum;

use crate::{Error, Extent, Result};

pub(crate) const MAGIC: [u8; 4] = *b"BOBA";
pub(crate) const VERSION: u16 = 1;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 4;
const KIND_OFFSET: usize = VERSION_OFFSET + 2;
const BODY_LEN_OFFSET: usize = KIND_OFFSET + 2;
const BODY_OFFSET: usize = BODY_LEN_OFFSET + 8;
const TRAILER_LEN: usize = 8;

/// Which allocator an encoding holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Kind {
    Basic = 1,
    Block = 2,
    Multi = 3,
    Omni = 4,
}

/// Writes an envelope around a body built by `body`.
pub(crate) fn seal(kind: Kind, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut writer = Writer(Vec::with_capacity(64));
    writer.0.extend_from_slice(&MAGIC);
    writer.put_u16(VERSION);
    writer.put_u16(kind as u16);
    writer.put_u64(0); // body_len, patched below
    body(&mut writer);
    let mut bytes = writer.0;
    let body_len = (bytes.len() - BODY_OFFSET) as u64;
    bytes[BODY_LEN_OFFSET..BODY_OFFSET].copy_from_slice(&body_len.to_le_bytes());
    let sum = checksum(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

/// Checks the envelope (length, checksum, magic, version, kind) and returns a reader over the
/// body.
pub(crate) fn open(bytes: &[u8], kind: Kind) -> Result<Reader<'_>> {
    let available = bytes.len() as u64;
    if bytes.len() < BODY_OFFSET + TRAILER_LEN {
        return Err(Error::Truncated { needed: (BODY_OFFSET + TRAILER_LEN) as u64, available });
    }
    let (covered, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let mut header = Reader::new(&covered[..BODY_OFFSET]);
    let magic = header.take(4, "magic")?;
    let version = header.u16("version")?;
    let found_kind = header.u16("kind")?;
    let body_len = header.u64("body length")?;
    let stored = Reader::new(trailer).u64("checksum")?;
    let needed = (BODY_OFFSET + TRAILER_LEN) as u64 + body_len.min(u64::MAX / 2);
    if needed != available {
        return Err(if needed > available {
            Error::Truncated { needed, available }
        } else {
            Error::Corrupt(format!(
                "{} bytes follow the {needed}-byte encoding",
                available - needed
            ))
        });
    }
    let computed = checksum(covered);
    if stored != computed {
        return Err(Error::ChecksumMismatch { stored, computed });
    }
    if magic != MAGIC {
        return Err(Error::Corrupt(format!("magic {magic:02x?} is not {MAGIC:02x?}")));
    }
    if version != VERSION {
        return Err(Error::Corrupt(format!(
            "format version {version} is not the supported {VERSION}"
        )));
    }
    if found_kind != kind as u16 {
        return Err(Error::Corrupt(format!(
            "the encoding holds allocator kind {found_kind}, not the expected {}",
            kind as u16
        )));
    }
    Ok(Reader::new(&covered[BODY_OFFSET..]))
}

/// Appends little-endian fields.
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn put_u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn put_u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn put_extent(&mut self, extent: Extent) {
        self.put_u64(extent.offset);
        self.put_u64(extent.len);
    }
}

/// Reads little-endian fields, every read bounded by the bytes left.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Corrupt(format!(
                "field {field} needs {n} bytes at body offset {} but {} remain",
                self.position,
                self.remaining()
            )));
        }
        let slice = &self.bytes[self.position..self.position + n];
        self.position += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u16(&mut self, field: &str) -> Result<u16> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64> {
        self.array(field).map(u64::from_le_bytes)
    }

    pub(crate) fn extent(&mut self, field: &str) -> Result<Extent> {
        Ok(Extent::new(self.u64(field)?, self.u64(field)?))
    }

    /// Reads a count of items that take at least `min_item_bytes` each, and checks the bytes
    /// left can hold that many, so a corrupt count cannot cause a huge allocation.
    pub(crate) fn count(&mut self, field: &str, min_item_bytes: usize) -> Result<usize> {
        let count = self.u64(field)?;
        let fits = (self.remaining() / min_item_bytes.max(1)) as u64;
        if count > fits {
            return Err(Error::Corrupt(format!(
                "{field} is {count}, but the {} bytes left hold at most {fits}",
                self.remaining()
            )));
        }
        Ok(count as usize)
    }

    /// Fails if bytes are left over.
    pub(crate) fn finish(self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(Error::Corrupt(format!("{n} unexpected bytes at the end of the body"))),
        }
    }
}
