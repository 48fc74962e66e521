//! Partitioners: which reduce partition a key goes to.
//!
//! [`HashPartitioner`] hashes keys with a fixed-seed hasher (identical in
//! every process running the same binary) and maps the 64-bit hash onto
//! `[0, n)` by multiply-shift. [`RangePartitioner`] holds sorted upper bounds
//! found by sampling (see `determine_bounds`); a key goes to the first
//! partition whose bound is `>=` it, so equal keys never straddle partitions.
//! [`PartitionerDesc`] is the type-erased identity used to decide whether an
//! RDD is already partitioned the way an operation needs (no shuffle then).

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::hash::{BuildHasher, Hash};

/// A partitioner's identity, comparable without knowing the key type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionerDesc {
    Hash(usize),
    Range {
        partitions: usize,
        fingerprint: [u8; 32],
    },
    /// Keys are partition indices already (used by `repartition`).
    Direct(usize),
}

impl PartitionerDesc {
    pub fn num_partitions(&self) -> usize {
        match self {
            PartitionerDesc::Hash(n) | PartitionerDesc::Direct(n) => *n,
            PartitionerDesc::Range { partitions, .. } => *partitions,
        }
    }
}

/// Maps keys to partitions. Must be deterministic across processes.
pub trait Partitioner<K>: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    fn num_partitions(&self) -> usize;
    fn partition(&self, key: &K) -> usize;
    fn desc(&self) -> PartitionerDesc;
}

const PARTITION_SEED: u64 = 0x0e3b_e2da_7a5e_ed01;

/// The hash Ember partitions by: fixed seed, same in every process of one binary.
#[inline]
pub fn partition_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    foldhash::fast::FixedState::with_seed(PARTITION_SEED).hash_one(key)
}

/// Maps a 64-bit hash onto `[0, n)` without division (Lemire's multiply-shift).
#[inline]
pub fn reduce_hash(hash: u64, n: usize) -> usize {
    ((hash as u128 * n as u128) >> 64) as usize
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashPartitioner {
    partitions: usize,
}

impl HashPartitioner {
    pub fn new(partitions: usize) -> Self {
        HashPartitioner { partitions }
    }
}

impl<K: Hash + 'static> Partitioner<K> for HashPartitioner {
    fn num_partitions(&self) -> usize {
        self.partitions
    }
    #[inline]
    fn partition(&self, key: &K) -> usize {
        reduce_hash(partition_hash(key), self.partitions)
    }
    fn desc(&self) -> PartitionerDesc {
        PartitionerDesc::Hash(self.partitions)
    }
}

/// Keys are already partition indices (`repartition` assigns them round-robin).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectPartitioner {
    partitions: usize,
}

impl DirectPartitioner {
    pub fn new(partitions: usize) -> Self {
        DirectPartitioner { partitions }
    }
}

impl Partitioner<usize> for DirectPartitioner {
    fn num_partitions(&self) -> usize {
        self.partitions
    }
    fn partition(&self, key: &usize) -> usize {
        key % self.partitions
    }
    fn desc(&self) -> PartitionerDesc {
        PartitionerDesc::Direct(self.partitions)
    }
}

/// Range partitioning by sorted upper bounds (`bounds.len() + 1` partitions).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RangePartitioner<K> {
    bounds: Vec<K>,
    /// For byte keys, each bound's 8-byte sort prefix (empty otherwise): a
    /// key is placed by comparing integers, and only the bounds that share
    /// its prefix are compared in full (a `memcmp` call each).
    prefixes: Vec<u64>,
    ascending: bool,
    fingerprint: [u8; 32],
}

impl<K: Ord + Serialize + 'static> RangePartitioner<K> {
    pub fn new(bounds: Vec<K>, ascending: bool) -> Self {
        let bytes = postcard::to_allocvec(&(&bounds, ascending)).unwrap_or_default();
        let fingerprint = *blake3::hash(&bytes).as_bytes();
        let prefixes = bounds.iter().map_while(ember_shuffle::sort_prefix).collect();
        RangePartitioner { bounds, prefixes, ascending, fingerprint }
    }
    pub fn bounds(&self) -> &[K] {
        &self.bounds
    }
}

impl<K> Partitioner<K> for RangePartitioner<K>
where
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn num_partitions(&self) -> usize {
        self.bounds.len() + 1
    }
    #[inline]
    fn partition(&self, key: &K) -> usize {
        // The first bound >= key. Prefixes are ordered like their keys
        // (`a < b` implies `prefix(a) <= prefix(b)`), so a bound with a
        // smaller prefix is smaller than the key and one with a larger prefix
        // is larger; only equal prefixes need the full comparison.
        let p = match ember_shuffle::sort_prefix(key) {
            Some(kp) if self.prefixes.len() == self.bounds.len() => {
                let lo = self.prefixes.partition_point(|&bp| bp < kp);
                let hi = lo + self.prefixes[lo..].partition_point(|&bp| bp == kp);
                lo + self.bounds[lo..hi].partition_point(|b| b < key)
            }
            _ => self.bounds.partition_point(|b| b < key),
        };
        if self.ascending {
            p
        } else {
            self.bounds.len() - p
        }
    }
    fn desc(&self) -> PartitionerDesc {
        PartitionerDesc::Range { partitions: self.bounds.len() + 1, fingerprint: self.fingerprint }
    }
}

/// Chooses `partitions - 1` bounds from weighted samples so that each range
/// holds about the same total weight (Spark's `RangePartitioner.determineBounds`).
/// A sample's weight is the number of input records it stands for.
pub fn determine_bounds<K: Ord + Clone>(mut candidates: Vec<(K, f64)>, partitions: usize) -> Vec<K> {
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
    let total: f64 = candidates.iter().map(|c| c.1).sum();
    let step = total / partitions as f64;
    let mut bounds: Vec<K> = Vec::with_capacity(partitions.saturating_sub(1));
    let mut cumulative = 0.0;
    let mut target = step;
    for (key, weight) in candidates {
        if bounds.len() + 1 >= partitions {
            break;
        }
        cumulative += weight;
        if cumulative >= target && bounds.last().is_none_or(|last| key > *last) {
            bounds.push(key);
            target += step;
        }
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hash_partition_in_range_and_deterministic(key in any::<String>(), n in 1usize..1000) {
            let p = HashPartitioner::new(n);
            let a = Partitioner::<String>::partition(&p, &key);
            prop_assert!(a < n);
            prop_assert_eq!(a, Partitioner::<String>::partition(&p, &key));
        }

        #[test]
        fn range_partition_is_monotone(mut keys in proptest::collection::vec(any::<i32>(), 1..200), parts in 1usize..20) {
            let bounds = determine_bounds(keys.iter().map(|k| (*k, 1.0)).collect(), parts);
            prop_assert!(bounds.len() < parts.max(1));
            prop_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
            let rp = RangePartitioner::new(bounds, true);
            keys.sort();
            let ps: Vec<usize> = keys.iter().map(|k| rp.partition(k)).collect();
            prop_assert!(ps.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(ps.iter().all(|p| *p < Partitioner::<i32>::num_partitions(&rp)));
            let desc = RangePartitioner::new(rp.bounds().to_vec(), false);
            let ds: Vec<usize> = keys.iter().map(|k| desc.partition(k)).collect();
            prop_assert!(ds.windows(2).all(|w| w[0] >= w[1]));
        }

        /// Byte keys are placed through their 8-byte prefixes; keys that share
        /// a prefix with bounds (long common prefixes, trailing zero bytes,
        /// different lengths) must land exactly where full comparison puts them.
        #[test]
        fn byte_keys_go_where_full_comparison_puts_them(
            samples in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8)], 0..12), 1..100),
            keys in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8)], 0..12), 1..100),
            parts in 1usize..20,
        ) {
            let bounds = determine_bounds(samples.into_iter().map(|k| (k, 1.0)).collect(), parts);
            for ascending in [true, false] {
                let rp = RangePartitioner::new(bounds.clone(), ascending);
                for k in &keys {
                    let p = bounds.partition_point(|b| b < k);
                    let want = if ascending { p } else { bounds.len() - p };
                    prop_assert_eq!(rp.partition(k), want, "key {:?} bounds {:?}", k, bounds);
                }
            }
        }
    }

    #[test]
    fn hash_partitioner_spreads_keys() {
        let p = HashPartitioner::new(8);
        let mut counts = [0usize; 8];
        for k in 0u64..80_000 {
            counts[p.partition(&k)] += 1;
        }
        assert!(counts.iter().all(|c| (9_000..11_000).contains(c)), "{counts:?}");
    }

    #[test]
    fn equal_partitioners_compare_equal() {
        assert_eq!(Partitioner::<u8>::desc(&HashPartitioner::new(4)), PartitionerDesc::Hash(4));
        assert_ne!(Partitioner::<u8>::desc(&HashPartitioner::new(4)), PartitionerDesc::Hash(5));
        let a = RangePartitioner::new(vec![1, 5], true);
        let b = RangePartitioner::new(vec![1, 5], true);
        let c = RangePartitioner::new(vec![1, 6], true);
        assert_eq!(a.desc(), b.desc());
        assert_ne!(a.desc(), c.desc());
    }
}
