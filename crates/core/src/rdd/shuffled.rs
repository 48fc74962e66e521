//! The reduce side of a shuffle: RDDs whose partitions are read from map
//! outputs. [`ShuffledRdd`] yields records as written; [`SortedShuffledRdd`]
//! sorts them by key (`sort_by_key`); [`AggregatedShuffledRdd`] combines
//! values per key (`reduce_by_key` and friends), spilling under memory
//! pressure. All three read through [`read_shuffle`], which turns a failed
//! or corrupt block into a structured `FetchFailed` — except a sort of
//! byte-like keys and values, which takes the segments themselves and keeps
//! records encoded until it hands them out (`ember_shuffle::sort_segments_by_key`),
//! with the same `FetchFailed` for a bad segment.

use super::{any_rdd, boxed, BoxIter, Data, Dependency, Key, Rdd, RddBase};
use crate::codec::{encode_node, AnyNode, Encode, EncodedNode};
use crate::metrics::TaskMetrics;
use crate::partitioner::PartitionerDesc;
use crate::shuffle_dep::ShuffleDependencyBase;
use crate::task::{SegmentFetch, TaskContext};
use ember_common::{Error, RddId, Result, ShuffleId, TaskFailure};
use ember_shuffle::{Aggregator, SegmentReader};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;

/// Streams the `(K, V)` records of reduce partition `reduce_id` from every
/// map output, fetching one map output's block at a time.
pub fn read_shuffle<K, V>(ctx: &TaskContext, shuffle_id: ShuffleId, reduce_id: usize) -> Result<BoxIter<(K, V)>>
where
    K: DeserializeOwned + 'static,
    V: DeserializeOwned + 'static,
{
    let sid = shuffle_id.0;
    let ctx_rec = ctx.clone();
    let blocks = shuffle_segments(ctx, shuffle_id, reduce_id)?.map(move |(map_index, bytes)| {
        let ctx_rec = ctx_rec.clone();
        SegmentReader::<K, V>::new(bytes).map_while(move |r| match r {
            Ok(kv) => Some(kv),
            Err(e) => {
                ctx_rec.fail(fetch_failed(sid, map_index, reduce_id, &e));
                None
            }
        })
    });
    Ok(boxed(CountRecordsRead { iter: ctx.interruptible(blocks.flatten()), ctx: ctx.clone(), n: 0 }))
}

/// The segments of reduce partition `reduce_id`, `(map index, bytes)` in map
/// order, remote ones fetched ahead ([`Prefetch`]); counted as bytes read.
/// A failed fetch fails the task and ends the stream.
fn shuffle_segments(
    ctx: &TaskContext,
    shuffle_id: ShuffleId,
    reduce_id: usize,
) -> Result<impl Iterator<Item = (usize, Vec<u8>)>> {
    let input = ctx.shuffle_input(shuffle_id.0)?;
    let maps: Vec<(usize, crate::task::MapStatus)> = input
        .maps
        .iter()
        .enumerate()
        .filter(|(_, m)| m.partition_lengths.get(reduce_id).copied().unwrap_or(0) > 0)
        .map(|(i, m)| (i, m.clone()))
        .collect();
    let segments = Prefetch {
        ctx: ctx.clone(),
        shuffle_id: shuffle_id.0,
        reduce_id,
        rest: maps.into_iter(),
        pending: VecDeque::new(),
        in_flight: 0,
    };
    let ctx = ctx.clone();
    Ok(segments.inspect(move |(_, bytes)| TaskMetrics::add(&ctx.metrics().shuffle_bytes_read, bytes.len() as u64)))
}

/// A corrupt or undecodable segment: the map output must be recomputed.
fn fetch_failed(shuffle_id: u64, map_index: usize, reduce_id: usize, e: &ember_shuffle::Error) -> TaskFailure {
    TaskFailure::FetchFailed { shuffle_id, map_index, reduce_id, message: e.to_string() }
}

/// Bytes of remote segments a reduce task keeps requested ahead of the one it
/// is reading (Spark's `spark.reducer.maxSizeInFlight` default, 48 MiB).
const MAX_BYTES_IN_FLIGHT: u64 = 48 << 20;

/// A reduce task's segments in map order, with remote ones requested ahead:
/// while one segment is decoded, the next ones (up to
/// [`MAX_BYTES_IN_FLIGHT`]) are already on their way from other executors,
/// instead of one network round trip per segment. Local segments are read
/// when reached. A failed fetch fails the task and ends the stream.
struct Prefetch {
    ctx: TaskContext,
    shuffle_id: u64,
    reduce_id: usize,
    rest: std::vec::IntoIter<(usize, crate::task::MapStatus)>,
    pending: VecDeque<(usize, u64, SegmentFetch)>,
    in_flight: u64,
}

impl Iterator for Prefetch {
    type Item = (usize, Vec<u8>);

    fn next(&mut self) -> Option<(usize, Vec<u8>)> {
        while self.pending.is_empty() || self.in_flight < MAX_BYTES_IN_FLIGHT {
            let Some((map_index, status)) = self.rest.next() else { break };
            let len = status.partition_lengths.get(self.reduce_id).copied().unwrap_or(0);
            let fetch = self.ctx.env().start_fetch(&status, self.shuffle_id, map_index, self.reduce_id);
            self.in_flight += len;
            self.pending.push_back((map_index, len, fetch));
        }
        let (map_index, len, fetch) = self.pending.pop_front()?;
        self.in_flight -= len;
        match fetch(self.ctx.env().as_ref()) {
            Ok(bytes) => Some((map_index, bytes)),
            Err(failure) => {
                self.ctx.fail(failure);
                self.pending.clear();
                self.rest = Vec::new().into_iter();
                None
            }
        }
    }
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

/// Adds a reduce-side aggregation's or sort's spills to the task's metrics.
pub fn note_spilled(ctx: &TaskContext, bytes: u64) {
    TaskMetrics::add(&ctx.metrics().bytes_spilled, bytes);
}

/// Reports an error from a reduce-side helper inside an iterator pipeline.
pub(super) fn fail_on_error<T>(
    ctx: &TaskContext,
    iter: impl Iterator<Item = ember_shuffle::Result<T>> + 'static,
) -> BoxIter<T>
where
    T: 'static,
{
    let ctx = ctx.clone();
    boxed(iter.map_while(move |r| match r {
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

    /// Byte-like keys and values (a terasort's records): sorted still
    /// encoded, straight from the segments ([`ember_shuffle::sort_segments_by_key`]).
    fn compute_encoded(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<(K, V)>> {
        let segments = ctx.interruptible(shuffle_segments(ctx, self.shuffle_id, partition)?);
        let env = ctx.env();
        let cfg = env.write_config();
        let mut mem = env.memory_pool().reservation();
        let sid = self.shuffle_id.0;
        let mut on_bad =
            |map_index: usize, e: &ember_shuffle::Error| ctx.fail(fetch_failed(sid, map_index, partition, e));
        let (sorted, records) = ember_shuffle::sort_segments_by_key::<K, V, _>(
            segments,
            &mut on_bad,
            self.ascending,
            &mut mem,
            &cfg.spill_dir,
            &cfg,
        )
        .map_err(|e| Error::Shuffle(e.to_string()))?;
        TaskMetrics::add(&ctx.metrics().shuffle_records_read, records);
        if ctx.should_stop() {
            // A fetch failed or the task was killed: the input is partial.
            return Err(Error::Shuffle("shuffle read: task stopped".into()));
        }
        note_spilled(ctx, sorted.bytes_spilled());
        Ok(fail_on_error(ctx, KeepAlive { iter: sorted, _mem: mem }))
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
        if ember_shuffle::sorts_segments::<K, V>() {
            return self.compute_encoded(partition, ctx);
        }
        let records = read_shuffle::<K, V>(ctx, self.shuffle_id, partition)?;
        let env = ctx.env();
        let cfg = env.write_config();
        let mut mem = env.memory_pool().reservation();
        let sorted =
            ember_shuffle::sort_by_key(ctx.checked_batches(records), self.ascending, &mut mem, &cfg.spill_dir, &cfg)
                .map_err(|e| Error::Shuffle(e.to_string()))?;
        note_spilled(ctx, sorted.bytes_spilled());
        Ok(fail_on_error(ctx, KeepAlive { iter: sorted, _mem: mem }))
    }
}

/// Keeps a memory reservation alive as long as the iterator that uses it.
pub(super) struct KeepAlive<I> {
    pub(super) iter: I,
    pub(super) _mem: ember_shuffle::MemoryReservation,
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
        let mut cfg = env.write_config();
        cfg.expected_keys = env.expected_keys(self.shuffle_id.0, true);
        let mut mem = env.memory_pool().reservation();
        let spill_dir = cfg.spill_dir.clone();
        let note_keys = |keys: Option<usize>| {
            if let Some(n) = keys {
                env.record_keys(self.shuffle_id.0, true, n);
            }
        };
        if self.map_side_combine {
            let records = read_shuffle::<K, C>(ctx, self.shuffle_id, partition)?;
            let merger = MergeCombiners::<A, V> { agg: self.agg.clone(), _v: PhantomData };
            let out = ember_shuffle::combine_by_key(ctx.checked_batches(records), merger, &mut mem, &spill_dir, &cfg)
                .map_err(|e| Error::Shuffle(e.to_string()))?;
            note_keys(out.keys());
            note_spilled(ctx, out.bytes_spilled());
            Ok(fail_on_error(ctx, KeepAlive { iter: out, _mem: mem }))
        } else {
            let records = read_shuffle::<K, V>(ctx, self.shuffle_id, partition)?;
            let out = ember_shuffle::combine_by_key(
                ctx.checked_batches(records),
                self.agg.clone(),
                &mut mem,
                &spill_dir,
                &cfg,
            )
            .map_err(|e| Error::Shuffle(e.to_string()))?;
            note_keys(out.keys());
            note_spilled(ctx, out.bytes_spilled());
            Ok(fail_on_error(ctx, KeepAlive { iter: out, _mem: mem }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{MapStatus, ShuffleInput, TaskIds};
    use crate::test_env::TestEnv;
    use ember_common::{ExecutorId, StageId, TaskId};
    use ember_shuffle::BlockWriter;

    /// Reads reduce partition 0 of three map outputs whose recorded lengths
    /// are `lengths`; returns the records and the fetch log.
    fn read_with_lengths(lengths: [u64; 3]) -> (Vec<(u32, u32)>, Vec<String>) {
        let segments: Vec<Vec<u8>> = (0..3u32)
            .map(|m| {
                let mut out = Vec::new();
                let mut w = BlockWriter::new(1 << 10, true);
                for i in 0..100u32 {
                    w.write_record(&(m * 1000 + i), &i, &mut out).unwrap();
                }
                w.finish_segment(&mut out).unwrap();
                out
            })
            .collect();
        let env = TestEnv { segments, ..TestEnv::new("e") };
        let log = env.log.clone();
        let maps = lengths
            .iter()
            .map(|&len| MapStatus {
                executor: ExecutorId("other".into()),
                address: String::new(),
                partition_lengths: vec![len],
            })
            .collect();
        let ids = TaskIds { task_id: TaskId(1), stage_id: StageId(1), stage_attempt: 0, partition: 0, attempt: 0 };
        let ctx =
            TaskContext::new(ids, Arc::new(env), Arc::new(vec![ShuffleInput { shuffle_id: 7, maps }]), Arc::default());
        let records: Vec<(u32, u32)> = read_shuffle(&ctx, ShuffleId(7), 0).unwrap().collect();
        assert!(!ctx.should_stop());
        let log = log.lock().clone();
        (records, log)
    }

    #[test]
    fn small_segments_are_all_requested_before_the_first_is_read() {
        let (records, log) = read_with_lengths([10, 10, 10]);
        assert_eq!(records.len(), 300);
        assert!(records.windows(2).all(|w| w[0].0 < w[1].0), "segments are read in map order");
        assert_eq!(log, ["start 0", "start 1", "start 2", "wait 0", "wait 1", "wait 2"]);
    }

    #[test]
    fn requests_stop_at_the_in_flight_limit_and_empty_segments_are_skipped() {
        let (records, log) = read_with_lengths([MAX_BYTES_IN_FLIGHT, 0, MAX_BYTES_IN_FLIGHT / 2]);
        assert_eq!(records.len(), 200);
        assert_eq!(log, ["start 0", "wait 0", "start 2", "wait 2"]);
    }
}
