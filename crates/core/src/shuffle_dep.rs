//! Shuffle dependencies and the map-side sinks that write them.
//!
//! A [`ShuffleDependencyBase`] is what the DAG scheduler cuts stages at: it
//! names the shuffle, its map-side RDD, its reduce partition count, and the
//! sink node that a shuffle-map task runs ([`ShuffleWriteSink`] for plain
//! records, [`CombiningShuffleWriteSink`] when values are combined map-side).

use crate::codec::{encode_node, parent, AnyNode, EncodableNode, Encode, EncodedNode, NodeKey};
use crate::metrics::TaskMetrics;
use crate::partitioner::Partitioner;
use crate::rdd::{Data, Key, Rdd, RddBase, RddNode};
use crate::task::{MapStatus, StageSink, TaskContext, TaskOutput};
use ember_common::{Error, Result, ShuffleId};
use ember_shuffle::{Aggregator, MapOutputInfo};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use std::sync::Arc;

/// The scheduler's view of a shuffle.
pub trait ShuffleDependencyBase: Send + Sync {
    fn shuffle_id(&self) -> ShuffleId;
    /// The map-side RDD whose partitions are written.
    fn rdd(&self) -> Arc<dyn RddBase>;
    fn num_reduce_partitions(&self) -> usize;
    /// The sink a shuffle-map task of this dependency runs.
    fn sink(&self) -> Arc<dyn EncodableNode>;
}

/// A shuffle of `(K, V)` records by partitioner `P`, without combining.
pub struct ShuffleWriteSink<K, V, P> {
    shuffle_id: ShuffleId,
    rdd: Arc<dyn Rdd<(K, V)>>,
    partitioner: P,
}

impl<K: Key, V: Data, P: Partitioner<K>> ShuffleWriteSink<K, V, P> {
    pub fn new(shuffle_id: ShuffleId, rdd: Arc<dyn Rdd<(K, V)>>, partitioner: P) -> Self {
        ShuffleWriteSink { shuffle_id, rdd, partitioner }
    }
}

/// A shuffle that combines values per key on the map side with aggregator `A`.
pub struct CombiningShuffleWriteSink<K, V, C, A, P> {
    shuffle_id: ShuffleId,
    rdd: Arc<dyn Rdd<(K, V)>>,
    partitioner: P,
    agg: A,
    _c: PhantomData<fn() -> C>,
}

impl<K, V, C, A, P> CombiningShuffleWriteSink<K, V, C, A, P>
where
    K: Key,
    V: Data,
    C: Data,
    A: Aggregator<K, V, C> + Serialize + DeserializeOwned + Clone + 'static,
    P: Partitioner<K>,
{
    pub fn new(shuffle_id: ShuffleId, rdd: Arc<dyn Rdd<(K, V)>>, partitioner: P, agg: A) -> Self {
        CombiningShuffleWriteSink { shuffle_id, rdd, partitioner, agg, _c: PhantomData }
    }
}

/// Publishes a map output: metrics, then the status the driver registers.
fn finish_map_task(ctx: &TaskContext, info: MapOutputInfo) -> Result<TaskOutput> {
    let m = ctx.metrics();
    TaskMetrics::add(&m.shuffle_records_written, info.records_written);
    TaskMetrics::add(&m.shuffle_bytes_written, info.bytes_written);
    TaskMetrics::add(&m.bytes_spilled, info.bytes_spilled);
    Ok(TaskOutput::MapStatus(MapStatus {
        executor: ctx.env().executor_id().clone(),
        address: ctx.env().block_address(),
        partition_lengths: info.partition_lengths,
    }))
}

fn shuffle_err(e: ember_shuffle::Error) -> Error {
    Error::Shuffle(e.to_string())
}

/// Where a map task writes, and the memory it writes under.
struct MapTaskOutput {
    path: std::path::PathBuf,
    mem: ember_shuffle::MemoryReservation,
    cfg: ember_shuffle::WriteConfig,
}

fn map_task_output(ctx: &TaskContext, shuffle_id: ShuffleId) -> MapTaskOutput {
    let env = ctx.env();
    let path = env.map_output_path(shuffle_id.0, ctx.partition_id());
    MapTaskOutput { path, mem: env.memory_pool().reservation(), cfg: env.write_config() }
}

impl<K: Key, V: Data, P: Partitioner<K>> StageSink for ShuffleWriteSink<K, V, P> {
    fn run(&self, ctx: &TaskContext) -> Result<TaskOutput> {
        let records = ctx.checked_batches(self.rdd.compute(ctx.partition_id(), ctx)?);
        let mut out = map_task_output(ctx, self.shuffle_id);
        let p = &self.partitioner;
        let info = ember_shuffle::write_plain(
            records,
            p.num_partitions(),
            |k: &K| p.partition(k),
            &mut out.mem,
            &out.cfg,
            &out.path,
        )
        .map_err(shuffle_err)?;
        finish_map_task(ctx, info)
    }
}

impl<K, V, C, A, P> StageSink for CombiningShuffleWriteSink<K, V, C, A, P>
where
    K: Key,
    V: Data,
    C: Data,
    A: Aggregator<K, V, C> + Serialize + DeserializeOwned + Clone + 'static,
    P: Partitioner<K>,
{
    fn run(&self, ctx: &TaskContext) -> Result<TaskOutput> {
        let records = ctx.checked_batches(self.rdd.compute(ctx.partition_id(), ctx)?);
        let mut out = map_task_output(ctx, self.shuffle_id);
        out.cfg.expected_keys = ctx.env().expected_keys(self.shuffle_id.0, false);
        let p = &self.partitioner;
        let info = ember_shuffle::write_combined(
            records,
            p.num_partitions(),
            |k: &K| p.partition(k),
            &self.agg,
            &mut out.mem,
            &out.cfg,
            &out.path,
        )
        .map_err(shuffle_err)?;
        // A combined output holds one record per distinct key. A task that
        // spilled did not hold them all at once: its count would oversize
        // the next table.
        if info.spill_count == 0 {
            ctx.env().record_keys(self.shuffle_id.0, false, info.records_written as usize);
        }
        finish_map_task(ctx, info)
    }
}

impl<K: Key, V: Data, P: Partitioner<K>> Encode for ShuffleWriteSink<K, V, P> {
    type Payload = (ShuffleId, P);
    fn payload(&self) -> Self::Payload {
        (self.shuffle_id, self.partitioner.clone())
    }
    fn decode((shuffle_id, partitioner): Self::Payload, parents: &[AnyNode]) -> Result<Self> {
        Ok(ShuffleWriteSink { shuffle_id, rdd: parent(parents, 0)?, partitioner })
    }
    fn into_any(self) -> AnyNode {
        Arc::new(Arc::new(self) as Arc<dyn StageSink>)
    }
}

impl<K, V, C, A, P> Encode for CombiningShuffleWriteSink<K, V, C, A, P>
where
    K: Key,
    V: Data,
    C: Data,
    A: Aggregator<K, V, C> + Serialize + DeserializeOwned + Clone + 'static,
    P: Partitioner<K>,
{
    type Payload = (ShuffleId, P, A);
    fn payload(&self) -> Self::Payload {
        (self.shuffle_id, self.partitioner.clone(), self.agg.clone())
    }
    fn decode((shuffle_id, partitioner, agg): Self::Payload, parents: &[AnyNode]) -> Result<Self> {
        Ok(CombiningShuffleWriteSink { shuffle_id, rdd: parent(parents, 0)?, partitioner, agg, _c: PhantomData })
    }
    fn into_any(self) -> AnyNode {
        Arc::new(Arc::new(self) as Arc<dyn StageSink>)
    }
}

/// Adapts a sink node to the stage encoder.
pub struct SinkNode<S: Encode> {
    sink: Arc<S>,
    rdd: Arc<dyn RddBase>,
}

impl<S: Encode> SinkNode<S> {
    pub fn new(sink: Arc<S>, rdd: Arc<dyn RddBase>) -> Self {
        SinkNode { sink, rdd }
    }
}

impl<S: Encode> EncodableNode for SinkNode<S> {
    fn node_key(&self) -> NodeKey {
        NodeKey::Sink
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(&*self.sink)
    }
    fn stage_parents(&self) -> Vec<Arc<dyn EncodableNode>> {
        vec![Arc::new(RddNode(self.rdd.clone()))]
    }
}

/// A concrete shuffle dependency: the map-side RDD plus the sink that writes it.
pub struct ShuffleDependency {
    pub shuffle_id: ShuffleId,
    pub rdd: Arc<dyn RddBase>,
    pub num_reduce_partitions: usize,
    pub sink: Arc<dyn EncodableNode>,
}

impl ShuffleDependencyBase for ShuffleDependency {
    fn shuffle_id(&self) -> ShuffleId {
        self.shuffle_id
    }
    fn rdd(&self) -> Arc<dyn RddBase> {
        self.rdd.clone()
    }
    fn num_reduce_partitions(&self) -> usize {
        self.num_reduce_partitions
    }
    fn sink(&self) -> Arc<dyn EncodableNode> {
        self.sink.clone()
    }
}
