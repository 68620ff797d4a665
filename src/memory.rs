//! Process-wide allocator settings for tensor work on the CPU.
//!
//! The CPU backends allocate a fresh buffer for nearly every operation's output and free
//! it soon after. glibc's `malloc` serves buffers past its mmap threshold (128 KiB at
//! first, raised dynamically up to 32 MiB) with `mmap` and returns them with `munmap`, so
//! each such buffer is faulted in and zeroed by the kernel page by page, again and again:
//! a quarter of an SDXL UNet step on 2 cores went to page faults and `munmap`.
//! [`reuse_freed_memory`] raises the threshold to glibc's maximum and stops trimming the
//! heap, so freed buffers are reused from the heap instead.
//!
//! Only a program should call it (it changes the whole process); the CLI and the examples
//! do. It does not raise the peak memory of a run: freed memory is kept for reuse, not
//! added to (docs/BENCHMARKS.md has the measurements).

/// glibc's largest mmap threshold on 64-bit targets (`HEAP_MAX_SIZE / 2`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Keeps freed buffers of up to 32 MiB in the heap for reuse (glibc `mallopt`
/// `M_MMAP_THRESHOLD` to 32 MiB, `M_TRIM_THRESHOLD` to its maximum). Returns whether the
/// settings took effect: false on other platforms and C libraries (their allocators
/// differ; nothing is changed there).
pub fn reuse_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's allocator parameters; it is called with
        // valid parameter numbers and values, and is thread-safe.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        };
        if !ok {
            log::warn!("glibc refused the allocator settings; freed buffers go back to the OS");
        }
        ok
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        let took = super::reuse_freed_memory();
        assert_eq!(took, cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}
