//! One node type for every one-to-one narrow transformation: `map`,
//! `filter`, `flat_map`, `map_partitions*`, `map_values`, `glom`, `sample`,
//! the `*_with(state, f)` variants, ... The transformation is a zero-sized
//! function of (state, task context, input iterator).

use super::{any_rdd, BoxIter, Dependency, Rdd, RddBase};
use crate::codec::{encode_node, parent, AnyNode, Encode, EncodedNode, Func, ShippableFn};
use crate::partitioner::PartitionerDesc;
use crate::task::TaskContext;
use ember_common::{RddId, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use std::sync::Arc;

pub struct MapPartitionsRdd<T, U, S, F> {
    id: RddId,
    name: String,
    parent: Arc<dyn Rdd<T>>,
    state: S,
    f: Func<F>,
    partitioner: Option<PartitionerDesc>,
    _types: PhantomData<fn(T) -> U>,
}

impl<T, U, S, F> MapPartitionsRdd<T, U, S, F>
where
    T: 'static,
    U: 'static,
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: Fn(&S, &TaskContext, BoxIter<T>) -> BoxIter<U> + ShippableFn,
{
    /// `preserves_partitioning`: keep the parent's partitioner (only for
    /// transformations that never change keys, like `map_values`).
    pub fn new(id: RddId, name: &str, parent: Arc<dyn Rdd<T>>, state: S, f: F, preserves_partitioning: bool) -> Self {
        let partitioner = if preserves_partitioning { parent.partitioner() } else { None };
        MapPartitionsRdd {
            id,
            name: name.to_string(),
            parent,
            state,
            f: Func::new(f),
            partitioner,
            _types: PhantomData,
        }
    }
}

impl<T, U, S, F> Encode for MapPartitionsRdd<T, U, S, F>
where
    T: 'static,
    U: 'static,
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: Fn(&S, &TaskContext, BoxIter<T>) -> BoxIter<U> + ShippableFn,
{
    type Payload = (RddId, String, S, Func<F>, Option<PartitionerDesc>);
    fn payload(&self) -> Self::Payload {
        (self.id, self.name.clone(), self.state.clone(), self.f, self.partitioner.clone())
    }
    fn decode((id, name, state, f, partitioner): Self::Payload, parents: &[AnyNode]) -> Result<Self> {
        Ok(MapPartitionsRdd { id, name, parent: parent(parents, 0)?, state, f, partitioner, _types: PhantomData })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<U>(Arc::new(self))
    }
}

impl<T, U, S, F> RddBase for MapPartitionsRdd<T, U, S, F>
where
    T: 'static,
    U: 'static,
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: Fn(&S, &TaskContext, BoxIter<T>) -> BoxIter<U> + ShippableFn,
{
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
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
    fn partitioner(&self) -> Option<PartitionerDesc> {
        self.partitioner.clone()
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

impl<T, U, S, F> Rdd<U> for MapPartitionsRdd<T, U, S, F>
where
    T: 'static,
    U: 'static,
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: Fn(&S, &TaskContext, BoxIter<T>) -> BoxIter<U> + ShippableFn,
{
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<U>> {
        let input = self.parent.compute(partition, ctx)?;
        Ok((self.f.get())(&self.state, ctx, input))
    }
}
