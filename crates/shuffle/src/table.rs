//! [`CombineTable`]: the hash table behind map-side combining and the
//! reduce side's `combine_by_key`.
//!
//! Like Spark's `AppendOnlyMap` it is open addressing with entries that are
//! only ever added or updated, never removed, until the whole table is
//! drained. It differs in one respect that matters for speed: it is updated a
//! batch of records at a time, and each batch walks the table in stages that
//! prefetch what the next stage will read (the slot, then the entry, then a
//! byte key's heap bytes). Aggregating is mostly waiting on cache misses —
//! 100,000 distinct words already exceed the L2 cache — and a generic hash
//! map offers no way to start those misses early. Measured outside the engine
//! on 38.6 M words of the wordcount data with 100,000 distinct keys: 0.9–1.2 s
//! against 1.3–1.8 s for a `hashbrown` map with `get_mut`/`insert`.
//!
//! Layout: `slots` is a power-of-two array of `u64`, each 0 (empty) or the
//! high 32 bits of the key's hash with the entry's index + 1 in the low 32
//! bits; `entries` holds `(key, combiner)` in insertion order. Probing is
//! linear over slots, eight to a cache line, and compares keys only when the
//! hash tags agree. The combiner is an `Option` so that it can be moved out
//! for the aggregator's by-value `merge_value` and put back.

use std::hash::{BuildHasher, Hash};

use crate::aggregator::key_hash_state;
use crate::prefetch::{has_heap_bytes, prefetch, prefetch_heap};

/// Most records [`CombineTable::upsert_batch`] takes at once.
pub(crate) const MAX_BATCH: usize = 64;

/// Entries a table can hold: indices + 1 must fit the slot's low 32 bits.
const MAX_ENTRIES: usize = u32::MAX as usize - MAX_BATCH;

const TAG_MASK: u64 = 0xffff_ffff_0000_0000;

/// See the module documentation.
pub(crate) struct CombineTable<K, C> {
    slots: Vec<u64>,
    entries: Vec<(K, Option<C>)>,
}

impl<K: Hash + Eq + 'static, C> CombineTable<K, C> {
    pub(crate) fn new() -> Self {
        CombineTable { slots: Vec::new(), entries: Vec::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when one more batch might not fit: the owner must drain first.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= MAX_ENTRIES
    }

    /// Bytes held by the table's own arrays (not counting what keys and
    /// combiners own on the heap).
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u64>()
            + self.entries.capacity() * std::mem::size_of::<(K, Option<C>)>()
    }

    /// Empties the table, giving its entries in insertion order.
    pub(crate) fn take_entries(&mut self) -> Vec<(K, Option<C>)> {
        self.slots = Vec::new();
        std::mem::take(&mut self.entries)
    }

    /// Adds every record of `batch` (which is left empty): a record whose key
    /// is new gets `create(v)`, otherwise its combiner becomes
    /// `merge(c, v)`. `updated` sees each record's entry after its update.
    /// Panics if `batch` holds more than [`MAX_BATCH`] records or the table
    /// [`is_full`](Self::is_full).
    pub(crate) fn upsert_batch<V>(
        &mut self,
        batch: &mut Vec<(K, V)>,
        mut create: impl FnMut(V) -> C,
        mut merge: impl FnMut(C, V) -> C,
        mut updated: impl FnMut(&K, &C),
    ) {
        assert!(batch.len() <= MAX_BATCH, "batch of {} records", batch.len());
        assert!(!self.is_full(), "combine table full");
        self.reserve(batch.len());
        let mask = self.slots.len() - 1;
        let state = key_hash_state();
        let mut hashes = [0u64; MAX_BATCH];
        for (h, (k, _)) in hashes.iter_mut().zip(batch.iter()) {
            *h = state.hash_one(k);
            prefetch(&self.slots[*h as usize & mask]);
        }
        let hashes = &hashes[..batch.len()];
        for &h in hashes {
            if let Some(i) = self.first_candidate(h, mask) {
                prefetch(&self.entries[i]);
            }
        }
        if has_heap_bytes::<K>() {
            for &h in hashes {
                if let Some(i) = self.first_candidate(h, mask) {
                    prefetch_heap(&self.entries[i].0);
                }
            }
        }
        for (&h, (k, v)) in hashes.iter().zip(batch.drain(..)) {
            let tag = h & TAG_MASK;
            let mut at = h as usize & mask;
            loop {
                let s = self.slots[at];
                if s == 0 {
                    let c = create(v);
                    updated(&k, &c);
                    self.entries.push((k, Some(c)));
                    self.slots[at] = tag | self.entries.len() as u64;
                    break;
                }
                if s & TAG_MASK == tag {
                    let entry = &mut self.entries[(s as u32 - 1) as usize];
                    if entry.0 == k {
                        let c = merge(entry.1.take().expect("combiner present outside an update"), v);
                        updated(&entry.0, &c);
                        entry.1 = Some(c);
                        break;
                    }
                }
                at = (at + 1) & mask;
            }
        }
    }

    /// The entry a probe for hash `h` would compare first, if any.
    #[inline]
    fn first_candidate(&self, h: u64, mask: usize) -> Option<usize> {
        let s = self.slots[h as usize & mask];
        (s != 0 && s & TAG_MASK == h & TAG_MASK).then(|| (s as u32 - 1) as usize)
    }

    /// Grows the slots so that `extra` more entries keep the load at most
    /// 5/8 (linear probing stays short well below full).
    fn reserve(&mut self, extra: usize) {
        let want = self.entries.len() + extra;
        if want * 8 <= self.slots.len() * 5 {
            return;
        }
        let mut n = self.slots.len().max(64);
        while want * 8 > n * 5 {
            n *= 2;
        }
        let state = key_hash_state();
        let mask = n - 1;
        let mut slots = vec![0u64; n];
        for (i, (k, _)) in self.entries.iter().enumerate() {
            let h = state.hash_one(k);
            let mut at = h as usize & mask;
            while slots[at] != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = (h & TAG_MASK) | (i as u64 + 1);
        }
        self.slots = slots;
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
        let out: HashMap<K, u64> = t.take_entries().into_iter().map(|(k, c)| (k, c.unwrap())).collect();
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
    fn keys_with_equal_tags_and_slots_are_kept_apart() {
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
    fn entries_come_out_in_insertion_order_and_updates_are_reported() {
        let mut t: CombineTable<String, u64> = CombineTable::new();
        let mut seen = Vec::new();
        let mut batch: Vec<(String, u64)> = ["b", "a", "b", "c"].iter().map(|s| (s.to_string(), 1)).collect();
        t.upsert_batch(&mut batch, |v| v, |c, v| c + v, |k, c| seen.push((k.clone(), *c)));
        assert_eq!(seen, [("b".into(), 1), ("a".into(), 1), ("b".into(), 2), ("c".into(), 1)]);
        let entries: Vec<(String, u64)> = t.take_entries().into_iter().map(|(k, c)| (k, c.unwrap())).collect();
        assert_eq!(entries, [("b".into(), 2), ("a".into(), 1), ("c".into(), 1)]);
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
        assert!(t.slots.len() * 5 >= t.len() * 8, "load above 5/8");
        assert!(t.allocated_bytes() >= t.slots.len() * 8 + t.len() * std::mem::size_of::<(u64, Option<u64>)>());
    }

    #[test]
    #[should_panic(expected = "batch of 65 records")]
    fn refuses_oversized_batches() {
        let mut t: CombineTable<u64, u64> = CombineTable::new();
        let mut batch: Vec<(u64, u64)> = (0..65).map(|i| (i, 1)).collect();
        t.upsert_batch(&mut batch, |v| v, |c, v| c + v, |_, _| {});
    }
}
