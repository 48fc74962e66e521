//! The reduce side of a shuffle: RDDs whose partitions are read from map
//! outputs. [`ShuffledRdd`] yields records as written; [`SortedShuffledRdd`]
//! sorts them by key (`sort_by_key`); [`AggregatedShuffledRdd`] combines
//! values per key (`reduce_by_key` and friends), spilling under memory
//! pressure. All three read through [`read_shuffle`], which turns a failed
//! or corrupt block into a structured `FetchFailed`.

use super::{any_rdd, BoxIter, Data, Dependency, Key, Rdd, RddBase};
use crate::codec::{encode_node, AnyNode, Encode, EncodedNode};
use crate::metrics::TaskMetrics;
use crate::partitioner::PartitionerDesc;
use crate::shuffle_dep::ShuffleDependencyBase;
use crate::task::TaskContext;
use ember_common::{Error, RddId, Result, ShuffleId, TaskFailure};
use ember_shuffle::{Aggregator, SegmentReader};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use std::sync::Arc;

/// Streams the `(K, V)` records of reduce partition `reduce_id` from every
/// map output, fetching one map output's block at a time.
pub fn read_shuffle<K, V>(ctx: &TaskContext, shuffle_id: ShuffleId, reduce_id: usize) -> Result<BoxIter<(K, V)>>
where
    K: DeserializeOwned + 'static,
    V: DeserializeOwned + 'static,
{
    let input = ctx.shuffle_input(shuffle_id.0)?;
    let maps: Vec<(usize, crate::task::MapStatus)> = input
        .maps
        .iter()
        .enumerate()
        .filter(|(_, m)| m.partition_lengths.get(reduce_id).copied().unwrap_or(0) > 0)
        .map(|(i, m)| (i, m.clone()))
        .collect();
    let ctx_fetch = ctx.clone();
    let sid = shuffle_id.0;
    let blocks = maps.into_iter().map_while(move |(map_index, status)| {
        match ctx_fetch.env().fetch_segment(&status, sid, map_index, reduce_id) {
            Ok(bytes) => {
                TaskMetrics::add(&ctx_fetch.metrics().shuffle_bytes_read, bytes.len() as u64);
                let ctx_rec = ctx_fetch.clone();
                let records = SegmentReader::<K, V>::new(bytes).map_while(move |r| match r {
                    Ok(kv) => Some(kv),
                    Err(e) => {
                        ctx_rec.fail(TaskFailure::FetchFailed {
                            shuffle_id: sid,
                            map_index,
                            reduce_id,
                            message: e.to_string(),
                        });
                        None
                    }
                });
                Some(records)
            }
            Err(failure) => {
                ctx_fetch.fail(failure);
                None
            }
        }
    });
    Ok(Box::new(CountRecordsRead { iter: ctx.interruptible(blocks.flatten()), ctx: ctx.clone(), n: 0 }))
}

/// Counts the records a reduce task reads in a plain field and publishes the
/// count once, when the iterator is dropped. An atomic add per record is a
/// locked instruction that stops the CPU from overlapping the cache misses of
/// consecutive records in the aggregation behind it: it made groupByKey's
/// reduce side about 3x slower.
struct CountRecordsRead<I> {
    iter: I,
    ctx: TaskContext,
    n: u64,
}

impl<I: Iterator> Iterator for CountRecordsRead<I> {
    type Item = I::Item;
    #[inline]
    fn next(&mut self) -> Option<I::Item> {
        let item = self.iter.next();
        self.n += item.is_some() as u64;
        item
    }
}

impl<I> Drop for CountRecordsRead<I> {
    fn drop(&mut self) {
        TaskMetrics::add(&self.ctx.metrics().shuffle_records_read, self.n);
    }
}

/// Reports an error from a reduce-side helper inside an iterator pipeline.
fn fail_on_error<T>(ctx: &TaskContext, iter: impl Iterator<Item = ember_shuffle::Result<T>> + 'static) -> BoxIter<T>
where
    T: 'static,
{
    let ctx = ctx.clone();
    Box::new(iter.map_while(move |r| match r {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.fail(TaskFailure::Error { message: format!("shuffle read: {e}") });
            None
        }
    }))
}

macro_rules! shuffled_base {
    ($name:literal) => {
        fn id(&self) -> RddId {
            self.id
        }
        fn name(&self) -> &str {
            $name
        }
        fn num_partitions(&self) -> usize {
            self.num_partitions
        }
        fn dependencies(&self) -> Vec<Dependency> {
            self.dep.iter().map(|d| Dependency::Shuffle(d.clone())).collect()
        }
        fn partitioner(&self) -> Option<PartitionerDesc> {
            Some(self.partitioner.clone())
        }
        fn encode_self(&self) -> Result<EncodedNode> {
            encode_node(self)
        }
    };
}

/// Records of a shuffle, as written (no combining, no ordering).
pub struct ShuffledRdd<K, V> {
    id: RddId,
    shuffle_id: ShuffleId,
    num_partitions: usize,
    partitioner: PartitionerDesc,
    /// Present on the driver only; executors never walk dependencies.
    dep: Option<Arc<dyn ShuffleDependencyBase>>,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K: Key, V: Data> ShuffledRdd<K, V> {
    pub fn new(id: RddId, dep: Arc<dyn ShuffleDependencyBase>, partitioner: PartitionerDesc) -> Self {
        ShuffledRdd {
            id,
            shuffle_id: dep.shuffle_id(),
            num_partitions: dep.num_reduce_partitions(),
            partitioner,
            dep: Some(dep),
            _t: PhantomData,
        }
    }
}

impl<K: Key, V: Data> Encode for ShuffledRdd<K, V> {
    type Payload = (RddId, ShuffleId, usize, PartitionerDesc);
    fn payload(&self) -> Self::Payload {
        (self.id, self.shuffle_id, self.num_partitions, self.partitioner.clone())
    }
    fn decode((id, shuffle_id, num_partitions, partitioner): Self::Payload, _: &[AnyNode]) -> Result<Self> {
        Ok(ShuffledRdd { id, shuffle_id, num_partitions, partitioner, dep: None, _t: PhantomData })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<(K, V)>(Arc::new(self))
    }
}

impl<K: Key, V: Data> RddBase for ShuffledRdd<K, V> {
    shuffled_base!("shuffled");
}

impl<K: Key, V: Data> Rdd<(K, V)> for ShuffledRdd<K, V> {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<(K, V)>> {
        read_shuffle(ctx, self.shuffle_id, partition)
    }
}

/// Records of a range-partitioned shuffle, sorted by key within the partition.
pub struct SortedShuffledRdd<K, V> {
    id: RddId,
    shuffle_id: ShuffleId,
    num_partitions: usize,
    partitioner: PartitionerDesc,
    ascending: bool,
    dep: Option<Arc<dyn ShuffleDependencyBase>>,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K: Key + Ord, V: Data> SortedShuffledRdd<K, V> {
    pub fn new(id: RddId, dep: Arc<dyn ShuffleDependencyBase>, partitioner: PartitionerDesc, ascending: bool) -> Self {
        SortedShuffledRdd {
            id,
            shuffle_id: dep.shuffle_id(),
            num_partitions: dep.num_reduce_partitions(),
            partitioner,
            ascending,
            dep: Some(dep),
            _t: PhantomData,
        }
    }
}

impl<K: Key + Ord, V: Data> Encode for SortedShuffledRdd<K, V> {
    type Payload = (RddId, ShuffleId, usize, PartitionerDesc, bool);
    fn payload(&self) -> Self::Payload {
        (self.id, self.shuffle_id, self.num_partitions, self.partitioner.clone(), self.ascending)
    }
    fn decode((id, shuffle_id, num_partitions, partitioner, ascending): Self::Payload, _: &[AnyNode]) -> Result<Self> {
        Ok(SortedShuffledRdd { id, shuffle_id, num_partitions, partitioner, ascending, dep: None, _t: PhantomData })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<(K, V)>(Arc::new(self))
    }
}

impl<K: Key + Ord, V: Data> RddBase for SortedShuffledRdd<K, V> {
    shuffled_base!("sortByKey");
}

impl<K: Key + Ord, V: Data> Rdd<(K, V)> for SortedShuffledRdd<K, V> {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<(K, V)>> {
        let records = read_shuffle::<K, V>(ctx, self.shuffle_id, partition)?;
        let env = ctx.env();
        let cfg = env.write_config();
        let mut mem = env.memory_pool().reservation();
        let sorted = ember_shuffle::sort_by_key(ctx.checked(records), self.ascending, &mut mem, &cfg.spill_dir, &cfg)
            .map_err(|e| Error::Shuffle(e.to_string()))?;
        Ok(fail_on_error(ctx, KeepAlive { iter: sorted, _mem: mem }))
    }
}

/// Keeps a memory reservation alive as long as the iterator that uses it.
struct KeepAlive<I> {
    iter: I,
    _mem: ember_shuffle::MemoryReservation,
}

impl<I: Iterator> Iterator for KeepAlive<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        self.iter.next()
    }
}

/// Merges combiners produced map-side: `C` values merged with `merge_combiners`.
struct MergeCombiners<A, V> {
    agg: A,
    _v: PhantomData<fn(V)>,
}

impl<K, V, C, A: Aggregator<K, V, C>> Aggregator<K, C, C> for MergeCombiners<A, V> {
    fn create_combiner(&self, c: C) -> C {
        c
    }
    fn merge_value(&self, a: C, b: C) -> C {
        self.agg.merge_combiners(a, b)
    }
    fn merge_combiners(&self, a: C, b: C) -> C {
        self.agg.merge_combiners(a, b)
    }
}

type TypeMarker<K, V, C> = PhantomData<fn() -> (K, V, C)>;

/// Values combined per key with aggregator `A` (`reduce_by_key` and friends).
pub struct AggregatedShuffledRdd<K, V, C, A> {
    id: RddId,
    shuffle_id: ShuffleId,
    num_partitions: usize,
    partitioner: PartitionerDesc,
    map_side_combine: bool,
    agg: A,
    dep: Option<Arc<dyn ShuffleDependencyBase>>,
    _t: TypeMarker<K, V, C>,
}

impl<K, V, C, A> AggregatedShuffledRdd<K, V, C, A>
where
    K: Key,
    V: Data,
    C: Data,
    A: Aggregator<K, V, C> + Serialize + DeserializeOwned + Clone + 'static,
{
    pub fn new(
        id: RddId,
        dep: Arc<dyn ShuffleDependencyBase>,
        partitioner: PartitionerDesc,
        agg: A,
        map_side_combine: bool,
    ) -> Self {
        AggregatedShuffledRdd {
            id,
            shuffle_id: dep.shuffle_id(),
            num_partitions: dep.num_reduce_partitions(),
            partitioner,
            map_side_combine,
            agg,
            dep: Some(dep),
            _t: PhantomData,
        }
    }
}

impl<K, V, C, A> Encode for AggregatedShuffledRdd<K, V, C, A>
where
    K: Key,
    V: Data,
    C: Data,
    A: Aggregator<K, V, C> + Serialize + DeserializeOwned + Clone + 'static,
{
    type Payload = (RddId, ShuffleId, usize, PartitionerDesc, bool, A);
    fn payload(&self) -> Self::Payload {
        (
            self.id,
            self.shuffle_id,
            self.num_partitions,
            self.partitioner.clone(),
            self.map_side_combine,
            self.agg.clone(),
        )
    }
    fn decode(
        (id, shuffle_id, num_partitions, partitioner, map_side_combine, agg): Self::Payload,
        _: &[AnyNode],
    ) -> Result<Self> {
        Ok(AggregatedShuffledRdd {
            id,
            shuffle_id,
            num_partitions,
            partitioner,
            map_side_combine,
            agg,
            dep: None,
            _t: PhantomData,
        })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<(K, C)>(Arc::new(self))
    }
}

impl<K, V, C, A> RddBase for AggregatedShuffledRdd<K, V, C, A>
where
    K: Key,
    V: Data,
    C: Data,
    A: Aggregator<K, V, C> + Serialize + DeserializeOwned + Clone + 'static,
{
    shuffled_base!("combineByKey");
}

impl<K, V, C, A> Rdd<(K, C)> for AggregatedShuffledRdd<K, V, C, A>
where
    K: Key,
    V: Data,
    C: Data,
    A: Aggregator<K, V, C> + Serialize + DeserializeOwned + Clone + 'static,
{
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<(K, C)>> {
        let env = ctx.env();
        let cfg = env.write_config();
        let mut mem = env.memory_pool().reservation();
        let spill_dir = cfg.spill_dir.clone();
        if self.map_side_combine {
            let records = read_shuffle::<K, C>(ctx, self.shuffle_id, partition)?;
            let merger = MergeCombiners::<A, V> { agg: self.agg.clone(), _v: PhantomData };
            let out = ember_shuffle::combine_by_key(ctx.checked(records), merger, &mut mem, &spill_dir, &cfg)
                .map_err(|e| Error::Shuffle(e.to_string()))?;
            Ok(fail_on_error(ctx, KeepAlive { iter: out, _mem: mem }))
        } else {
            let records = read_shuffle::<K, V>(ctx, self.shuffle_id, partition)?;
            let out = ember_shuffle::combine_by_key(ctx.checked(records), self.agg.clone(), &mut mem, &spill_dir, &cfg)
                .map_err(|e| Error::Shuffle(e.to_string()))?;
            Ok(fail_on_error(ctx, KeepAlive { iter: out, _mem: mem }))
        }
    }
}
