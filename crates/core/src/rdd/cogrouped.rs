//! `cogroup`: for two RDDs partitioned the same way, every key with all its
//! values from each side. Parents are already co-partitioned — either the
//! original RDDs (when their partitioner matches, no shuffle) or plain
//! [`super::ShuffledRdd`]s — so both dependencies are narrow here and the
//! join family (`join`, outer joins, `subtract_by_key`) is built on top.
//!
//! Grouping is the shuffle's `combine_by_key` over both sides' records,
//! each value tagged with its side (Spark's `CoGroupedRDD` over an
//! `ExternalAppendOnlyMap`). That brings the shuffle's batched, prefetching
//! combine table in place of a generic hash map, whose probes were two
//! thirds of a join's grouping time in cache misses, and groups that spill
//! to disk when the task's memory runs out instead of growing without bound.

use super::shuffled::{fail_on_error, note_spilled, KeepAlive};
use super::{any_rdd, BoxIter, ChainBatches, Data, Dependency, Key, MapBatches, Rdd, RddBase};
use crate::codec::{encode_node, parent, AnyNode, Encode, EncodedNode};
use crate::partitioner::PartitionerDesc;
use crate::task::TaskContext;
use ember_common::{Error, RddId, Result};
use ember_shuffle::Aggregator;
use std::sync::Arc;

type Groups<V, W> = (Vec<V>, Vec<W>);

/// A value tagged with the side it came from.
enum Side<V, W> {
    Left(V),
    Right(W),
}

/// Collects each key's values into its side's vector.
struct CoGroupAgg;

impl<K, V, W> Aggregator<K, Side<V, W>, Groups<V, W>> for CoGroupAgg {
    fn create_combiner(&self, s: Side<V, W>) -> Groups<V, W> {
        match s {
            Side::Left(v) => (vec![v], Vec::new()),
            Side::Right(w) => (Vec::new(), vec![w]),
        }
    }
    fn merge_value(&self, mut g: Groups<V, W>, s: Side<V, W>) -> Groups<V, W> {
        match s {
            Side::Left(v) => g.0.push(v),
            Side::Right(w) => g.1.push(w),
        }
        g
    }
    fn merge_combiners(&self, mut a: Groups<V, W>, b: Groups<V, W>) -> Groups<V, W> {
        a.0.extend(b.0);
        a.1.extend(b.1);
        a
    }
}

pub struct CoGroupedRdd<K, V, W> {
    id: RddId,
    a: Arc<dyn Rdd<(K, V)>>,
    b: Arc<dyn Rdd<(K, W)>>,
    partitioner: PartitionerDesc,
}

impl<K: Key, V: Data, W: Data> CoGroupedRdd<K, V, W> {
    pub fn new(id: RddId, a: Arc<dyn Rdd<(K, V)>>, b: Arc<dyn Rdd<(K, W)>>, partitioner: PartitionerDesc) -> Self {
        CoGroupedRdd { id, a, b, partitioner }
    }
}

impl<K: Key, V: Data, W: Data> Encode for CoGroupedRdd<K, V, W> {
    type Payload = (RddId, PartitionerDesc);
    fn payload(&self) -> Self::Payload {
        (self.id, self.partitioner.clone())
    }
    fn decode((id, partitioner): Self::Payload, parents: &[AnyNode]) -> Result<Self> {
        Ok(CoGroupedRdd { id, a: parent(parents, 0)?, b: parent(parents, 1)?, partitioner })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<(K, Groups<V, W>)>(Arc::new(self))
    }
}

impl<K: Key, V: Data, W: Data> RddBase for CoGroupedRdd<K, V, W> {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "cogroup"
    }
    fn num_partitions(&self) -> usize {
        self.partitioner.num_partitions()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Narrow(self.a.clone()), Dependency::Narrow(self.b.clone())]
    }
    fn narrow_one_to_one(&self) -> bool {
        true
    }
    fn partitioner(&self) -> Option<PartitionerDesc> {
        Some(self.partitioner.clone())
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

impl<K: Key, V: Data, W: Data> Rdd<(K, Groups<V, W>)> for CoGroupedRdd<K, V, W> {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<(K, Groups<V, W>)>> {
        let a = Box::new(MapBatches::new(self.a.compute(partition, ctx)?, |(k, v)| (k, Side::Left(v))));
        let b = Box::new(MapBatches::new(self.b.compute(partition, ctx)?, |(k, w)| (k, Side::Right(w))));
        let tagged: BoxIter<(K, Side<V, W>)> = Box::new(ChainBatches::new(a, b));
        let env = ctx.env();
        let cfg = env.write_config();
        let mut mem = env.memory_pool().reservation();
        let groups =
            ember_shuffle::combine_by_key(ctx.checked_batches(tagged), CoGroupAgg, &mut mem, &cfg.spill_dir, &cfg)
                .map_err(|e| Error::Shuffle(e.to_string()))?;
        note_spilled(ctx, groups.bytes_spilled());
        Ok(fail_on_error(ctx, KeepAlive { iter: groups, _mem: mem }))
    }
}
