//! Asking the processor for a cache line ahead of its use.
//!
//! A message visits every serving plugin, and each visit follows a chain of
//! pointers (the plugin's entry in the registry, its calls in flight, its
//! backend, the plugin's own object) that no two plugins share. With a few
//! hundred plugins those lines no longer stay in a core's cache between
//! messages, and each visit would wait for them one after another. The
//! pipeline asks for them a few plugins ahead instead, so they arrive
//! while earlier plugins are served. This module holds the one instruction
//! it takes, and must never do anything a program could observe.

/// Asks the processor to bring the cache line holding `address` towards
/// the core, without waiting for it. Any address may be given: a prefetch
/// reads nothing the program sees and never faults.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache: it neither reads memory
    // into the program nor faults on any address, valid or not, and the
    // SSE instruction set it needs is part of every x86_64 processor.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
