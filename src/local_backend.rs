//! The `local` scheduler backend: one executor living in the driver process
//! (Spark's `LocalSchedulerBackend`). Tasks still travel as encoded stage
//! payloads and are decoded by the executor, exactly as they would be in an
//! executor process; only the transport is a function call.

use ember_common::{ExecutorId, TaskId};
use ember_core::task::TaskState;
use ember_executor::{Executor, ExecutorBackend};
use ember_scheduler::event_loop::{LoopMsg, SchedulerBackend};
use ember_scheduler::task_scheduler::Launch;
use ember_scheduler::LoopSender;
use std::sync::Arc;

/// Forwards the executor's status updates into the driver's event loop.
pub struct LoopForwarder(pub LoopSender);

impl ExecutorBackend for LoopForwarder {
    fn status_update(&self, task_id: TaskId, state: TaskState) {
        let _ = self.0.send(LoopMsg::StatusUpdate { task_id, state });
    }
}

pub struct LocalBackend {
    pub executor: Arc<Executor>,
}

impl SchedulerBackend for LocalBackend {
    fn launch(&mut self, launch: Launch) {
        self.executor.launch_task(launch.task, launch.payload);
    }
    fn kill(&mut self, _executor: &ExecutorId, task_id: TaskId, reason: &str) {
        self.executor.kill_task(task_id, reason);
    }
    fn release(&mut self, _executor: &ExecutorId, payload_hash: [u8; 32]) {
        self.executor.release_stage(&payload_hash);
    }
    fn stop(&mut self) {
        self.executor.stop();
    }
}
