//! `Read`/`Write`/`Seek` over one `(offset, len)` region of a backend.
//!
//! The region is fixed at creation: a reader sees end-of-file at the region's end, and a write
//! that would pass the end fails with [`Error::SectionOverflow`] without writing anything.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::{Error, FileBackend, Result};

/// Checks that `offset + len` fits in a `u64` and returns the end.
pub(crate) fn checked_end(offset: u64, len: u64) -> Result<u64> {
    offset.checked_add(len).ok_or(Error::OffsetOverflow { offset, len })
}

/// Moves `position` within a region of `len` bytes as `Seek::seek` would; positions past the
/// end are allowed (reads there return 0 bytes, writes fail), positions before 0 are not.
fn seek_in(position: &mut u64, len: u64, target: SeekFrom) -> io::Result<u64> {
    let (base, delta) = match target {
        SeekFrom::Start(to) => {
            *position = to;
            return Ok(to);
        }
        SeekFrom::End(delta) => (len, delta),
        SeekFrom::Current(delta) => (*position, delta),
    };
    match base.checked_add_signed(delta) {
        Some(to) => {
            *position = to;
            Ok(to)
        }
        None => Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before the section start")),
    }
}

/// Reads one region of a backend as a stream.
#[derive(Debug)]
pub struct SectionReader<B> {
    backend: B,
    start: u64,
    len: u64,
    position: u64,
}

impl<B: FileBackend> SectionReader<B> {
    /// A reader over `len` bytes at `offset`.
    pub fn new(backend: B, offset: u64, len: u64) -> Result<Self> {
        checked_end(offset, len)?;
        Ok(Self { backend, start: offset, len, position: 0 })
    }

    /// The region's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The position inside the region.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes left before the region's end.
    pub fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.position)
    }

    /// Unwraps the backend.
    pub fn into_inner(self) -> B {
        self.backend
    }
}

impl<B: FileBackend> Read for SectionReader<B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.remaining()).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.backend.read_at(&mut buf[..n], self.start + self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<B: FileBackend> Seek for SectionReader<B> {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        seek_in(&mut self.position, self.len, target)
    }
}

/// Writes one region of a backend as a stream; writing past the region's end is an error.
#[derive(Debug)]
pub struct SectionWriter<B> {
    backend: B,
    start: u64,
    len: u64,
    position: u64,
}

impl<B: FileBackend> SectionWriter<B> {
    /// A writer over `len` bytes at `offset`.
    pub fn new(backend: B, offset: u64, len: u64) -> Result<Self> {
        checked_end(offset, len)?;
        Ok(Self { backend, start: offset, len, position: 0 })
    }

    /// The region's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The position inside the region.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes left before the region's end.
    pub fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.position)
    }

    /// Unwraps the backend.
    pub fn into_inner(self) -> B {
        self.backend
    }
}

impl<B: FileBackend> Write for SectionWriter<B> {
    /// Writes all of `buf` or, if it would pass the region's end, nothing (an error).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.remaining() {
            return Err(Error::SectionOverflow {
                position: self.position,
                len: buf.len() as u64,
                section_len: self.len,
            }
            .into_io());
        }
        self.backend.write_at(buf, self.start + self.position)?;
        self.position += buf.len() as u64;
        Ok(buf.len())
    }

    /// Nothing is buffered here; durability is the backend's `sync_data`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<B: FileBackend> Seek for SectionWriter<B> {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        seek_in(&mut self.position, self.len, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SimDisk;

    #[test]
    fn reader_sees_only_its_region() {
        let disk = SimDisk::from_image((0..100u8).collect());
        let mut reader = SectionReader::new(&disk, 10, 5).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, vec![10, 11, 12, 13, 14]);
        reader.seek(SeekFrom::End(-2)).unwrap();
        let mut two = [0u8; 8];
        assert_eq!(reader.read(&mut two).unwrap(), 2);
        assert_eq!(&two[..2], &[13, 14]);
        assert!(reader.seek(SeekFrom::Current(-10)).is_err());
        reader.seek(SeekFrom::Start(50)).unwrap();
        assert_eq!(reader.read(&mut two).unwrap(), 0);
    }

    #[test]
    fn writer_refuses_to_pass_the_end_and_writes_nothing() {
        let disk = SimDisk::from_image(vec![0xAA; 32]);
        let mut writer = SectionWriter::new(&disk, 8, 8).unwrap();
        writer.write_all(&[1, 2, 3]).unwrap();
        let err = writer.write(&[9; 6]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("passes the end"), "{err}");
        assert_eq!(writer.position(), 3);
        writer.write_all(&[4, 5, 6, 7, 8]).unwrap();
        assert_eq!(writer.remaining(), 0);
        assert!(writer.write(&[1]).is_err());
        let image = disk.live_image();
        assert_eq!(&image[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&image[16..], &[0xAA; 16], "nothing past the section was touched");
        assert_eq!(&image[..8], &[0xAA; 8]);
    }

    #[test]
    fn regions_past_the_largest_offset_are_refused() {
        let disk = SimDisk::new();
        assert!(matches!(
            SectionWriter::new(&disk, u64::MAX - 1, 2),
            Err(Error::OffsetOverflow { .. })
        ));
        assert!(SectionReader::new(&disk, u64::MAX, 0).is_ok());
    }
}
