//! `persist`: the first task to compute a partition keeps it in its
//! executor's block manager and reports it in its metrics; the driver then
//! prefers that executor for later tasks that read the partition (see the
//! task scheduler's locality wait), and those tasks read it back. A partition
//! missing from the cache (its task ran elsewhere after the wait, or its
//! executor was lost) is recomputed from lineage.

use super::sources::iter_shared;
use super::{any_rdd, BoxIter, Data, Dependency, Rdd, RddBase};
use crate::codec::{encode_node, parent, AnyNode, Encode, EncodedNode};
use crate::partitioner::PartitionerDesc;
use crate::task::TaskContext;
use ember_common::{RddId, Result};
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
        let data: Vec<T> = self.parent.compute(partition, ctx)?.collect();
        let data = Arc::new(data);
        if !ctx.should_stop() {
            env.cache_put(self.id.0, partition, data.clone());
            ctx.metrics().cached_block(self.id.0, partition);
        }
        Ok(iter_shared(data))
    }
}
