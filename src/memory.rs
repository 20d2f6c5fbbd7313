//! Giving freed memory back to the operating system.

/// Returns memory the allocator holds free to the OS. glibc keeps freed
/// memory in its heaps for reuse; once a flush has dropped a head's worth of
/// chunks (and a big query its intermediate results), that is most of the
/// process' resident memory, and it stays there until the next burst.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's own
    // free lists under the allocator's locks, and may be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
