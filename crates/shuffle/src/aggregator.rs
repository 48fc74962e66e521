//! The [`Aggregator`] trait (Spark's `combineByKey` semantics) and the
//! process-independent [`key_hash`] used to order spilled runs.
//!
//! Both the map-side combining writer and the reduce-side
//! [`combine_by_key`](crate::combine_by_key) are driven by an `Aggregator`;
//! the merge of spilled runs relies on every run being sorted by
//! [`key_hash`], which therefore has to be deterministic (fixed seed) for all
//! processes running the same binary.

use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::Arc;

/// Seed of [`key_hash`]. Changing it changes the order of spilled runs, so it
/// must be the same in every process that reads those runs.
pub const KEY_HASH_SEED: u64 = 0x5eed_e3be_5eed_e3be;

/// The hasher state behind [`key_hash`].
fn key_hash_state() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(KEY_HASH_SEED)
}

/// Deterministic 64-bit hash of a key (same value in every process running
/// the same binary). Used to sort and merge spilled runs; not a partitioner.
#[inline]
pub fn key_hash<K: Hash + ?Sized>(k: &K) -> u64 {
    key_hash_state().hash_one(k)
}

/// How values of type `V` are combined into combiners of type `C` for each
/// key `K` (Spark's `combineByKey`). All methods take their inputs by value.
pub trait Aggregator<K, V, C>: Send + Sync {
    /// Turns the first value seen for a key into a combiner.
    fn create_combiner(&self, v: V) -> C;
    /// Folds another value into a key's combiner.
    fn merge_value(&self, c: C, v: V) -> C;
    /// Merges two combiners of the same key (e.g. from different spills or map tasks).
    fn merge_combiners(&self, a: C, b: C) -> C;
}

impl<K, V, C, A: Aggregator<K, V, C> + ?Sized> Aggregator<K, V, C> for &A {
    fn create_combiner(&self, v: V) -> C {
        (**self).create_combiner(v)
    }
    fn merge_value(&self, c: C, v: V) -> C {
        (**self).merge_value(c, v)
    }
    fn merge_combiners(&self, a: C, b: C) -> C {
        (**self).merge_combiners(a, b)
    }
}

impl<K, V, C, A: Aggregator<K, V, C> + ?Sized> Aggregator<K, V, C> for Arc<A> {
    fn create_combiner(&self, v: V) -> C {
        (**self).create_combiner(v)
    }
    fn merge_value(&self, c: C, v: V) -> C {
        (**self).merge_value(c, v)
    }
    fn merge_combiners(&self, a: C, b: C) -> C {
        (**self).merge_combiners(a, b)
    }
}

impl<K, V, C, A: Aggregator<K, V, C> + ?Sized> Aggregator<K, V, C> for Box<A> {
    fn create_combiner(&self, v: V) -> C {
        (**self).create_combiner(v)
    }
    fn merge_value(&self, c: C, v: V) -> C {
        (**self).merge_value(c, v)
    }
    fn merge_combiners(&self, a: C, b: C) -> C {
        (**self).merge_combiners(a, b)
    }
}

/// An [`Aggregator`] built from three functions (convenient for closures).
pub struct FnAggregator<F1, F2, F3> {
    create: F1,
    merge_value: F2,
    merge_combiners: F3,
}

impl<F1, F2, F3> FnAggregator<F1, F2, F3> {
    /// Builds an aggregator from `create_combiner`, `merge_value` and `merge_combiners`.
    pub fn new(create_combiner: F1, merge_value: F2, merge_combiners: F3) -> Self {
        FnAggregator { create: create_combiner, merge_value, merge_combiners }
    }
}

impl<K, V, C, F1, F2, F3> Aggregator<K, V, C> for FnAggregator<F1, F2, F3>
where
    F1: Fn(V) -> C + Send + Sync,
    F2: Fn(C, V) -> C + Send + Sync,
    F3: Fn(C, C) -> C + Send + Sync,
{
    fn create_combiner(&self, v: V) -> C {
        (self.create)(v)
    }
    fn merge_value(&self, c: C, v: V) -> C {
        (self.merge_value)(c, v)
    }
    fn merge_combiners(&self, a: C, b: C) -> C {
        (self.merge_combiners)(a, b)
    }
}

/// Adapter turning an `Aggregator<K, V, C>` into an `Aggregator<K, C, C>`
/// whose inputs are already combiners: `create_combiner` is the identity and
/// `merge_value` is `merge_combiners`. Used by
/// [`merge_combiners_by_key`](crate::merge_combiners_by_key) for the reduce
/// side of a shuffle that was combined map-side.
pub struct MergeCombiners<A, V> {
    inner: A,
    _v: PhantomData<fn(V)>,
}

impl<A, V> MergeCombiners<A, V> {
    /// Wraps `inner`.
    pub fn new(inner: A) -> Self {
        MergeCombiners { inner, _v: PhantomData }
    }

    /// The wrapped aggregator.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

impl<K, V, C, A: Aggregator<K, V, C>> Aggregator<K, C, C> for MergeCombiners<A, V> {
    fn create_combiner(&self, c: C) -> C {
        c
    }
    fn merge_value(&self, a: C, b: C) -> C {
        self.inner.merge_combiners(a, b)
    }
    fn merge_combiners(&self, a: C, b: C) -> C {
        self.inner.merge_combiners(a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_deterministic_and_seeded() {
        assert_eq!(key_hash(&42u32), key_hash(&42u32));
        assert_eq!(key_hash("abc"), key_hash(&String::from("abc")));
        assert_ne!(key_hash(&1u64), key_hash(&2u64));
        // Pinned against the fixed seed: must not change between processes.
        let again = foldhash::fast::FixedState::with_seed(0x5eed_e3be_5eed_e3be).hash_one(7u32);
        assert_eq!(key_hash(&7u32), again);
    }

    #[test]
    fn adapters_delegate() {
        let sum = FnAggregator::new(|v: u32| v as u64, |c: u64, v: u32| c + v as u64, |a, b| a + b);
        let by_ref = &sum;
        assert_eq!(Aggregator::<u8, u32, u64>::merge_value(&by_ref, 1, 2), 3);
        let arc = Arc::new(sum);
        assert_eq!(Aggregator::<u8, u32, u64>::create_combiner(&arc, 5), 5);
        let mc: MergeCombiners<_, u32> = MergeCombiners::new(arc);
        assert_eq!(Aggregator::<u8, u64, u64>::create_combiner(&mc, 9), 9);
        assert_eq!(Aggregator::<u8, u64, u64>::merge_value(&mc, 9, 1), 10);
        assert_eq!(Aggregator::<u8, u64, u64>::merge_combiners(&mc, 9, 2), 11);
    }
}
