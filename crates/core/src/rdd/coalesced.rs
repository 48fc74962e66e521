//! `coalesce(n)` without a shuffle: each new partition reads a contiguous
//! group of parent partitions (Spark's grouping when there is no locality
//! information: new partition `i` takes parents `[i*N/n, (i+1)*N/n)`).

use super::{any_rdd, boxed, BoxIter, Data, Dependency, Rdd, RddBase};
use crate::codec::{encode_node, parent, AnyNode, Encode, EncodedNode};
use crate::task::TaskContext;
use ember_common::{RddId, Result};
use std::sync::Arc;

pub struct CoalescedRdd<T> {
    id: RddId,
    parent: Arc<dyn Rdd<T>>,
    groups: Vec<(usize, usize)>,
}

impl<T: Data> CoalescedRdd<T> {
    pub fn new(id: RddId, parent: Arc<dyn Rdd<T>>, partitions: usize) -> Self {
        let prev = parent.num_partitions();
        let n = partitions.min(prev).max(usize::from(prev > 0));
        let groups = (0..n).map(|i| (i * prev / n, (i + 1) * prev / n)).collect();
        CoalescedRdd { id, parent, groups }
    }
}

impl<T: Data> Encode for CoalescedRdd<T> {
    type Payload = (RddId, Vec<(usize, usize)>);
    fn payload(&self) -> Self::Payload {
        (self.id, self.groups.clone())
    }
    fn decode((id, groups): Self::Payload, parents: &[AnyNode]) -> Result<Self> {
        Ok(CoalescedRdd { id, parent: parent(parents, 0)?, groups })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<T>(Arc::new(self))
    }
}

impl<T: Data> RddBase for CoalescedRdd<T> {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "coalesce"
    }
    fn num_partitions(&self) -> usize {
        self.groups.len()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Narrow(self.parent.clone())]
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

impl<T: Data> Rdd<T> for CoalescedRdd<T> {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<T>> {
        let (lo, hi) = self.groups[partition];
        let parent = self.parent.clone();
        let ctx2 = ctx.clone();
        Ok(boxed((lo..hi).flat_map(move |p| match parent.compute(p, &ctx2) {
            Ok(it) => it,
            Err(e) => {
                ctx2.fail(ember_common::TaskFailure::Error { message: e.to_string() });
                boxed(std::iter::empty())
            }
        })))
    }
}
