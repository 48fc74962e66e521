//! The RDD model. [`RddBase`] is the type-erased view the scheduler walks
//! (id, partitions, dependencies, partitioner); [`Rdd<T>`] adds `compute`,
//! which turns one partition into a plain iterator on an executor thread.
//!
//! Every node type also implements [`crate::codec::Encode`], so any stage
//! can be shipped as a flat node list. Node types are few and generic: one
//! [`MapPartitionsRdd`] carries every one-to-one narrow transformation, with
//! the user's closure conjured from its (zero-sized) type.

mod binary_records;
mod cached;
mod coalesced;
mod cogrouped;
mod map_partitions;
mod multi_parent;
pub mod partition_iter;
mod shuffled;
mod sources;
pub mod text_file;

pub use binary_records::BinaryRecordsRdd;
pub use cached::PersistedRdd;
pub use coalesced::CoalescedRdd;
pub use cogrouped::CoGroupedRdd;
pub use map_partitions::MapPartitionsRdd;
pub use multi_parent::{CartesianRdd, UnionRdd, ZippedRdd};
pub use partition_iter::{boxed, BoxIter, ChainBatches, FilterBatches, FlatMapBatches, MapBatches, PartitionIter};
pub use shuffled::{note_spilled, AggregatedShuffledRdd, ShuffledRdd, SortedShuffledRdd};
pub use sources::{EmptyRdd, ParallelCollectionRdd, RangeRdd};
pub use text_file::TextFileRdd;

use crate::codec::{EncodableNode, EncodedNode, NodeKey};
use crate::partitioner::PartitionerDesc;
use crate::shuffle_dep::ShuffleDependencyBase;
use crate::task::TaskContext;
use ember_common::{RddId, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::hash::Hash;
use std::sync::Arc;

/// Element types an RDD can hold: shippable and shareable.
pub trait Data: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Data for T {}

/// Key types of pair RDDs.
pub trait Key: Data + Hash + Eq {}
impl<T: Data + Hash + Eq> Key for T {}

/// How an RDD depends on a parent.
#[derive(Clone)]
pub enum Dependency {
    /// Each partition reads a bounded set of parent partitions in the same stage.
    Narrow(Arc<dyn RddBase>),
    /// Each partition reads from every parent partition through a shuffle: a stage boundary.
    Shuffle(Arc<dyn ShuffleDependencyBase>),
}

/// The type-erased RDD the scheduler sees.
pub trait RddBase: Send + Sync + 'static {
    fn id(&self) -> RddId;
    /// Short operation name (`map`, `textFile`, ...) for logs and events.
    fn name(&self) -> &str;
    fn num_partitions(&self) -> usize;
    fn dependencies(&self) -> Vec<Dependency>;
    fn partitioner(&self) -> Option<PartitionerDesc> {
        None
    }
    /// Whether partition `p` reads exactly partition `p` of each narrow
    /// dependency (map-like nodes, a co-partitioned cogroup). The scheduler
    /// follows these edges, and only these, to the cached partitions a task
    /// will read (Spark's `getPreferredLocs` through one-to-one dependencies).
    fn narrow_one_to_one(&self) -> bool {
        false
    }
    /// Whether the node keeps its partitions in executors' caches (`persist`).
    fn persisted(&self) -> bool {
        false
    }
    /// The node's own payload and decoder (see [`crate::codec`]).
    fn encode_self(&self) -> Result<EncodedNode>;
}

/// A typed RDD: computes one partition on an executor.
pub trait Rdd<T>: RddBase {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<T>>;
}

/// Adapts an RDD to the stage encoder: same-stage parents are its narrow dependencies.
pub struct RddNode(pub Arc<dyn RddBase>);

impl EncodableNode for RddNode {
    fn node_key(&self) -> NodeKey {
        NodeKey::Rdd(self.0.id())
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        self.0.encode_self()
    }
    fn stage_parents(&self) -> Vec<Arc<dyn EncodableNode>> {
        self.0
            .dependencies()
            .into_iter()
            .filter_map(|d| match d {
                Dependency::Narrow(p) => Some(Arc::new(RddNode(p)) as Arc<dyn EncodableNode>),
                Dependency::Shuffle(_) => None,
            })
            .collect()
    }
}

/// Wraps a typed RDD node as the `Any` its children downcast to.
pub(crate) fn any_rdd<T: 'static>(rdd: Arc<dyn Rdd<T>>) -> crate::codec::AnyNode {
    Arc::new(rdd)
}
