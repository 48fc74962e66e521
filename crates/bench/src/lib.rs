//! Ember's benchmark harness: the data generator ([`gen`]), the measurement
//! plumbing ([`harness`]) and the seven workloads of `WORKLOADS.md`
//! ([`workloads`]), each on the engine and as a native Rust baseline.

pub mod gen;
pub mod harness;
pub mod workloads;
