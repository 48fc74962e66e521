//! Memory accounting: a shared [`MemoryPool`] with a byte limit and per-task
//! [`MemoryReservation`]s carved out of it.
//!
//! The pool is the only place that knows how much memory all running tasks
//! together have claimed; it is lock-free (one atomic counter) so that
//! reservations can grow on the hot path. A reservation is owned by one task
//! (it is `Send` but mutated through `&mut self`), tracks how much of the pool
//! that task holds, and gives everything back when dropped, so a task that
//! fails or panics can never leak pool capacity.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A shared memory budget, in bytes, for all tasks of an executor.
pub struct MemoryPool {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryPool {
    /// Creates a pool that hands out at most `limit_bytes` bytes in total.
    pub fn new(limit_bytes: usize) -> Arc<MemoryPool> {
        Arc::new(MemoryPool { limit: limit_bytes, used: AtomicUsize::new(0) })
    }

    /// Bytes currently held by all reservations.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The pool's limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes still available.
    pub fn available(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }

    /// Creates a new, empty (0 bytes) reservation against this pool.
    pub fn reservation(self: &Arc<Self>) -> MemoryReservation {
        MemoryReservation { pool: Arc::clone(self), size: 0 }
    }

    fn try_acquire(&self, bytes: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(bytes) else {
                return false;
            };
            if next > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
        }
    }
}

impl fmt::Debug for MemoryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPool").field("limit", &self.limit).field("used", &self.used()).finish()
    }
}

/// A task's share of a [`MemoryPool`]. Dropping it returns its bytes to the pool.
pub struct MemoryReservation {
    pool: Arc<MemoryPool>,
    size: usize,
}

impl MemoryReservation {
    /// Tries to grow this reservation by `bytes`. Returns `false` (and changes
    /// nothing) if the pool would exceed its limit.
    pub fn try_grow(&mut self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        if self.pool.try_acquire(bytes) {
            self.size += bytes;
            true
        } else {
            false
        }
    }

    /// Gives `bytes` back to the pool (clamped to the current size).
    pub fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.size);
        self.size -= bytes;
        self.pool.release(bytes);
    }

    /// Gives everything back to the pool; the reservation stays usable at 0 bytes.
    pub fn free(&mut self) {
        let bytes = self.size;
        self.shrink(bytes);
    }

    /// Bytes currently held.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The pool this reservation draws from.
    pub fn pool(&self) -> &Arc<MemoryPool> {
        &self.pool
    }

    /// Moves all bytes held by `self` into a new reservation (leaving `self`
    /// at 0). Used to hand accounted memory to a returned iterator.
    pub fn take(&mut self) -> MemoryReservation {
        let size = std::mem::take(&mut self.size);
        MemoryReservation { pool: Arc::clone(&self.pool), size }
    }
}

impl Drop for MemoryReservation {
    fn drop(&mut self) {
        self.free();
    }
}

impl fmt::Debug for MemoryReservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReservation").field("size", &self.size).finish()
    }
}

/// Makes sure `mem` covers at least `needed` bytes, growing it by at least
/// `chunk` bytes at a time (falling back to the exact deficit). Returns
/// `false` if the pool refused.
pub(crate) fn ensure_reserved(mem: &mut MemoryReservation, needed: usize, chunk: usize) -> bool {
    let have = mem.size();
    if needed <= have {
        return true;
    }
    let deficit = needed - have;
    mem.try_grow(deficit.max(chunk)) || mem.try_grow(deficit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_refuse_shrink_free() {
        let pool = MemoryPool::new(100);
        let mut a = pool.reservation();
        assert_eq!(a.size(), 0);
        assert!(a.try_grow(60));
        assert_eq!(pool.used(), 60);
        let mut b = pool.reservation();
        assert!(!b.try_grow(41));
        assert_eq!(b.size(), 0);
        assert!(b.try_grow(40));
        assert_eq!(pool.used(), 100);
        assert_eq!(pool.available(), 0);
        assert!(!a.try_grow(1));
        a.shrink(10);
        assert_eq!(a.size(), 50);
        assert_eq!(pool.used(), 90);
        a.shrink(1000); // clamped
        assert_eq!(a.size(), 0);
        assert_eq!(pool.used(), 40);
        assert!(a.try_grow(0));
        b.free();
        assert_eq!(pool.used(), 0);
        assert!(b.try_grow(100));
        drop(b);
        assert_eq!(pool.used(), 0);
        assert!(!a.try_grow(usize::MAX));
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn drop_and_take_return_everything() {
        let pool = MemoryPool::new(1 << 20);
        let mut a = pool.reservation();
        assert!(a.try_grow(1000));
        let moved = a.take();
        assert_eq!(a.size(), 0);
        assert_eq!(moved.size(), 1000);
        assert_eq!(pool.used(), 1000);
        drop(a);
        assert_eq!(pool.used(), 1000);
        drop(moved);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn ensure_reserved_chunks_and_falls_back() {
        let pool = MemoryPool::new(1000);
        let mut r = pool.reservation();
        assert!(ensure_reserved(&mut r, 10, 600));
        assert_eq!(r.size(), 600);
        assert!(ensure_reserved(&mut r, 900, 600)); // chunk refused, exact deficit granted
        assert_eq!(r.size(), 900);
        assert!(!ensure_reserved(&mut r, 1001, 1));
        assert_eq!(r.size(), 900);
    }

    #[test]
    fn concurrent_reservations_never_exceed_limit() {
        let limit = 10_000;
        let pool = MemoryPool::new(limit);
        let max_seen = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let pool = Arc::clone(&pool);
                let max_seen = Arc::clone(&max_seen);
                std::thread::spawn(move || {
                    let mut r = pool.reservation();
                    for i in 0..20_000usize {
                        let amt = (i * 7 + t * 13) % 900 + 1;
                        if r.try_grow(amt) {
                            let used = pool.used();
                            max_seen.fetch_max(used, Ordering::Relaxed);
                            assert!(used <= limit, "pool used {used} > limit");
                        }
                        if i % 3 == 0 {
                            r.shrink(amt);
                        }
                        if i % 97 == 0 {
                            r.free();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(max_seen.load(Ordering::Relaxed) <= limit);
        assert_eq!(pool.used(), 0);
    }
}
