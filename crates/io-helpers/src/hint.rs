//! Hints to the processor: they change how fast code runs, never what it does.

/// Asks the processor to start loading the cache line that holds `p`, without waiting for
/// it. Never reads or writes through `p`, so any address (null, dangling, unmapped) is
/// allowed. Worth it before a run of accesses to lines that are likely not cached and do not
/// depend on each other: a locked instruction (an `Arc` count changed) waits for its line
/// before the next starts, so a run of them over cold lines pays each miss in turn unless the
/// lines were asked for first. A no-op except on x86-64, and under Miri.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `prefetcht0` is a hint: it never faults, whatever the address, and has no
    // effect a program can see but its timing. The intrinsic is `unsafe` only for its
    // `target_feature` (SSE), which every x86-64 processor has.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::prefetch;

    #[test]
    fn a_prefetch_of_any_address_changes_nothing() {
        let value = vec![7u64; 1024];
        for i in [0, 1, 511, 1023] {
            prefetch(&value[i]);
        }
        // Addresses the program may not read: a prefetch still neither faults nor writes.
        prefetch(std::ptr::null::<u64>());
        prefetch(value.as_ptr().wrapping_add(1 << 40));
        prefetch(usize::MAX as *const u8);
        let gone = Box::into_raw(Box::new(5u32));
        // SAFETY: `gone` came from `Box::into_raw` just above and is freed once.
        drop(unsafe { Box::from_raw(gone) });
        prefetch(gone);
        assert!(value.iter().all(|&v| v == 7));
    }
}
