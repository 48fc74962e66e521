//! Ember's wire protocol.
//!
//! - [`stream`]: the sockets under connections — TCP, or a Unix domain
//!   socket between processes of one host.
//! - [`frame`]: long-lived connections carrying length-delimited frames,
//!   each encrypted and authenticated with AES-256-GCM under a
//!   per-connection session key derived from the application secret during
//!   a mutual challenge-response handshake; a size limit is checked before
//!   any frame is buffered.
//! - [`messages`]: the versioned messages between driver and executors
//!   (the seeds' `RegisterExecutor`, `LaunchTask`, `StatusUpdate`, ...) and
//!   between block clients and block servers.
//! - [`blocking`]: a connection's receiving half as a plain socket, read
//!   by whichever of a process's threads is idle.
//! - [`ring`]: shared-memory rings that carry a same-host connection's
//!   frames without system calls, beside its socket.
//! - [`client`]: a request/response client that multiplexes many concurrent
//!   calls over one connection per peer.
//! - [`shared`]: a connection's sending half that the scheduler and task
//!   threads write to directly, with a flusher task for what the socket
//!   cannot take at once.
//! - [`runtime`]: the single-I/O-thread runtime both kinds of process use.

pub mod blocking;
pub mod client;
pub mod frame;
pub mod launch;
pub mod messages;
pub mod ring;
pub mod runtime;
pub mod shared;
pub mod stream;

pub use blocking::{detach, detach_with_ring, wait_any, BlockingReader};
pub use client::{BlockClient, BlockClients, RpcClient};
pub use frame::{accept, connect, pump, ConnReader, ConnWriter, RpcError, Secret};
pub use messages::{BlockRequest, BlockResponse, ToDriver, ToExecutor, WireStage, WireTask, PROTOCOL_VERSION};
pub use runtime::io_runtime;
pub use shared::SharedWriter;
pub use stream::Stream;
