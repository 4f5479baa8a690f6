//! How the process uses glibc's allocator: a long `fleetgate run` over a large fleet
//! allocates and frees buffers of megabytes (the state document, its parsed deliveries,
//! a pass's observations) and millions of small strings. Measured in benches/README.md
//! ("CANARY and DEPLOY over 100,000 simulated nodes").

/// glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB),
/// after which buffers of megabytes come from the heap, and the holes they leave keep
/// resident memory above what is live. A fixed threshold (glibc's own starting value,
/// 128 KiB) keeps every large buffer mapped on its own and returned to the system when
/// freed. `MALLOC_MMAP_THRESHOLD_` in the environment wins. Call it first thing in
/// `main`, while the process has one thread.
pub fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: `mallopt` only changes an allocator setting; called before any other
        // thread exists.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    }
}

/// Gives the pages of freed memory back to the system (glibc keeps them otherwise): called
/// between two passes of `fleetgate run`, when what a pass read is freed.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes the allocator's own locks; it only returns free
        // pages.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Blocks the allocator has mapped on their own (`mmap`), now.
    fn mapped_blocks() -> usize {
        // SAFETY: `mallinfo2` only reads the allocator's counters.
        #[allow(unsafe_code)]
        let info = unsafe { libc::mallinfo2() };
        info.hblks
    }

    /// Once a 4-MiB block is freed, glibc left to itself serves a 1-MiB block from the
    /// heap; with the fixed threshold the 1-MiB block is mapped on its own (and given back
    /// when freed). Counts the process's mapped blocks: run it alone in its process, as
    /// nextest (`cargo xtask test`) does.
    #[test]
    fn with_the_fixed_threshold_a_megabyte_buffer_is_mapped_after_a_larger_one_was_freed() {
        assert!(
            std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none(),
            "the test needs glibc's own threshold handling"
        );
        super::fixed_mmap_threshold();
        let big = std::hint::black_box(vec![1u8; 4 << 20]);
        drop(big);
        let before = mapped_blocks();
        let buffer = std::hint::black_box(vec![1u8; 1 << 20]);
        assert_eq!(
            mapped_blocks(),
            before + 1,
            "the 1-MiB buffer came from the heap"
        );
        drop(buffer);
        assert_eq!(
            mapped_blocks(),
            before,
            "the 1-MiB buffer was not given back"
        );
    }
}
