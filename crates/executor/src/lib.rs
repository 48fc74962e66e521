//! The executor: receives task descriptions and stage payloads, decodes each
//! stage once, runs tasks on a dedicated thread pool sized by its cores
//! (never on an async runtime, so a slow task cannot starve heartbeats), and
//! reports every state change to its [`ExecutorBackend`].
//!
//! The same executor serves `local` mode (inside the driver process) and,
//! behind an RPC endpoint, executor processes.

pub mod block_manager;
pub mod env;
pub mod executor;
pub mod pool;
pub mod process;

pub use env::{ExecutorConfig, ExecutorEnv};
pub use executor::{Executor, ExecutorBackend};
pub use pool::Inbox;
