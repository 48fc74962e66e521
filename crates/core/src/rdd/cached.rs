//! `persist`: the first task to compute a partition keeps it in its
//! executor's block manager and reports it in its metrics; the driver then
//! prefers that executor for later tasks that read the partition (see the
//! task scheduler's locality wait), and those tasks read it back. A task that
//! runs elsewhere after the wait reads the partition from an executor that
//! the driver knows caches it, over that executor's block server, as Spark
//! reads remote blocks; it does not cache the copy. A partition no executor
//! can supply (its executor was lost, or the read failed) is recomputed from
//! lineage.

use super::sources::iter_shared;
use super::{any_rdd, BoxIter, Data, Dependency, Rdd, RddBase};
use crate::codec::{encode_node, parent, AnyNode, Encode, EncodedNode};
use crate::metrics::TaskMetrics;
use crate::partitioner::PartitionerDesc;
use crate::task::{CachedBlock, TaskContext};
use ember_common::{RddId, Result};
use std::any::Any;
use std::sync::Arc;

pub struct PersistedRdd<T> {
    id: RddId,
    parent: Arc<dyn Rdd<T>>,
}

impl<T: Data> PersistedRdd<T> {
    pub fn new(id: RddId, parent: Arc<dyn Rdd<T>>) -> Self {
        PersistedRdd { id, parent }
    }
}

impl<T: Data> Encode for PersistedRdd<T> {
    type Payload = RddId;
    fn payload(&self) -> RddId {
        self.id
    }
    fn decode(id: RddId, parents: &[AnyNode]) -> Result<Self> {
        Ok(PersistedRdd { id, parent: parent(parents, 0)? })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<T>(Arc::new(self))
    }
}

impl<T: Data> RddBase for PersistedRdd<T> {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "persist"
    }
    fn num_partitions(&self) -> usize {
        self.parent.num_partitions()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Narrow(self.parent.clone())]
    }
    fn narrow_one_to_one(&self) -> bool {
        true
    }
    fn persisted(&self) -> bool {
        true
    }
    fn partitioner(&self) -> Option<PartitionerDesc> {
        self.parent.partitioner()
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

impl<T: Data> Rdd<T> for PersistedRdd<T> {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<T>> {
        let env = ctx.env();
        if let Some(block) = env.cache_get(self.id.0, partition) {
            if let Ok(data) = block.downcast::<Vec<T>>() {
                return Ok(iter_shared(data));
            }
        }
        if let Some(data) = read_remote::<T>(self.id.0, partition, ctx) {
            return Ok(iter_shared(Arc::new(data)));
        }
        let data: Vec<T> = self.parent.compute(partition, ctx)?.collect();
        let data = Arc::new(data);
        if !ctx.should_stop() {
            env.cache_put(self.id.0, partition, CachedBlock { values: data.clone(), encode: encode_block::<T> });
            ctx.metrics().cached_block(self.id.0, partition);
        }
        Ok(iter_shared(data))
    }
}

/// Encodes a cached partition for a task on another executor.
fn encode_block<T: Data>(values: &(dyn Any + Send + Sync)) -> std::result::Result<Vec<u8>, String> {
    let values = values.downcast_ref::<Vec<T>>().ok_or("cached block of another type")?;
    postcard::to_allocvec(values).map_err(|e| format!("encoding a cached block: {e}"))
}

/// The partition read from the first executor that the driver knows caches
/// it and that answers; `None` (and the caller recomputes) when none does.
fn read_remote<T: Data>(rdd_id: u64, partition: usize, ctx: &TaskContext) -> Option<Vec<T>> {
    let env = ctx.env();
    for location in ctx.cached_block_locations(rdd_id, partition) {
        if location.executor == *env.executor_id() {
            continue;
        }
        let read = env.fetch_cached(location).and_then(|bytes| {
            let values = postcard::from_bytes::<Vec<T>>(&bytes).map_err(|e| format!("malformed cached block: {e}"))?;
            Ok((values, bytes.len()))
        });
        match read {
            Ok((values, len)) => {
                TaskMetrics::add(&ctx.metrics().remote_cached_bytes_read, len as u64);
                return Some(values);
            }
            Err(e) => tracing::debug!(rdd_id, partition, executor = %location.executor, error = %e,
                "cannot read a remote cached partition; recomputing it"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdd::sources::ParallelCollectionRdd;
    use crate::task::{CachedBlockLocation, TaskIds};
    use crate::test_env::TestEnv;
    use ember_common::{ExecutorId, StageId, TaskId};

    fn at(rdd_id: u64, partition: usize, executor: &str) -> CachedBlockLocation {
        let executor = ExecutorId::from(executor);
        CachedBlockLocation { rdd_id, partition, address: format!("{executor}:1"), executor }
    }

    /// Computes partition 1 of persisted rdd 9 (over 0..10 in 2 slices) on
    /// executor "a", given where the driver says it is cached.
    fn compute(env: &Arc<TestEnv>, locations: Vec<CachedBlockLocation>) -> Vec<u32> {
        let ids = TaskIds { task_id: TaskId(1), stage_id: StageId(1), stage_attempt: 0, partition: 1, attempt: 0 };
        let ctx = TaskContext::new(ids, env.clone(), Arc::default(), Arc::new(locations));
        let parent = Arc::new(ParallelCollectionRdd::new(RddId(8), (0..10u32).collect(), 2));
        PersistedRdd::new(RddId(9), parent).compute(1, &ctx).unwrap().collect()
    }

    /// Executor "a", whose peers answer with `remote` (others are unreachable).
    fn env(remote: &[(&str, Vec<u8>)]) -> Arc<TestEnv> {
        let remote = remote.iter().map(|(e, b)| (e.to_string(), b.clone())).collect();
        Arc::new(TestEnv { remote, ..TestEnv::new("a") })
    }

    #[test]
    fn a_partition_cached_elsewhere_is_read_from_there_and_not_cached_again() {
        let held = vec![50u32, 51, 52];
        let bytes = encode_block::<u32>(&held).unwrap();
        let env = env(&[("c", bytes)]);
        // Another partition and another rdd around it: only (9, 1) is looked up.
        let locations = vec![at(9, 0, "b"), at(9, 1, "a"), at(9, 1, "b"), at(9, 1, "c"), at(10, 1, "b")];
        assert_eq!(compute(&env, locations), held, "the remote copy, not a recomputation");
        assert_eq!(*env.fetched.lock(), ["b", "c"], "skips itself, tries holders in order");
        assert!(env.local.lock().is_empty());
    }

    #[test]
    fn a_partition_no_holder_can_supply_is_recomputed_and_cached() {
        let env = env(&[("b", b"not a block".to_vec())]);
        assert_eq!(compute(&env, vec![at(9, 1, "b"), at(9, 1, "c")]), (5..10).collect::<Vec<_>>());
        assert_eq!(*env.fetched.lock(), ["b", "c"], "a malformed block and an unreachable holder");
        let cached = env.local.lock().get(&(9, 1)).cloned().expect("cached after recomputing");
        let encoded = (cached.encode)(&*cached.values).unwrap();
        assert_eq!(postcard::from_bytes::<Vec<u32>>(&encoded).unwrap(), (5..10).collect::<Vec<_>>());
    }
}
