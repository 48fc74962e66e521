//! Operations on RDDs of `(K, V)` pairs (Spark's `PairRDDFunctions`).
//!
//! Every aggregation funnels into [`Rdd::combine_with`]: if the RDD is
//! already partitioned by the target partitioner, values are combined inside
//! each partition with no shuffle (and the partitioner is kept); otherwise a
//! shuffle is planned, combining map-side when the operation allows it.
//! Joins are built on `cogroup`, whose sides are shuffled only when not
//! already co-partitioned.

use super::{partition_rng, Rdd};
use ember_common::Result;
use ember_core::aggregators::{CombineAgg, GroupAgg, ReduceAgg, ZeroAgg};
use ember_core::codec::{conjure, Func, ShippableFn};
use ember_core::partitioner::{determine_bounds, HashPartitioner, Partitioner, RangePartitioner};
use ember_core::rdd::{
    AggregatedShuffledRdd, CoGroupedRdd, FlatMapBatches, MapBatches, ShuffledRdd, SortedShuffledRdd,
};
use ember_core::shuffle_dep::{CombiningShuffleWriteSink, ShuffleDependency, ShuffleWriteSink, SinkNode};
use ember_core::{boxed, BoxIter, Data, Key, TaskContext};
use ember_shuffle::Aggregator;
use rand::Rng;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// A join's pairs for one key, in Spark's order (for each left value, each
/// right value). Each value is cloned only for the pairs before its last
/// one, which takes it: the common one-to-one key costs no clone at all
/// (pagerank's join pairs each page's whole link list with its rank).
fn cross<V: Clone, W: Clone>(vs: Vec<V>, mut ws: Vec<W>) -> Vec<(V, W)> {
    let mut out = Vec::with_capacity(vs.len() * ws.len());
    if ws.is_empty() {
        return out;
    }
    let last = vs.len().saturating_sub(1);
    for (i, v) in vs.into_iter().enumerate() {
        if i < last {
            pair_with(&mut out, v, ws.iter().cloned());
        } else {
            pair_with(&mut out, v, std::mem::take(&mut ws).into_iter());
        }
    }
    out
}

/// Pushes `(v, w)` for every `w`, moving `v` into the last pair.
fn pair_with<V: Clone, W>(out: &mut Vec<(V, W)>, v: V, ws: impl ExactSizeIterator<Item = W>) {
    let last = ws.len() - 1;
    let mut v = Some(v);
    for (j, w) in ws.enumerate() {
        let v = if j < last { v.clone() } else { v.take() };
        out.push((v.expect("taken only at the last pair"), w));
    }
}

/// An outer join's side: its values, or one `None` when it has none.
fn or_none<T>(xs: Vec<T>) -> Vec<Option<T>> {
    if xs.is_empty() {
        vec![None]
    } else {
        xs.into_iter().map(Some).collect()
    }
}

impl<K: Key, V: Data> Rdd<(K, V)> {
    pub fn keys(&self) -> Rdd<K> {
        self.transform("keys", (), false, |_: &(), _: &TaskContext, it: BoxIter<(K, V)>| -> BoxIter<K> {
            Box::new(MapBatches::new(it, |(k, _)| k))
        })
    }

    pub fn values(&self) -> Rdd<V> {
        self.transform("values", (), false, |_: &(), _: &TaskContext, it: BoxIter<(K, V)>| -> BoxIter<V> {
            Box::new(MapBatches::new(it, |(_, v)| v))
        })
    }

    /// Maps values, keeping keys and therefore the partitioner.
    pub fn map_values<U: Data, F: Fn(V) -> U + ShippableFn>(&self, f: F) -> Rdd<(K, U)> {
        let _ = Func::new(f);
        self.transform("mapValues", (), true, |_: &(), _: &TaskContext, it: BoxIter<(K, V)>| -> BoxIter<(K, U)> {
            Box::new(MapBatches::new(it, |(k, v)| (k, conjure::<F>()(v))))
        })
    }

    /// Maps each value to zero or more values under the same key (keeps the partitioner).
    pub fn flat_map_values<U, I, F>(&self, f: F) -> Rdd<(K, U)>
    where
        U: Data,
        I: IntoIterator<Item = U> + 'static,
        F: Fn(V) -> I + ShippableFn,
    {
        let _ = Func::new(f);
        self.transform("flatMapValues", (), true, |_: &(), _: &TaskContext, it: BoxIter<(K, V)>| -> BoxIter<(K, U)> {
            Box::new(FlatMapBatches::new(it, |(k, v)| conjure::<F>()(v).into_iter().map(move |u| (k.clone(), u))))
        })
    }

    /// Redistributes records by `partitioner` (no-op if already partitioned so).
    pub fn partition_by_with<P: Partitioner<K>>(&self, partitioner: P) -> Rdd<(K, V)> {
        if self.partitioner() == Some(partitioner.desc()) {
            return self.clone();
        }
        let dep = self.plain_shuffle(&partitioner);
        let node = ShuffledRdd::<K, V>::new(self.ctx.new_rdd_id(), dep, partitioner.desc());
        Rdd::from_node(&self.ctx, Arc::new(node))
    }

    /// Plans a shuffle of these records by `partitioner`, without combining.
    fn plain_shuffle<P: Partitioner<K>>(&self, partitioner: &P) -> Arc<ShuffleDependency> {
        let shuffle_id = self.ctx.new_shuffle_id();
        let sink = ShuffleWriteSink::new(shuffle_id, self.node.clone(), partitioner.clone());
        self.shuffle_dependency(
            shuffle_id,
            partitioner.num_partitions(),
            Arc::new(SinkNode::new(Arc::new(sink), self.base())),
        )
    }

    /// A shuffle dependency on this RDD, written by `sink`.
    fn shuffle_dependency(
        &self,
        shuffle_id: ember_common::ShuffleId,
        num_reduce_partitions: usize,
        sink: Arc<dyn ember_core::codec::EncodableNode>,
    ) -> Arc<ShuffleDependency> {
        Arc::new(ShuffleDependency { shuffle_id, rdd: self.base(), num_reduce_partitions, sink })
    }

    /// Hash-partitions into `partitions` partitions.
    pub fn partition_by(&self, partitions: usize) -> Rdd<(K, V)> {
        self.partition_by_with(HashPartitioner::new(partitions.max(1)))
    }

    /// The general aggregation behind every `*_by_key`.
    pub fn combine_with<C, A>(&self, agg: A, partitions: usize, map_side_combine: bool) -> Rdd<(K, C)>
    where
        C: Data,
        A: Aggregator<K, V, C> + Serialize + DeserializeOwned + Clone + 'static,
    {
        let partitioner = HashPartitioner::new(partitions.max(1));
        let desc = Partitioner::<K>::desc(&partitioner);
        if self.partitioner() == Some(desc.clone()) {
            // Already partitioned by key: combine within each partition, no shuffle.
            return self.transform(
                "combineByKey",
                agg,
                true,
                |agg: &A, ctx: &TaskContext, it: BoxIter<(K, V)>| -> BoxIter<(K, C)> {
                    let env = ctx.env();
                    let cfg = env.write_config();
                    let mut mem = env.memory_pool().reservation();
                    match ember_shuffle::combine_by_key(
                        ctx.checked_batches(it),
                        agg.clone(),
                        &mut mem,
                        &cfg.spill_dir,
                        &cfg,
                    ) {
                        Ok(out) => {
                            ember_core::rdd::note_spilled(ctx, out.bytes_spilled());
                            let ctx = ctx.clone();
                            boxed(out.map_while(move |r| match r {
                                Ok(kv) => Some(kv),
                                Err(e) => {
                                    super::fail_task(&ctx, e);
                                    None
                                }
                            }))
                        }
                        Err(e) => {
                            super::fail_task(ctx, e);
                            boxed(std::iter::empty())
                        }
                    }
                },
            );
        }
        let shuffle_id = self.ctx.new_shuffle_id();
        let sink: Arc<dyn ember_core::codec::EncodableNode> = if map_side_combine {
            let s = CombiningShuffleWriteSink::new(shuffle_id, self.node.clone(), partitioner, agg.clone());
            Arc::new(SinkNode::new(Arc::new(s), self.base()))
        } else {
            let s = ShuffleWriteSink::new(shuffle_id, self.node.clone(), partitioner);
            Arc::new(SinkNode::new(Arc::new(s), self.base()))
        };
        let dep = self.shuffle_dependency(shuffle_id, Partitioner::<K>::num_partitions(&partitioner), sink);
        let node = AggregatedShuffledRdd::<K, V, C, A>::new(self.ctx.new_rdd_id(), dep, desc, agg, map_side_combine);
        Rdd::from_node(&self.ctx, Arc::new(node))
    }

    /// Spark's `combineByKey(createCombiner, mergeValue, mergeCombiners, numPartitions)`.
    pub fn combine_by_key<C, F1, F2, F3>(
        &self,
        create: F1,
        merge_value: F2,
        merge_combiners: F3,
        partitions: usize,
    ) -> Rdd<(K, C)>
    where
        C: Data,
        F1: Fn(V) -> C + ShippableFn,
        F2: Fn(C, V) -> C + ShippableFn,
        F3: Fn(C, C) -> C + ShippableFn,
    {
        let agg = CombineAgg(Func::new(create), Func::new(merge_value), Func::new(merge_combiners));
        self.combine_with(agg, partitions, true)
    }

    /// Merges the values of each key with `f` (combined map-side too).
    pub fn reduce_by_key<F: Fn(V, V) -> V + ShippableFn>(&self, f: F, partitions: usize) -> Rdd<(K, V)> {
        self.combine_with(ReduceAgg(Func::new(f)), partitions, true)
    }

    /// Folds the values of each key, starting from `zero` for every key in every partition.
    pub fn fold_by_key<F: Fn(V, V) -> V + ShippableFn>(&self, zero: V, f: F, partitions: usize) -> Rdd<(K, V)> {
        let agg = ZeroAgg { zero, seq: Func::new(f), comb: Func::new(f) };
        self.combine_with(agg, partitions, true)
    }

    /// `seq` folds values into a `U` from `zero`; `comb` merges `U`s.
    pub fn aggregate_by_key<U, F1, F2>(&self, zero: U, seq: F1, comb: F2, partitions: usize) -> Rdd<(K, U)>
    where
        U: Data,
        F1: Fn(U, V) -> U + ShippableFn,
        F2: Fn(U, U) -> U + ShippableFn,
    {
        let agg = ZeroAgg { zero, seq: Func::new(seq), comb: Func::new(comb) };
        self.combine_with(agg, partitions, true)
    }

    /// All values of each key (never combined map-side, as in Spark).
    pub fn group_by_key(&self, partitions: usize) -> Rdd<(K, Vec<V>)> {
        self.combine_with(GroupAgg, partitions, false)
    }

    /// For each key, its values from this RDD and from `other`.
    pub fn cogroup<W: Data>(&self, other: &Rdd<(K, W)>, partitions: usize) -> Rdd<(K, (Vec<V>, Vec<W>))> {
        let partitioner = HashPartitioner::new(partitions.max(1));
        let a = self.partition_by_with(partitioner);
        let b = other.partition_by_with(partitioner);
        let node = CoGroupedRdd::new(self.ctx.new_rdd_id(), a.node, b.node, Partitioner::<K>::desc(&partitioner));
        Rdd::from_node(&self.ctx, Arc::new(node))
    }

    /// Inner join: every `(k, (v, w))`.
    pub fn join<W: Data>(&self, other: &Rdd<(K, W)>, partitions: usize) -> Rdd<(K, (V, W))> {
        self.cogroup(other, partitions).flat_map_values(|(vs, ws): (Vec<V>, Vec<W>)| cross(vs, ws))
    }

    /// Every left record, with each matching right value or `None`.
    pub fn left_outer_join<W: Data>(&self, other: &Rdd<(K, W)>, partitions: usize) -> Rdd<(K, (V, Option<W>))> {
        self.cogroup(other, partitions).flat_map_values(|(vs, ws): (Vec<V>, Vec<W>)| cross(vs, or_none(ws)))
    }

    /// Every right record, with each matching left value or `None`.
    pub fn right_outer_join<W: Data>(&self, other: &Rdd<(K, W)>, partitions: usize) -> Rdd<(K, (Option<V>, W))> {
        self.cogroup(other, partitions).flat_map_values(|(vs, ws): (Vec<V>, Vec<W>)| cross(or_none(vs), ws))
    }

    /// Records from either side, paired where keys match, `None` where they do not.
    pub fn full_outer_join<W: Data>(&self, other: &Rdd<(K, W)>, partitions: usize) -> Rdd<(K, (Option<V>, Option<W>))> {
        self.cogroup(other, partitions).flat_map_values(|(vs, ws): (Vec<V>, Vec<W>)| cross(or_none(vs), or_none(ws)))
    }

    /// Records whose key does not occur in `other`.
    pub fn subtract_by_key<W: Data>(&self, other: &Rdd<(K, W)>, partitions: usize) -> Rdd<(K, V)> {
        self.cogroup(other, partitions)
            .flat_map_values(|(vs, ws): (Vec<V>, Vec<W>)| if ws.is_empty() { vs } else { Vec::new() })
    }

    /// Number of records per key.
    pub fn count_by_key(&self) -> Result<HashMap<K, u64>> {
        self.map_values(|_| 1u64).count_by_key_sum()
    }
}

impl<K: Key> Rdd<(K, u64)> {
    pub(crate) fn count_by_key_sum(&self) -> Result<HashMap<K, u64>> {
        let n = self.num_partitions().max(1);
        Ok(self.reduce_by_key(|a, b| a + b, n).collect()?.into_iter().collect())
    }
}

impl<K: Key + Ord, V: Data> Rdd<(K, V)> {
    /// Sorts by key through a range-partitioned shuffle. Bounds come from a
    /// sampling job (Spark's `RangePartitioner`), so partitions hold similar
    /// numbers of records; there may be fewer than `partitions` of them.
    pub fn sort_by_key(&self, ascending: bool, partitions: usize) -> Result<Rdd<(K, V)>> {
        let partitions = partitions.max(1);
        let bounds = if partitions <= 1 || self.num_partitions() == 0 {
            Vec::new()
        } else {
            let sample_size = (20.0 * partitions as f64).min(1e6);
            let per_partition = (3.0 * sample_size / self.num_partitions() as f64).ceil() as usize;
            let sketches = self.ctx.run_job(
                self,
                (0..self.num_partitions()).collect(),
                per_partition,
                |per: &usize, ctx: &TaskContext, it: BoxIter<(K, V)>| {
                    // Reservoir sampling of keys, seeded by partition.
                    let mut rng = partition_rng(0x005a_3b1e, ctx.partition_id());
                    let mut sample: Vec<K> = Vec::with_capacity(*per);
                    let mut seen = 0u64;
                    for (k, _) in it {
                        seen += 1;
                        if sample.len() < *per {
                            sample.push(k);
                        } else {
                            let j = rng.random_range(0..seen);
                            if (j as usize) < *per {
                                sample[j as usize] = k;
                            }
                        }
                    }
                    Ok((seen, sample))
                },
            )?;
            let mut candidates = Vec::new();
            for (seen, sample) in sketches {
                if sample.is_empty() {
                    continue;
                }
                let weight = seen as f64 / sample.len() as f64;
                candidates.extend(sample.into_iter().map(|k| (k, weight)));
            }
            determine_bounds(candidates, partitions)
        };
        let partitioner = RangePartitioner::new(bounds, ascending);
        let dep = self.plain_shuffle(&partitioner);
        let node = SortedShuffledRdd::<K, V>::new(self.ctx.new_rdd_id(), dep, partitioner.desc(), ascending);
        Ok(Rdd::from_node(&self.ctx, Arc::new(node)))
    }
}

#[cfg(test)]
mod tests {
    use super::{cross, or_none};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CLONES: AtomicUsize = AtomicUsize::new(0);

    /// A value that counts its clones.
    #[derive(Debug, PartialEq)]
    struct Counted(&'static str);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            CLONES.fetch_add(1, Ordering::Relaxed);
            Counted(self.0)
        }
    }

    fn cross_counting(vs: &[&'static str], ws: &[&'static str]) -> (Vec<(&'static str, &'static str)>, usize) {
        let before = CLONES.load(Ordering::Relaxed);
        let vs = vs.iter().map(|&s| Counted(s)).collect();
        let ws = ws.iter().map(|&s| Counted(s)).collect();
        let pairs = cross(vs, ws).into_iter().map(|(v, w)| (v.0, w.0)).collect();
        (pairs, CLONES.load(Ordering::Relaxed) - before)
    }

    #[test]
    fn pairs_come_in_sparks_order_with_each_last_use_moved() {
        let (pairs, clones) = cross_counting(&["a", "b"], &["x", "y", "z"]);
        assert_eq!(pairs, vec![("a", "x"), ("a", "y"), ("a", "z"), ("b", "x"), ("b", "y"), ("b", "z")]);
        // Each value is cloned once per use but its last: a and b have 3
        // uses each, x, y and z 2 each.
        assert_eq!(clones, 2 * 2 + 3);
        assert_eq!(cross_counting(&["a"], &["x"]), (vec![("a", "x")], 0));
        assert_eq!(cross_counting(&["a", "b", "c"], &["x"]), (vec![("a", "x"), ("b", "x"), ("c", "x")], 2));
        assert_eq!(cross_counting(&[], &["x"]).0, vec![]);
        assert_eq!(cross_counting(&["a"], &[]).0, vec![]);
    }

    #[test]
    fn an_empty_outer_side_pairs_with_none() {
        assert_eq!(cross(vec![1, 2], or_none(Vec::<char>::new())), vec![(1, None), (2, None)]);
        assert_eq!(cross(or_none(Vec::<u8>::new()), vec!['x']), vec![(None, 'x')]);
        assert_eq!(cross(or_none(vec![1]), or_none(vec!['x', 'y'])), vec![(Some(1), Some('x')), (Some(1), Some('y'))]);
    }
}
