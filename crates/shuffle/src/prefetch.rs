//! Software prefetch hints for the two places where the shuffle walks memory
//! in an order the hardware prefetcher cannot guess: records handed out in
//! sorted order (scattered over the heap in arrival order) and hash-table
//! probes. A hint never changes what a program computes; it only starts a
//! cache fill early so that several misses overlap instead of queueing
//! behind the work done per record.

use crate::record::byte_like;

/// Hints that the cache line holding `p` will be read soon. No-op on
/// targets without a prefetch instruction in stable Rust.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults and never reads into
    // the program's state, whatever the address (null, dangling, unmapped).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches the heap bytes of a byte-like value (`Vec<u8>`, `String`):
/// for those, the struct is a pointer and the data lives elsewhere. Other
/// types are left alone (their first line is wherever the value is).
#[inline(always)]
pub(crate) fn prefetch_heap<T: 'static>(v: &T) {
    if let Some(b) = byte_like(v) {
        prefetch_bytes(b);
    }
}

/// Prefetches the first and the last cache line of `b` (a short buffer
/// often straddles a line boundary; longer ones are read sequentially,
/// which the hardware prefetcher follows on its own).
#[inline(always)]
fn prefetch_bytes(b: &[u8]) {
    prefetch(b.as_ptr());
    if let Some(last) = b.last() {
        prefetch(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_accept_any_address() {
        // Nothing observable may happen, even for addresses that are not
        // readable: the instruction is only a hint.
        prefetch(std::ptr::null::<u8>());
        prefetch(usize::MAX as *const u64);
        prefetch_heap(&Vec::<u8>::new());
        prefetch_heap(&String::from("abc"));
        prefetch_heap(&7u64);
    }
}
