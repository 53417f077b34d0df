//! Key and value encodings (`docs/format.md`, "Treap node").
//!
//! Keys encode to bytes that sort like the keys: integers big-endian (signed ones with the
//! sign bit flipped), byte strings and strings as their bytes. Treaps compare decoded keys, so
//! the order-preserving property is for readers of the format, not needed for correctness.

use crate::{Error, Result};

/// A key: ordered, and encodable to bytes that sort in the same order.
pub trait TreapKey: Ord + Clone {
    /// Appends the key's bytes.
    fn encode(&self, out: &mut Vec<u8>);
    /// The key from exactly `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self>;
    /// The length of its encoding (by default found by encoding it).
    fn encoded_len(&self) -> usize {
        let mut out = Vec::new();
        self.encode(&mut out);
        out.len()
    }
}

/// A payload stored beside a key (`()` for sets).
pub trait TreapValue: Clone {
    /// Appends the value's bytes; fails if the value cannot be encoded.
    fn encode(&self, out: &mut Vec<u8>) -> Result<()>;
    /// The value from exactly `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self>;
    /// The length of its encoding (by default found by encoding it); fails as `encode` does.
    fn encoded_len(&self) -> Result<usize> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out.len())
    }
}

fn fixed<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| Error::TypeMismatch {
        what,
        detail: format!("{N} bytes expected, {} found", bytes.len()),
    })
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl TreapKey for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode(bytes: &[u8]) -> Result<Self> {
                Ok(<$t>::from_be_bytes(fixed(bytes, stringify!($t))?))
            }
            fn encoded_len(&self) -> usize {
                size_of::<$t>()
            }
        }
        impl TreapValue for $t {
            fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
                out.extend_from_slice(&self.to_le_bytes());
                Ok(())
            }
            fn decode(bytes: &[u8]) -> Result<Self> {
                Ok(<$t>::from_le_bytes(fixed(bytes, stringify!($t))?))
            }
            fn encoded_len(&self) -> Result<usize> {
                Ok(size_of::<$t>())
            }
        }
    )*};
}

unsigned!(u16, u32, u64, u128);

impl TreapKey for i64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&((*self as u64) ^ (1 << 63)).to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok((u64::from_be_bytes(fixed(bytes, "i64")?) ^ (1 << 63)) as i64)
    }
}

impl TreapKey for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(bytes.to_vec())
    }
    fn encoded_len(&self) -> usize {
        self.len()
    }
}

impl TreapValue for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(self);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(bytes.to_vec())
    }
    fn encoded_len(&self) -> Result<usize> {
        Ok(self.len())
    }
}

impl TreapKey for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn encoded_len(&self) -> usize {
        self.len()
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::TypeMismatch { what: "String", detail: format!("not UTF-8 ({e})") })
    }
}

impl TreapValue for String {
    fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }
    fn encoded_len(&self) -> Result<usize> {
        Ok(self.len())
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        <String as TreapKey>::decode(bytes)
    }
}

/// A payload of any serde type, encoded with postcard (compact, stable, and well kept; the
/// workspace's choice for serde encodings).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Postcard<T>(pub T);

impl<T: serde::Serialize + serde::de::DeserializeOwned + Clone> TreapValue for Postcard<T> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let bytes = postcard::to_allocvec(&self.0)
            .map_err(|e| Error::Encode(format!("postcard cannot encode the payload: {e}")))?;
        out.extend_from_slice(&bytes);
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        postcard::from_bytes(bytes).map(Postcard).map_err(|e| Error::TypeMismatch {
            what: std::any::type_name::<T>(),
            detail: format!("postcard says: {e}"),
        })
    }
}

impl TreapValue for () {
    fn encode(&self, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(Error::TypeMismatch {
                what: "set member (no value)",
                detail: format!("a value of {} bytes is stored", bytes.len()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<K: TreapKey>(k: &K) -> Vec<u8> {
        let mut out = Vec::new();
        k.encode(&mut out);
        out
    }

    #[test]
    fn encodings_sort_like_keys_and_round_trip() {
        let ints = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for pair in ints.windows(2) {
            assert!(bytes(&pair[0]) < bytes(&pair[1]));
        }
        for k in ints {
            assert_eq!(<i64 as TreapKey>::decode(&bytes(&k)).unwrap(), k);
        }
        assert!(bytes(&3u64) < bytes(&256u64));
        assert!(bytes(&"ab".to_string()) < bytes(&"b".to_string()));
        assert!(<u64 as TreapKey>::decode(&[1, 2]).is_err());
        assert!(<String as TreapKey>::decode(&[0xFF]).is_err());
    }
}
