//! The reduce side of a shuffle: RDDs whose partitions are read from map
//! outputs. [`ShuffledRdd`] yields records as written; [`SortedShuffledRdd`]
//! sorts them by key (`sort_by_key`); [`AggregatedShuffledRdd`] combines
//! values per key (`reduce_by_key` and friends), spilling under memory
//! pressure. All three read through [`read_shuffle`], which turns a failed
//! or corrupt block into a structured `FetchFailed` — except a sort of
//! byte-like keys and values, which takes the segments themselves and keeps
//! records encoded until it hands them out (`ember_shuffle::sort_segments_by_key`),
//! with the same `FetchFailed` for a bad segment.

use super::{any_rdd, boxed, BoxIter, Data, Dependency, Key, PartitionIter, Rdd, RddBase};
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
    let segments = shuffle_segments(ctx, shuffle_id, reduce_id)?;
    Ok(Box::new(ShuffleRecords::<K, V, _> {
        segments,
        current: None,
        ctx: ctx.clone(),
        shuffle_id: shuffle_id.0,
        reduce_id,
        done: false,
        n: 0,
    }))
}

/// [`read_shuffle`]'s stream: each segment's records in turn, decoded
/// straight into the consumer's batch. One layer instead of a chain of
/// adapters (flatten, error cut-off, stop check, count), whose per-record
/// calls cost a reduce side as much as decoding the records did. The stop
/// flags are read once per batch (or record). The count is kept in a plain
/// field and published once, on drop: an atomic add per record is a locked
/// instruction that stops the CPU from overlapping the cache misses of
/// consecutive records in the aggregation behind it, and made groupByKey's
/// reduce side about 3x slower.
struct ShuffleRecords<K, V, S> {
    segments: S,
    /// The segment being read, with its map index.
    current: Option<(usize, SegmentReader<K, V>)>,
    ctx: TaskContext,
    shuffle_id: u64,
    reduce_id: usize,
    /// Set once the segments ran out, a segment was bad or the task stopped.
    done: bool,
    n: u64,
}

impl<K, V, S> ShuffleRecords<K, V, S>
where
    K: DeserializeOwned + 'static,
    V: DeserializeOwned + 'static,
    S: Iterator<Item = (usize, Vec<u8>)>,
{
    /// The reader of the segment to read from next, opening the next
    /// segment when the current one is used up; `None` at the end (or when
    /// the task stopped).
    #[inline]
    fn reader(&mut self) -> Option<&mut (usize, SegmentReader<K, V>)> {
        if self.done || self.ctx.should_stop() {
            self.done = true;
            return None;
        }
        if self.current.is_none() {
            match self.segments.next() {
                Some((map_index, bytes)) => self.current = Some((map_index, SegmentReader::new(bytes))),
                None => {
                    self.done = true;
                    return None;
                }
            }
        }
        self.current.as_mut()
    }

    /// A segment failed to decode: its map output must be recomputed.
    #[cold]
    fn fail(&mut self, map_index: usize, e: &ember_shuffle::Error) {
        self.ctx.fail(fetch_failed(self.shuffle_id, map_index, self.reduce_id, e));
        self.current = None;
        self.done = true;
    }
}

impl<K, V, S> Iterator for ShuffleRecords<K, V, S>
where
    K: DeserializeOwned + 'static,
    V: DeserializeOwned + 'static,
    S: Iterator<Item = (usize, Vec<u8>)>,
{
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        loop {
            let (map_index, reader) = self.reader()?;
            match reader.next() {
                Some(Ok(kv)) => {
                    self.n += 1;
                    return Some(kv);
                }
                Some(Err(e)) => {
                    let map_index = *map_index;
                    self.fail(map_index, &e);
                    return None;
                }
                None => self.current = None,
            }
        }
    }
}

impl<K, V, S> PartitionIter for ShuffleRecords<K, V, S>
where
    K: DeserializeOwned + 'static,
    V: DeserializeOwned + 'static,
    S: Iterator<Item = (usize, Vec<u8>)>,
{
    fn next_batch(&mut self, out: &mut Vec<(K, V)>, max: usize) {
        let start = out.len();
        let end = start + max;
        while out.len() < end {
            let Some((map_index, reader)) = self.reader() else { break };
            let mut failed = None;
            for rec in reader.by_ref() {
                match rec {
                    Ok(kv) => out.push(kv),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
                if out.len() == end {
                    break;
                }
            }
            let map_index = *map_index;
            match failed {
                Some(e) => self.fail(map_index, &e),
                // The segment is used up unless the batch filled first.
                None if out.len() < end => self.current = None,
                None => {}
            }
        }
        self.n += (out.len() - start) as u64;
    }
}

impl<K, V, S> Drop for ShuffleRecords<K, V, S> {
    fn drop(&mut self) {
        TaskMetrics::add(&self.ctx.metrics().shuffle_records_read, self.n);
    }
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
    use parking_lot::Mutex;

    /// Three map outputs' segments for reduce partition 0: map `m` holds
    /// `(m * 1000 + i, i)` for `i` in 0..100, in 1 KiB lz4 blocks.
    fn segments() -> Vec<Vec<u8>> {
        (0..3u32)
            .map(|m| {
                let mut out = Vec::new();
                let mut w = BlockWriter::new(1 << 10, true);
                for i in 0..100u32 {
                    w.write_record(&(m * 1000 + i), &i, &mut out).unwrap();
                }
                w.finish_segment(&mut out).unwrap();
                out
            })
            .collect()
    }

    /// A reduce task's context over `segments`, recorded with `lengths`.
    fn context_over(segments: Vec<Vec<u8>>, lengths: [u64; 3]) -> (TaskContext, Arc<Mutex<Vec<String>>>) {
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
        (ctx, log)
    }

    /// Reads reduce partition 0 of three map outputs whose recorded lengths
    /// are `lengths`; returns the records and the fetch log.
    fn read_with_lengths(lengths: [u64; 3]) -> (Vec<(u32, u32)>, Vec<String>) {
        let (ctx, log) = context_over(segments(), lengths);
        let records: Vec<(u32, u32)> = read_shuffle(&ctx, ShuffleId(7), 0).unwrap().collect();
        assert!(!ctx.should_stop());
        let log = log.lock().clone();
        (records, log)
    }

    /// Every batch `read_shuffle` hands out, pulled `max` at a time.
    fn batches(ctx: &TaskContext, max: usize) -> Vec<Vec<(u32, u32)>> {
        let mut it = read_shuffle::<u32, u32>(ctx, ShuffleId(7), 0).unwrap();
        let mut out = Vec::new();
        loop {
            let mut batch = Vec::new();
            it.next_batch(&mut batch, max);
            if batch.is_empty() {
                return out;
            }
            assert!(batch.len() <= max);
            out.push(batch);
        }
    }

    fn records_read(ctx: &TaskContext) -> u64 {
        ctx.metrics().shuffle_records_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn batches_run_across_segments_and_every_record_is_counted() {
        let (ctx, _) = context_over(segments(), [10, 10, 10]);
        let got = batches(&ctx, 7);
        // Full batches of 7 across the segment boundaries (100 = 14 * 7 + 2).
        assert_eq!(got.iter().map(Vec::len).filter(|&n| n < 7).count(), 1, "only the last batch is short");
        let all: Vec<(u32, u32)> = got.concat();
        let want: Vec<(u32, u32)> = (0..3u32).flat_map(|m| (0..100u32).map(move |i| (m * 1000 + i, i))).collect();
        assert_eq!(all, want);
        assert_eq!(records_read(&ctx), 300, "published when the stream is dropped");
        assert!(ctx.take_failure().is_none());
    }

    /// Map output 1's segment with one byte of its first block's payload altered.
    fn with_bad_second_segment() -> Vec<Vec<u8>> {
        let mut segs = segments();
        let mid = segs[1].len() / 2;
        segs[1][mid] ^= 0x5a;
        segs
    }

    fn assert_fetch_failed_for_map_1(ctx: &TaskContext) {
        match ctx.take_failure() {
            Some(TaskFailure::FetchFailed { shuffle_id: 7, map_index: 1, reduce_id: 0, .. }) => {}
            other => panic!("expected a fetch failure of map 1, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_segment_ends_the_batches_with_a_fetch_failure_of_its_map() {
        let (ctx, _) = context_over(with_bad_second_segment(), [10, 10, 10]);
        let all: Vec<(u32, u32)> = batches(&ctx, 16).concat();
        assert!(all.len() < 200, "nothing after the damaged block");
        assert_eq!(all[..100], (0..100u32).map(|i| (i, i)).collect::<Vec<_>>()[..], "map 0 in full");
        assert!(all[100..].iter().all(|&(k, _)| (1000..1100).contains(&k)), "no record of map 2");
        assert!(ctx.should_stop());
        assert_fetch_failed_for_map_1(&ctx);
    }

    #[test]
    fn a_bad_segment_ends_the_records_with_a_fetch_failure_of_its_map() {
        let (ctx, _) = context_over(with_bad_second_segment(), [10, 10, 10]);
        let all: Vec<(u32, u32)> = read_shuffle(&ctx, ShuffleId(7), 0).unwrap().collect();
        assert!((100..200).contains(&all.len()));
        assert!(all.iter().all(|&(k, _)| k < 1100));
        assert_fetch_failed_for_map_1(&ctx);
    }

    #[test]
    fn a_killed_task_gets_no_further_batch() {
        let (ctx, _) = context_over(segments(), [10, 10, 10]);
        let mut it = read_shuffle::<u32, u32>(&ctx, ShuffleId(7), 0).unwrap();
        let mut batch = Vec::new();
        it.next_batch(&mut batch, 10);
        assert_eq!(batch.len(), 10);
        ctx.kill("test");
        batch.clear();
        it.next_batch(&mut batch, 10);
        assert!(batch.is_empty());
        assert_eq!(it.next(), None);
        drop(it);
        assert_eq!(records_read(&ctx), 10);
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
