//! Ember's benchmark harness: the data generator ([`gen`]), the measurement
//! plumbing ([`harness`]) and the seven workloads of `WORKLOADS.md`
//! ([`workloads`]), each on the engine and as a native Rust baseline, and
//! the allocator settings the `ember-bench` binary runs with ([`allocator`]).

pub mod allocator;
pub mod gen;
pub mod harness;
pub mod workloads;
