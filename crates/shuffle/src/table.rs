//! [`CombineTable`]: the hash table behind map-side combining and the
//! reduce side's `combine_by_key`.
//!
//! Like Spark's `AppendOnlyMap` it is open addressing (linear probing) with
//! entries that are only ever added or updated, never removed, until the
//! whole table is drained. It differs in one respect that matters for speed:
//! it is updated a batch of records at a time, and when the table is larger
//! than the L2 cache each batch first prefetches, for every record, the two
//! places its probe starts at (its tag or short, and its bucket, both known
//! from the hash alone), and only then does the updates. Aggregating a large
//! key set is mostly waiting on cache misses — 100,000 distinct words
//! already exceed the L2 cache — and a generic hash map offers no way to
//! start those misses early.
//!
//! Layout: `tags` holds one `u32` per bucket, 0 for empty or the high 32
//! bits of the key's hash (lowest bit forced to 1); `buckets` holds the
//! `(key, combiner)` pairs in place. A probe compares keys only where the
//! tags agree. An update moves the whole entry out for the aggregator's
//! by-value `merge_value` and back in: no `Option` around the combiner, so
//! a `(String, u64)` bucket is 32 bytes and never straddles a cache line.
//! (Should `merge_value` panic, that entry is lost with the table: the
//! panic fails the task, and the table is dropped unused.)
//!
//! Byte keys (`String`, `Vec<u8>`) use a 16-byte [`Short`] per bucket in
//! place of the tag: the key itself when it has at most 15 bytes (with its
//! length), else its first 15 bytes. Equal shorts of short keys settle
//! equality without following the key's heap pointer, so a probe touches
//! only places its hash determines — the short and the bucket, both of which
//! the batch prefetches at once — instead of a tag, a bucket, and then the
//! heap line the bucket points to, a miss that could only start after the
//! bucket's. Long keys with equal shorts are compared in full.
//!
use std::hash::Hash;

use crate::aggregator::key_hash;
use crate::prefetch::prefetch;
use crate::record::{byte_like, is_byte_like};

/// Most records [`CombineTable::upsert_batch`] takes at once.
pub(crate) const MAX_BATCH: usize = 64;

/// Table size from which batches are prefetched: smaller tables sit in the
/// L2 cache, where the extra passes cost more than they hide.
const PREFETCH_ABOVE_BYTES: usize = 1 << 20;

/// A bucket: the key and its combiner (`None` when empty, or during an update).
type Bucket<K, C> = Option<(K, C)>;

/// What [`CombineTable::drain`] yields: every entry once, in bucket order.
pub(crate) type Drain<K, C> = std::iter::Flatten<std::vec::IntoIter<Bucket<K, C>>>;

/// How the table hashes keys: [`KeyHash`] everywhere but in tests, which
/// force collisions.
pub(crate) trait TableHash<K> {
    fn hash(k: &K) -> u64;
}

/// The shuffle's seeded [`key_hash`].
pub(crate) struct KeyHash;

impl<K: Hash> TableHash<K> for KeyHash {
    #[inline(always)]
    fn hash(k: &K) -> u64 {
        key_hash(k)
    }
}

/// See the module documentation.
pub(crate) struct CombineTable<K, C, H = KeyHash> {
    tags: Vec<u32>,
    buckets: Vec<Bucket<K, C>>,
    /// Byte keys only, instead of `tags`: each bucket's key as a [`Short`],
    /// or [`EMPTY`].
    shorts: Vec<Short>,
    len: usize,
    _hash: std::marker::PhantomData<H>,
}

#[inline(always)]
fn tag_of(h: u64) -> u32 {
    (h >> 32) as u32 | 1
}

/// A byte key inline, little-endian in a `u128`: up to 15 bytes
/// zero-padded, then the length in the top byte — or, for a longer key, its
/// first 15 bytes and [`LONG`]. Equal keys have equal shorts; equal shorts
/// below [`LONG`] mean equal keys.
type Short = u128;
const LONG: u8 = 0xff;
/// An empty bucket: its top byte is neither a length up to 15 nor [`LONG`].
const EMPTY: Short = 0xfe << 120;

#[inline(always)]
fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline(always)]
fn read_u32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as u64
}

/// Builds a [`Short`] from at most four overlapping loads: no copy loop, no
/// call, no partial stores for a wide load to trip over.
#[inline(always)]
fn short_of(b: &[u8]) -> Short {
    let n = b.len();
    let (lo, hi) = match n {
        16.. => (read_u64(b, 0), read_u64(b, 8) & (u64::MAX >> 8) | (LONG as u64) << 56),
        // Bytes 8..n: the last 8 bytes shifted down past the ones `lo` holds.
        8..=15 => (read_u64(b, 0), read_u64(b, n - 8).checked_shr(8 * (16 - n) as u32).unwrap_or(0)),
        // Two overlapping 4-byte loads; the overlap ORs equal bytes.
        4..=7 => (read_u32(b, 0) | read_u32(b, n - 4) << (8 * (n - 4)), 0),
        1..=3 => (b[0] as u64 | (b[n / 2] as u64) << (8 * (n / 2)) | (b[n - 1] as u64) << (8 * (n - 1)), 0),
        0 => (0, 0),
    };
    let hi = if n <= 15 { hi | (n as u64) << 56 } else { hi };
    lo as u128 | (hi as u128) << 64
}

#[inline(always)]
fn is_long(s: Short) -> bool {
    (s >> 120) as u8 == LONG
}

/// The short of a byte key; 0 for other types (never stored).
#[inline(always)]
fn short_key<K: 'static>(k: &K) -> Short {
    byte_like(k).map(short_of).unwrap_or_default()
}

impl<K: Hash + Eq + 'static, C, H: TableHash<K>> CombineTable<K, C, H> {
    pub(crate) fn new() -> Self {
        CombineTable {
            tags: Vec::new(),
            buckets: Vec::new(),
            shorts: Vec::new(),
            len: 0,
            _hash: std::marker::PhantomData,
        }
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
            + self.shorts.capacity() * std::mem::size_of::<Short>()
    }

    /// Empties the table, giving its entries (in bucket order: arbitrary but
    /// deterministic for a given input).
    pub(crate) fn drain(&mut self) -> Drain<K, C> {
        self.tags = Vec::new();
        self.shorts = Vec::new();
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
        let mask = self.buckets.len() - 1;
        let byte_keys = is_byte_like::<K>();
        let mut hashes = [0u64; MAX_BATCH];
        let mut shorts = [0 as Short; MAX_BATCH];
        for (i, (k, _)) in batch.iter().enumerate() {
            hashes[i] = H::hash(k);
            if byte_keys {
                shorts[i] = short_key(k);
            }
        }
        let hashes = &hashes[..batch.len()];
        if self.allocated_bytes() > PREFETCH_ABOVE_BYTES {
            for &h in hashes {
                let at = h as usize & mask;
                if byte_keys {
                    prefetch(&self.shorts[at]);
                } else {
                    prefetch(&self.tags[at]);
                }
                prefetch(&self.buckets[at]);
            }
        }
        for ((&h, &short), (k, v)) in hashes.iter().zip(&shorts).zip(batch.drain(..)) {
            match self.probe(h, short, &k) {
                Ok(at) => {
                    let bucket = &mut self.buckets[at];
                    let (k0, c) = bucket.take().expect("probe found a key");
                    let c = merge(c, v);
                    updated(&k0, &c);
                    *bucket = Some((k0, c));
                }
                Err(at) => {
                    let c = create(v);
                    updated(&k, &c);
                    self.mark(at, h, short);
                    self.buckets[at] = Some((k, c));
                    self.len += 1;
                }
            }
        }
    }

    /// Where `k` (hash `h`, short `short`) is: `Ok` with its bucket, or
    /// `Err` with the empty bucket where it belongs.
    #[inline(always)]
    fn probe(&self, h: u64, short: Short, k: &K) -> Result<usize, usize> {
        let mask = self.buckets.len() - 1;
        let mut at = h as usize & mask;
        let key_at = |at: usize| self.buckets[at].as_ref().map(|(k0, _)| k0);
        let tag = tag_of(h);
        loop {
            if self.vacant(at) {
                return Err(at);
            }
            let found = if is_byte_like::<K>() {
                let s = self.shorts[at];
                s == short && (!is_long(s) || key_at(at) == Some(k))
            } else {
                self.tags[at] == tag && key_at(at) == Some(k)
            };
            if found {
                return Ok(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// Whether bucket `at` holds no key (by its short or tag).
    #[inline(always)]
    fn vacant(&self, at: usize) -> bool {
        if is_byte_like::<K>() {
            self.shorts[at] == EMPTY
        } else {
            self.tags[at] == 0
        }
    }

    /// Marks bucket `at` as holding a key with hash `h` and short `short`.
    #[inline(always)]
    fn mark(&mut self, at: usize, h: u64, short: Short) {
        if is_byte_like::<K>() {
            self.shorts[at] = short;
        } else {
            self.tags[at] = tag_of(h);
        }
    }

    /// Grows the arrays so that `extra` more entries keep the load at most
    /// 5/8 (linear probing stays short well below full).
    pub(crate) fn reserve(&mut self, extra: usize) {
        let want = self.len + extra;
        if want * 8 <= self.buckets.len() * 5 {
            return;
        }
        let mut n = self.buckets.len().max(64);
        while want * 8 > n * 5 {
            n *= 2;
        }
        let byte_keys = is_byte_like::<K>();
        let old_shorts = std::mem::take(&mut self.shorts);
        let old = std::mem::take(&mut self.buckets);
        if byte_keys {
            self.shorts = vec![EMPTY; n];
        } else {
            self.tags = vec![0u32; n];
        }
        self.buckets.resize_with(n, || None);
        let mask = n - 1;
        for (i, bucket) in old.into_iter().enumerate() {
            let Some((k, c)) = bucket else { continue };
            let h = H::hash(&k);
            let short = old_shorts.get(i).copied().unwrap_or_default();
            let mut at = h as usize & mask;
            while !self.vacant(at) {
                at = (at + 1) & mask;
            }
            self.mark(at, h, short);
            self.buckets[at] = Some((k, c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn sums<K: Hash + Eq + Clone + 'static>(records: &[(K, u64)]) -> HashMap<K, u64> {
        sums_with::<K, KeyHash>(records)
    }

    /// Every key hashes alike: one probe chain, one tag.
    struct Constant;
    impl<K> TableHash<K> for Constant {
        fn hash(_: &K) -> u64 {
            0x9e37_79b9_7f4a_7c15
        }
    }

    fn sums_with<K: Hash + Eq + Clone + 'static, H: TableHash<K>>(records: &[(K, u64)]) -> HashMap<K, u64> {
        let mut t: CombineTable<K, u64, H> = CombineTable::new();
        let mut batch = Vec::new();
        for chunk in records.chunks(MAX_BATCH) {
            batch.extend(chunk.iter().cloned());
            t.upsert_batch(&mut batch, |v| v, |c, v| c + v, |_, _| {});
            assert!(batch.is_empty());
        }
        let n = t.len();
        let out: HashMap<K, u64> = t.drain().collect();
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

        /// Keys around the 15-byte inline limit that share their first 15
        /// bytes, so only the full comparison tells them apart.
        #[test]
        fn combines_long_keys_with_a_shared_inline_prefix(
            records in proptest::collection::vec(("(aaaaaaaaaaaaaaa)?[ab]{0,3}", 0u64..10), 0..3000),
        ) {
            prop_assert_eq!(sums(&records), oracle(&records));
        }

        /// As above with every key colliding: tags and shorts agree, so
        /// nothing but the full comparison can tell long keys apart.
        #[test]
        fn colliding_long_keys_are_kept_apart(
            records in proptest::collection::vec(("(aaaaaaaaaaaaaaa)?[ab]{0,3}", 0u64..10), 0..400),
        ) {
            prop_assert_eq!(sums_with::<_, Constant>(&records), oracle(&records));
        }

        /// Byte vectors where zero bytes and lengths are all that differ.
        #[test]
        fn combines_byte_vectors_that_differ_only_in_zeros_and_length(
            records in proptest::collection::vec((proptest::collection::vec(0u8..2, 0..18), 0u64..10), 0..3000),
        ) {
            prop_assert_eq!(sums(&records), oracle(&records));
        }
    }

    /// The obvious construction: copy the bytes, then the length byte.
    fn short_by_copy(b: &[u8]) -> Short {
        let mut s = [0u8; 16];
        let n = b.len().min(15);
        s[..n].copy_from_slice(&b[..n]);
        s[15] = if b.len() <= 15 { b.len() as u8 } else { LONG };
        u128::from_le_bytes(s)
    }

    #[test]
    fn shorts_match_a_plain_copy_for_every_length() {
        let bytes: Vec<u8> = (1..=40u8).map(|i| i.wrapping_mul(37)).collect();
        for n in 0..=40 {
            assert_eq!(short_of(&bytes[..n]), short_by_copy(&bytes[..n]), "length {n}");
            assert_ne!(short_of(&bytes[..n]), EMPTY);
        }
        assert!(!is_long(short_of(&[7u8; 15])) && is_long(short_of(&[7u8; 16])));
        assert_eq!(short_of(&[7u8; 16]), short_of(&[7u8; 17]), "longer keys share their first 15 bytes");
        assert_ne!(short_of(b"abc"), short_of(b"abc\0"));
        assert_ne!(short_of(b""), short_of(b"\0"));
    }

    proptest! {
        #[test]
        fn shorts_are_plain_copies(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(short_of(&b), short_by_copy(&b));
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
        let mut entries: Vec<(String, u64)> = t.drain().collect();
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
    fn a_table_sized_for_its_keys_never_regrows() {
        let mut t: CombineTable<String, u64> = CombineTable::new();
        t.reserve(10_000);
        let buckets = t.buckets.len();
        assert!(buckets * 5 >= 10_000 * 8);
        for chunk in (0..10_000u64).collect::<Vec<_>>().chunks(MAX_BATCH) {
            let mut batch: Vec<(String, u64)> = chunk.iter().map(|i| (format!("key-{i}"), 1)).collect();
            t.upsert_batch(&mut batch, |v| v, |c, v| c + v, |_, _| {});
        }
        assert_eq!((t.len(), t.buckets.len(), t.shorts.len()), (10_000, buckets, buckets));
        // reserve(0) on an empty table allocates nothing.
        let mut empty: CombineTable<u64, u64> = CombineTable::new();
        empty.reserve(0);
        assert_eq!(empty.allocated_bytes(), 0);
    }

    #[test]
    #[should_panic(expected = "batch of 65 records")]
    fn refuses_oversized_batches() {
        let mut t: CombineTable<u64, u64> = CombineTable::new();
        let mut batch: Vec<(u64, u64)> = (0..65).map(|i| (i, 1)).collect();
        t.upsert_batch(&mut batch, |v| v, |c, v| c + v, |_, _| {});
    }
}
