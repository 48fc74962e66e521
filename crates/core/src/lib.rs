//! Ember's execution model: RDDs and their dependencies, partitioners and
//! aggregators, the task context and sinks, and the same-binary task codec
//! that ships a stage to an executor as a flat list of typed nodes.
//!
//! This crate knows nothing of scheduling or transport: the scheduler walks
//! [`rdd::RddBase`] graphs, the executor decodes [`codec::StageBlob`]s and
//! runs their [`task::StageSink`]s.

pub mod aggregators;
pub mod codec;
pub mod metrics;
pub mod partitioner;
pub mod rdd;
pub mod shuffle_dep;
pub mod sinks;
pub mod task;
#[cfg(test)]
mod test_env;

pub use rdd::{boxed, BoxIter, Data, Dependency, Key, PartitionIter, Rdd, RddBase};
pub use task::{StageSink, TaskContext, TaskEnv, TaskOutput};
