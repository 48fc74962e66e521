//! Narrow RDDs over several parents: `union`, `zip` and `cartesian`.

use super::{any_rdd, boxed, BoxIter, Data, Dependency, Rdd, RddBase};
use crate::codec::{encode_node, parent, AnyNode, Encode, EncodedNode};
use crate::task::TaskContext;
use ember_common::{Error, RddId, Result, TaskFailure};
use std::sync::Arc;

/// Partitions of all parents, one after another.
pub struct UnionRdd<T> {
    id: RddId,
    parents: Vec<Arc<dyn Rdd<T>>>,
}

impl<T: Data> UnionRdd<T> {
    pub fn new(id: RddId, parents: Vec<Arc<dyn Rdd<T>>>) -> Self {
        UnionRdd { id, parents }
    }
}

impl<T: Data> Encode for UnionRdd<T> {
    type Payload = (RddId, usize);
    fn payload(&self) -> Self::Payload {
        (self.id, self.parents.len())
    }
    fn decode((id, n): Self::Payload, parents: &[AnyNode]) -> Result<Self> {
        let parents = (0..n).map(|i| parent(parents, i)).collect::<Result<_>>()?;
        Ok(UnionRdd { id, parents })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<T>(Arc::new(self))
    }
}

impl<T: Data> RddBase for UnionRdd<T> {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "union"
    }
    fn num_partitions(&self) -> usize {
        self.parents.iter().map(|p| p.num_partitions()).sum()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        self.parents.iter().map(|p| Dependency::Narrow(p.clone())).collect()
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

impl<T: Data> Rdd<T> for UnionRdd<T> {
    fn compute(&self, mut partition: usize, ctx: &TaskContext) -> Result<BoxIter<T>> {
        for p in &self.parents {
            let n = p.num_partitions();
            if partition < n {
                return p.compute(partition, ctx);
            }
            partition -= n;
        }
        Err(Error::InvalidArgument(format!("union has no partition {partition}")))
    }
}

/// Pairs the i-th elements of two RDDs with the same partitioning.
pub struct ZippedRdd<T, U> {
    id: RddId,
    a: Arc<dyn Rdd<T>>,
    b: Arc<dyn Rdd<U>>,
}

impl<T: Data, U: Data> ZippedRdd<T, U> {
    pub fn new(id: RddId, a: Arc<dyn Rdd<T>>, b: Arc<dyn Rdd<U>>) -> Result<Self> {
        if a.num_partitions() != b.num_partitions() {
            return Err(Error::InvalidArgument(format!(
                "Can't zip RDDs with unequal numbers of partitions: [{}, {}]",
                a.num_partitions(),
                b.num_partitions()
            )));
        }
        Ok(ZippedRdd { id, a, b })
    }
}

impl<T: Data, U: Data> Encode for ZippedRdd<T, U> {
    type Payload = RddId;
    fn payload(&self) -> RddId {
        self.id
    }
    fn decode(id: RddId, parents: &[AnyNode]) -> Result<Self> {
        Ok(ZippedRdd { id, a: parent(parents, 0)?, b: parent(parents, 1)? })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<(T, U)>(Arc::new(self))
    }
}

impl<T: Data, U: Data> RddBase for ZippedRdd<T, U> {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "zip"
    }
    fn num_partitions(&self) -> usize {
        self.a.num_partitions()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Narrow(self.a.clone()), Dependency::Narrow(self.b.clone())]
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

impl<T: Data, U: Data> Rdd<(T, U)> for ZippedRdd<T, U> {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<(T, U)>> {
        let mut a = self.a.compute(partition, ctx)?;
        let mut b = self.b.compute(partition, ctx)?;
        let ctx = ctx.clone();
        Ok(boxed(std::iter::from_fn(move || match (a.next(), b.next()) {
            (Some(x), Some(y)) => Some((x, y)),
            (None, None) => None,
            _ => {
                ctx.fail(TaskFailure::Error {
                    message: "Can only zip RDDs with same number of elements in each partition".into(),
                });
                None
            }
        })))
    }
}

/// Every pair `(a, b)`: partition `i * nb + j` pairs a's partition i with b's partition j.
pub struct CartesianRdd<T, U> {
    id: RddId,
    a: Arc<dyn Rdd<T>>,
    b: Arc<dyn Rdd<U>>,
}

impl<T: Data, U: Data> CartesianRdd<T, U> {
    pub fn new(id: RddId, a: Arc<dyn Rdd<T>>, b: Arc<dyn Rdd<U>>) -> Self {
        CartesianRdd { id, a, b }
    }
}

impl<T: Data, U: Data> Encode for CartesianRdd<T, U> {
    type Payload = RddId;
    fn payload(&self) -> RddId {
        self.id
    }
    fn decode(id: RddId, parents: &[AnyNode]) -> Result<Self> {
        Ok(CartesianRdd { id, a: parent(parents, 0)?, b: parent(parents, 1)? })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<(T, U)>(Arc::new(self))
    }
}

impl<T: Data, U: Data> RddBase for CartesianRdd<T, U> {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "cartesian"
    }
    fn num_partitions(&self) -> usize {
        self.a.num_partitions() * self.b.num_partitions()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Narrow(self.a.clone()), Dependency::Narrow(self.b.clone())]
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

impl<T: Data, U: Data> Rdd<(T, U)> for CartesianRdd<T, U> {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<(T, U)>> {
        let nb = self.b.num_partitions();
        let right: Arc<Vec<U>> = Arc::new(self.b.compute(partition % nb, ctx)?.collect());
        let left = self.a.compute(partition / nb, ctx)?;
        Ok(boxed(left.flat_map(move |x| {
            let right = right.clone();
            (0..right.len()).map(move |i| (x.clone(), right[i].clone()))
        })))
    }
}
