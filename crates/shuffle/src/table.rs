//! [`CombineTable`]: the hash table behind map-side combining and the
//! reduce side's `combine_by_key`.
//!
//! Like Spark's `AppendOnlyMap` it is open addressing (linear probing) with
//! entries that are only ever added or updated, never removed, until the
//! whole table is drained. It differs in one respect that matters for speed:
//! it is updated a batch of records at a time, and when the table is larger
//! than the L2 cache each batch first prefetches, for every record, the two
//! places its probe starts at (its tag and its bucket, both known from the
//! hash alone), then the heap bytes of byte keys found there, and only then
//! does the updates. Aggregating a large key set is mostly waiting on cache
//! misses — 100,000 distinct words already exceed the L2 cache — and a
//! generic hash map offers no way to start those misses early.
//!
//! Layout: `tags` holds one `u32` per bucket, 0 for empty or the high 32
//! bits of the key's hash (lowest bit forced to 1); `buckets` holds the
//! `(key, combiner)` pairs in place. A probe compares keys only where the
//! tags agree. The combiner is an `Option` so that it can be moved out for
//! the aggregator's by-value `merge_value` and put back.

use std::hash::Hash;

use crate::aggregator::key_hash;
use crate::prefetch::{prefetch, prefetch_heap};
use crate::record::is_byte_like;

/// Most records [`CombineTable::upsert_batch`] takes at once.
pub(crate) const MAX_BATCH: usize = 64;

/// Table size from which batches are prefetched: smaller tables sit in the
/// L2 cache, where the extra passes cost more than they hide.
const PREFETCH_ABOVE_BYTES: usize = 1 << 20;

/// A bucket: the key and its combiner (`None` only during an update).
type Bucket<K, C> = Option<(K, Option<C>)>;

/// What [`CombineTable::drain`] yields: every entry once, in bucket order.
pub(crate) type Drain<K, C> = std::iter::Flatten<std::vec::IntoIter<Bucket<K, C>>>;

/// See the module documentation.
pub(crate) struct CombineTable<K, C> {
    tags: Vec<u32>,
    buckets: Vec<Bucket<K, C>>,
    len: usize,
}

#[inline(always)]
fn tag_of(h: u64) -> u32 {
    (h >> 32) as u32 | 1
}

impl<K: Hash + Eq + 'static, C> CombineTable<K, C> {
    pub(crate) fn new() -> Self {
        CombineTable { tags: Vec::new(), buckets: Vec::new(), len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the table's own arrays (not counting what keys and
    /// combiners own on the heap).
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.tags.capacity() * std::mem::size_of::<u32>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket<K, C>>()
    }

    /// Empties the table, giving its entries (in bucket order: arbitrary but
    /// deterministic for a given input).
    pub(crate) fn drain(&mut self) -> Drain<K, C> {
        self.tags = Vec::new();
        self.len = 0;
        std::mem::take(&mut self.buckets).into_iter().flatten()
    }

    /// Adds every record of `batch` (which is left empty): a record whose key
    /// is new gets `create(v)`, otherwise its combiner becomes
    /// `merge(c, v)`. `updated` sees each record's entry after its update.
    /// Panics if `batch` holds more than [`MAX_BATCH`] records.
    pub(crate) fn upsert_batch<V>(
        &mut self,
        batch: &mut Vec<(K, V)>,
        mut create: impl FnMut(V) -> C,
        mut merge: impl FnMut(C, V) -> C,
        mut updated: impl FnMut(&K, &C),
    ) {
        assert!(batch.len() <= MAX_BATCH, "batch of {} records", batch.len());
        self.reserve(batch.len());
        let mask = self.tags.len() - 1;
        let mut hashes = [0u64; MAX_BATCH];
        for (h, (k, _)) in hashes.iter_mut().zip(batch.iter()) {
            *h = key_hash(k);
        }
        let hashes = &hashes[..batch.len()];
        if self.allocated_bytes() > PREFETCH_ABOVE_BYTES {
            for &h in hashes {
                let at = h as usize & mask;
                prefetch(&self.tags[at]);
                prefetch(&self.buckets[at]);
            }
            if is_byte_like::<K>() {
                for &h in hashes {
                    let at = h as usize & mask;
                    if self.tags[at] == tag_of(h) {
                        if let Some((k, _)) = &self.buckets[at] {
                            prefetch_heap(k);
                        }
                    }
                }
            }
        }
        for (&h, (k, v)) in hashes.iter().zip(batch.drain(..)) {
            let tag = tag_of(h);
            let mut at = h as usize & mask;
            loop {
                let t = self.tags[at];
                if t == 0 {
                    let c = create(v);
                    updated(&k, &c);
                    self.tags[at] = tag;
                    self.buckets[at] = Some((k, Some(c)));
                    self.len += 1;
                    break;
                }
                if t == tag {
                    if let Some((k0, slot)) = &mut self.buckets[at] {
                        if *k0 == k {
                            let c = merge(slot.take().expect("combiner present outside an update"), v);
                            updated(k0, &c);
                            *slot = Some(c);
                            break;
                        }
                    }
                }
                at = (at + 1) & mask;
            }
        }
    }

    /// Grows the arrays so that `extra` more entries keep the load at most
    /// 5/8 (linear probing stays short well below full).
    fn reserve(&mut self, extra: usize) {
        let want = self.len + extra;
        if want * 8 <= self.tags.len() * 5 {
            return;
        }
        let mut n = self.tags.len().max(64);
        while want * 8 > n * 5 {
            n *= 2;
        }
        let mask = n - 1;
        let mut tags = vec![0u32; n];
        let mut buckets: Vec<Bucket<K, C>> = Vec::with_capacity(n);
        buckets.resize_with(n, || None);
        for (k, c) in std::mem::take(&mut self.buckets).into_iter().flatten() {
            let h = key_hash(&k);
            let mut at = h as usize & mask;
            while tags[at] != 0 {
                at = (at + 1) & mask;
            }
            tags[at] = tag_of(h);
            buckets[at] = Some((k, c));
        }
        self.tags = tags;
        self.buckets = buckets;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn sums<K: Hash + Eq + Clone + 'static>(records: &[(K, u64)]) -> HashMap<K, u64> {
        let mut t: CombineTable<K, u64> = CombineTable::new();
        let mut batch = Vec::new();
        for chunk in records.chunks(MAX_BATCH) {
            batch.extend(chunk.iter().cloned());
            t.upsert_batch(&mut batch, |v| v, |c, v| c + v, |_, _| {});
            assert!(batch.is_empty());
        }
        let n = t.len();
        let out: HashMap<K, u64> = t.drain().map(|(k, c)| (k, c.unwrap())).collect();
        assert_eq!(out.len(), n, "a key was stored twice");
        assert!(t.is_empty());
        out
    }

    fn oracle<K: Hash + Eq + Clone>(records: &[(K, u64)]) -> HashMap<K, u64> {
        let mut m = HashMap::new();
        for (k, v) in records {
            *m.entry(k.clone()).or_insert(0) += v;
        }
        m
    }

    proptest! {
        #[test]
        fn combines_like_a_hash_map(records in proptest::collection::vec((0u32..300, 0u64..1000), 0..3000)) {
            prop_assert_eq!(sums(&records), oracle(&records));
        }

        #[test]
        fn combines_byte_keys(records in proptest::collection::vec(("[a-c]{0,6}", 0u64..10), 0..3000)) {
            prop_assert_eq!(sums(&records), oracle(&records));
        }
    }

    #[test]
    fn keys_with_equal_tags_and_buckets_are_kept_apart() {
        // A key type whose hash is constant: every key lands in one probe
        // chain with one tag, so only the key comparison tells them apart.
        #[derive(Clone, PartialEq, Eq, Debug)]
        struct Same(u32);
        impl Hash for Same {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                0u8.hash(state);
            }
        }
        let records: Vec<(Same, u64)> = (0..500u32).map(|i| (Same(i % 70), 1)).collect();
        let got = sums(&records);
        assert_eq!(got.len(), 70);
        assert_eq!(got[&Same(0)], 8);
        assert_eq!(got[&Same(69)], 7);
    }

    #[test]
    fn updates_are_reported_and_entries_drained_once() {
        let mut t: CombineTable<String, u64> = CombineTable::new();
        let mut seen = Vec::new();
        let mut batch: Vec<(String, u64)> = ["b", "a", "b", "c"].iter().map(|s| (s.to_string(), 1)).collect();
        t.upsert_batch(&mut batch, |v| v, |c, v| c + v, |k, c| seen.push((k.clone(), *c)));
        assert_eq!(seen, [("b".into(), 1), ("a".into(), 1), ("b".into(), 2), ("c".into(), 1)]);
        assert_eq!(t.len(), 3);
        let mut entries: Vec<(String, u64)> = t.drain().map(|(k, c)| (k, c.unwrap())).collect();
        entries.sort();
        assert_eq!(entries, [("a".into(), 1), ("b".into(), 2), ("c".into(), 1)]);
        assert!(t.is_empty() && t.drain().next().is_none());
    }

    #[test]
    fn grows_and_accounts_for_its_arrays() {
        let mut t: CombineTable<u64, u64> = CombineTable::new();
        assert_eq!(t.allocated_bytes(), 0);
        let mut batch = Vec::new();
        for i in 0..100_000u64 {
            batch.push((i, 1));
            if batch.len() == MAX_BATCH {
                t.upsert_batch(&mut batch, |v| v, |c, v| c + v, |_, _| {});
            }
        }
        t.upsert_batch(&mut batch, |v| v, |c, v| c + v, |_, _| {});
        assert_eq!(t.len(), 100_000);
        assert!(t.tags.len() * 5 >= t.len() * 8, "load above 5/8");
        assert!(t.allocated_bytes() >= t.tags.len() * (4 + std::mem::size_of::<(u64, Option<u64>)>()));
    }

    #[test]
    #[should_panic(expected = "batch of 65 records")]
    fn refuses_oversized_batches() {
        let mut t: CombineTable<u64, u64> = CombineTable::new();
        let mut batch: Vec<(u64, u64)> = (0..65).map(|i| (i, 1)).collect();
        t.upsert_batch(&mut batch, |v| v, |c, v| c + v, |_, _| {});
    }
}
