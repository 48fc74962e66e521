//! The driver's schedulers, as the seeds describe them, built as state
//! machines with no I/O so they can be tested exhaustively:
//!
//! - [`dag::DagScheduler`]: jobs → stages split at shuffle boundaries,
//!   missing parents submitted first, map outputs tracked, fetch failures
//!   answered by resubmitting the lost map partitions.
//! - [`task_scheduler::TaskScheduler`]: task sets per stage attempt, FIFO
//!   across jobs, resource offers by free cores, retries up to
//!   `ember.task.maxFailures`.
//! - [`event_loop`]: the thin thread that feeds both from a channel and talks
//!   to a [`event_loop::SchedulerBackend`].
//! - [`doorbell`]: the loop's channel, which wakes the loop when it sleeps
//!   on its backend's connections.
//! - [`listener`]: the listener bus that carries job/stage/task events.

pub mod dag;
pub mod doorbell;
pub mod event_loop;
pub mod listener;
pub mod task_scheduler;

pub use doorbell::{loop_channel, LoopReceiver, LoopSender};
pub use event_loop::{DriverHandle, JobMsg, JobWaiter, LoopMsg, SchedulerBackend};
pub use listener::{Listener, ListenerBus, ListenerEvent};
