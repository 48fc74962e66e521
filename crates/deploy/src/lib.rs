//! Deploying executors as processes, and the driver's side of talking to them.
//!
//! - [`local_cluster`]: `local-cluster[E,C,M]` — the driver starts E
//!   processes of its own executable in executor mode on loopback.
//! - [`cluster_backend`]: the seeds' `CoarseGrainedSchedulerBackend` /
//!   `DriverEndpoint`: accepts registrations (checking the secret, the
//!   protocol version and the executable hash), forwards `StatusUpdate`s into
//!   the scheduler's event loop, fetches large results, and sends
//!   `LaunchTask`/`KillTask`/... to the right executor.

pub mod cluster_backend;
pub mod local_cluster;

pub use cluster_backend::{ClusterBackend, ClusterSettings, DriverEndpoint};
pub use local_cluster::LocalCluster;
