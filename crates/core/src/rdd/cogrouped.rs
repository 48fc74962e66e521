//! `cogroup`: for two RDDs partitioned the same way, every key with all its
//! values from each side. Parents are already co-partitioned — either the
//! original RDDs (when their partitioner matches, no shuffle) or plain
//! [`super::ShuffledRdd`]s — so both dependencies are narrow here and the
//! join family (`join`, outer joins, `subtract_by_key`) is built on top.

use super::{any_rdd, boxed, BoxIter, Data, Dependency, Key, Rdd, RddBase};
use crate::codec::{encode_node, parent, AnyNode, Encode, EncodedNode};
use crate::partitioner::PartitionerDesc;
use crate::task::TaskContext;
use ember_common::{RddId, Result};
use std::collections::HashMap;
use std::sync::Arc;

type Groups<V, W> = (Vec<V>, Vec<W>);

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
        let mut groups: HashMap<K, Groups<V, W>, foldhash::fast::FixedState> = HashMap::default();
        for (k, v) in self.a.compute(partition, ctx)? {
            groups.entry(k).or_default().0.push(v);
        }
        for (k, w) in self.b.compute(partition, ctx)? {
            groups.entry(k).or_default().1.push(w);
        }
        Ok(boxed(groups.into_iter()))
    }
}
