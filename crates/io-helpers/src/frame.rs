//! xxh3-64 checksums and the checksummed frame codec.
//!
//! A frame is `payload_len: u32 LE | checksum: u64 LE | payload`, where `checksum` is xxh3-64
//! (seed 0) over the 4 length bytes followed by the payload (`docs/format.md`, "Frame"). The
//! decoder bounds the announced length by the bytes actually available before it looks at the
//! payload, never allocates, and returns an error for any mismatch.

use xxhash_rust::xxh3::Xxh3;

use crate::{Error, Result};

/// Bytes of a frame before its payload: the length (`u32`) and the checksum (`u64`).
pub const FRAME_HEADER_LEN: usize = 12;
const LEN_OFFSET: usize = 0;
const CHECKSUM_OFFSET: usize = LEN_OFFSET + 4;
const PAYLOAD_OFFSET: usize = CHECKSUM_OFFSET + 8;
const _: () = assert!(PAYLOAD_OFFSET == FRAME_HEADER_LEN);

/// The largest payload one frame carries (the length field is a `u32`).
pub const MAX_FRAME_PAYLOAD: u64 = u32::MAX as u64;

/// The xxh3-64 checksum (seed 0) of `bytes`, as used throughout bob's formats.
///
/// Computed by `twox-hash`, which picks AVX2 at run time where the CPU has it (78 ns for
/// 4,000 bytes against 138 ns for `xxhash-rust` on a plain x86-64 build:
/// `cargo bench -p bob-benches --bench io_helpers -- xxh3`); the streaming form stays on
/// `xxhash-rust`. Both compute the same function (tested).
pub fn checksum(bytes: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(bytes)
}

/// An xxh3-64 checksum computed over bytes that arrive in pieces; equal to [`checksum`] of
/// their concatenation.
#[derive(Clone)]
pub struct StreamingChecksum(Xxh3);

impl std::fmt::Debug for StreamingChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StreamingChecksum").field(&self.0.digest()).finish()
    }
}

impl Default for StreamingChecksum {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamingChecksum {
    /// A checksum over no bytes yet.
    pub fn new() -> Self {
        Self(Xxh3::new())
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum of everything added so far.
    pub fn finish(&self) -> u64 {
        self.0.digest()
    }
}

/// Bytes a frame carrying `payload_len` bytes takes.
pub fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + payload_len
}

fn frame_checksum(len_bytes: [u8; 4], payload: &[u8]) -> u64 {
    let mut sum = StreamingChecksum::new();
    sum.update(&len_bytes);
    sum.update(payload);
    sum.finish()
}

/// Appends a frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| Error::FrameTooLarge { len: payload.len() as u64, max: MAX_FRAME_PAYLOAD })?;
    let len_bytes = len.to_le_bytes();
    out.reserve(frame_len(payload.len()));
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&frame_checksum(len_bytes, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes the frame at the start of `bytes`, returning its payload and the bytes after it.
pub fn decode_frame(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let available = bytes.len() as u64;
    let Some((header, rest)) = bytes.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(Error::FrameTruncated { needed: FRAME_HEADER_LEN as u64, available });
    };
    // Destructuring the fixed-size header cannot fail; the layout is LEN then CHECKSUM.
    let [l0, l1, l2, l3, c0, c1, c2, c3, c4, c5, c6, c7] = *header;
    let len_bytes = [l0, l1, l2, l3];
    let stored = u64::from_le_bytes([c0, c1, c2, c3, c4, c5, c6, c7]);
    let len = u32::from_le_bytes(len_bytes) as u64;
    if len > rest.len() as u64 {
        return Err(Error::FrameTruncated { needed: FRAME_HEADER_LEN as u64 + len, available });
    }
    let (payload, after) = rest.split_at(len as usize);
    let computed = frame_checksum(len_bytes, payload);
    if computed != stored {
        return Err(Error::ChecksumMismatch { stored, computed });
    }
    Ok((payload, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_layout() {
        let mut out = Vec::new();
        encode_frame(b"bob", &mut out).unwrap();
        assert_eq!(out.len(), frame_len(3));
        assert_eq!(&out[..4], &3u32.to_le_bytes());
        let mut covered = 3u32.to_le_bytes().to_vec();
        covered.extend_from_slice(b"bob");
        assert_eq!(&out[4..12], &checksum(&covered).to_le_bytes());
        assert_eq!(&out[12..], b"bob");
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut sum = StreamingChecksum::new();
        for piece in data.chunks(333) {
            sum.update(piece);
        }
        assert_eq!(sum.finish(), checksum(&data));
    }

    #[test]
    fn a_huge_announced_length_is_bounded_by_the_bytes_available() {
        let mut out = Vec::new();
        encode_frame(b"abc", &mut out).unwrap();
        out[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_frame(&out),
            Err(Error::FrameTruncated { needed, available: 15 }) if needed == 12 + u32::MAX as u64
        ));
    }

    proptest! {
        /// The one-shot checksum (twox-hash) and the streaming one (xxhash-rust) are one
        /// function, xxh3-64, at every length (short inputs, and past the 240-byte and
        /// block boundaries where the implementations change paths).
        #[test]
        fn both_implementations_agree(data in prop::collection::vec(any::<u8>(), 0..5000), piece in 1usize..700) {
            prop_assert_eq!(checksum(&data), xxhash_rust::xxh3::xxh3_64(&data));
            let mut sum = StreamingChecksum::new();
            for chunk in data.chunks(piece) {
                sum.update(chunk);
            }
            prop_assert_eq!(sum.finish(), checksum(&data));
        }

        #[test]
        fn frames_round_trip(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..6)) {
            let mut out = Vec::new();
            for p in &payloads {
                encode_frame(p, &mut out).unwrap();
            }
            let mut rest = &out[..];
            for p in &payloads {
                let (payload, after) = decode_frame(rest).unwrap();
                prop_assert_eq!(payload, &p[..]);
                rest = after;
            }
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn every_flipped_bit_is_detected(payload in prop::collection::vec(any::<u8>(), 0..64), bit in any::<prop::sample::Index>()) {
            let mut out = Vec::new();
            encode_frame(&payload, &mut out).unwrap();
            let bit = bit.index(out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            // A flip in the length may make the frame look truncated or leave trailing bytes;
            // either way the original payload is never returned as valid.
            match decode_frame(&out) {
                Ok((p, _)) => prop_assert!(false, "flip at bit {} accepted: {:?}", bit, p),
                Err(Error::ChecksumMismatch { .. } | Error::FrameTruncated { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {}", other),
            }
        }

        #[test]
        fn truncation_is_an_error(payload in prop::collection::vec(any::<u8>(), 0..64), cut in any::<prop::sample::Index>()) {
            let mut out = Vec::new();
            encode_frame(&payload, &mut out).unwrap();
            let cut = cut.index(out.len());
            let truncated = matches!(decode_frame(&out[..cut]), Err(Error::FrameTruncated { .. }));
            prop_assert!(truncated, "a cut at {} was not reported as truncation", cut);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_frame(&bytes);
        }
    }
}
