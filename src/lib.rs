//! # Ember
//!
//! A distributed data engine with Apache Spark's RDD semantics, in Rust.
//!
//! ```no_run
//! use ember::prelude::*;
//!
//! let sc = Context::new("local[*]")?;
//! let counts = sc
//!     .text_file("input.txt", 4)?
//!     .flat_map(|line: String| line.split_whitespace().map(String::from).collect::<Vec<_>>())
//!     .map(|w| (w, 1u64))
//!     .reduce_by_key(|a, b| a + b, 4);
//! let top = counts.top_by(10, |(w, c)| (*c, std::cmp::Reverse(w.clone())))?;
//! # Ok::<(), ember::Error>(())
//! ```
//!
//! Closures given to RDD operations must not capture variables: Ember ships
//! them to executors as *types*. A capturing closure is a compile error:
//!
//! ```compile_fail
//! use ember::prelude::*;
//! let sc = Context::new("local")?;
//! let offset = 10;
//! let shifted = sc.parallelize(vec![1, 2, 3], 2).map(move |x: i32| x + offset);
//! # Ok::<(), ember::Error>(())
//! ```
//!
//! Pass such state explicitly instead — `map_with(offset, |o, x| x + o)`.
//!
//! See `ARCHITECTURE.md` for how a job travels through the crates.

/// Turns this process into an executor, before `main`, when a driver started
/// it as one (`EMBER_EXECUTOR_MODE=1`). Linking Ember is all a program needs:
/// the same binary is the driver when a user runs it and an executor when a
/// driver launches it, and an executor never runs the user's `main`. On
/// Linux the hook first runs the constructors linked after it
/// ([`executor_hook`]).
#[cfg(not(target_os = "linux"))]
#[ctor::ctor]
fn enter_executor_mode_before_main() {
    ember_executor::process::run_if_requested();
}

/// Enters executor mode if this process was launched as an executor, and
/// never returns in that case. The pre-`main` hook already does this on
/// Linux; calling it first thing in `main` is the portable rule, and
/// harmless where the hook ran.
pub fn init() {
    ember_executor::process::run_if_requested();
}

pub mod broadcast;
pub mod context;
#[cfg(target_os = "linux")]
mod executor_hook;
pub mod local_backend;
pub mod master;
pub mod progress;
pub mod rdd;

pub use broadcast::Broadcast;
pub use context::{Context, ContextBuilder};
pub use ember_common::{Conf, Error, ExecutorId, JobId, Result, StageId, TaskId, KNOWN_KEYS};
pub use ember_core::metrics::TaskMetricsSnapshot;
pub use ember_core::partitioner::{HashPartitioner, PartitionerDesc, RangePartitioner};
pub use ember_core::{boxed, BoxIter, Data, Key, PartitionIter, TaskContext};
pub use ember_scheduler::{Listener, ListenerEvent};
pub use master::MasterUrl;
pub use rdd::Rdd;

/// Everything a typical program needs.
pub mod prelude {
    pub use crate::{BoxIter, Broadcast, Context, Data, Error, Key, Rdd, Result, TaskContext};
}
