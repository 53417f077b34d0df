//! Test support, behind the `testing` feature: [`SimDisk`] and seeds for randomized tests.
//!
//! Randomized tests take their seed from [`test_seed`], which prints it; setting `BOB_SEED`
//! to that value replays the run.

pub use crate::sim::{
    CrashMode, FaultKind, FaultPlan, OpCounts, OpFilter, OpKind, Repeat, SECTOR_BYTES, SimDisk,
};

/// The seed for a randomized test: `BOB_SEED` (decimal, or hex with `0x`) when set, otherwise
/// a fresh random one. Either way it is printed to stderr, so a failure can be replayed.
///
/// # Panics
/// If `BOB_SEED` is set but is not a number: a replay with the wrong seed would be worthless.
pub fn test_seed() -> u64 {
    let seed = match std::env::var("BOB_SEED") {
        Ok(text) => parse_seed(&text)
            .unwrap_or_else(|| panic!("BOB_SEED={text:?} is not a decimal or 0x-hex u64")),
        Err(_) => fastrand::u64(..),
    };
    eprintln!("BOB_SEED={seed} (set BOB_SEED to this value to replay)");
    seed
}

fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2A "), Some(42));
        assert_eq!(parse_seed("forty-two"), None);
    }
}
