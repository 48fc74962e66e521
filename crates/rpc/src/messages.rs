//! The messages, as the seeds name them. Versioned by [`PROTOCOL_VERSION`],
//! which both sides check during the handshake, before any message.

use ember_common::{StageId, TaskId};
use ember_core::task::{TaskDescription, TaskState};
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to frames or messages.
pub const PROTOCOL_VERSION: u32 = 5;

/// Executor → driver (`CoarseGrainedExecutorBackend` → `DriverEndpoint`).
#[derive(Debug, Serialize, Deserialize)]
pub enum ToDriver {
    RegisterExecutor {
        executor_id: String,
        host: String,
        /// Address of the executor's block server (shuffle segments, large results).
        block_address: String,
        cores: usize,
        /// BLAKE3 of the executor's executable; must equal the driver's.
        exe_hash: [u8; 32],
        protocol_version: u32,
    },
    StatusUpdate {
        task_id: TaskId,
        state: TaskState,
    },
    Heartbeat {
        executor_id: String,
    },
    MemoryReport {
        used: u64,
    },
}

/// Driver → executor.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToExecutor {
    RegisteredExecutor,
    RegisterExecutorFailed {
        reason: String,
    },
    /// `stage` is the stage attempt, sent with the first task of that
    /// attempt the executor receives; later tasks name the attempt only.
    LaunchTask {
        task: WireTask,
        stage: Option<WireStage>,
    },
    KillTask {
        task_id: TaskId,
        reason: String,
    },
    ReleaseStage {
        payload_hash: [u8; 32],
    },
    UnpersistRdd {
        rdd_id: u64,
    },
    ReportMemory,
    /// The driver's answer to a heartbeat: proof it is alive.
    HeartbeatAck,
    /// Finish and exit (the driver is stopping).
    StopExecutor,
    /// Exit now.
    Shutdown,
}

/// A [`TaskDescription`] on the wire: without the stage's 32-byte hash,
/// which the executor learns from the attempt's first task. A short task's
/// `LaunchTask` is a third of its former size, and its tag, encoding and
/// decoding cost shrink with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTask {
    pub task_id: TaskId,
    pub stage_id: StageId,
    pub stage_attempt: u32,
    pub partition: usize,
    pub attempt: u32,
}

impl WireTask {
    pub fn new(task: &TaskDescription) -> WireTask {
        WireTask {
            task_id: task.task_id,
            stage_id: task.stage_id,
            stage_attempt: task.stage_attempt,
            partition: task.partition,
            attempt: task.attempt,
        }
    }

    /// The task again, with its stage attempt's payload hash.
    pub fn describe(self, payload_hash: [u8; 32]) -> TaskDescription {
        TaskDescription {
            task_id: self.task_id,
            stage_id: self.stage_id,
            stage_attempt: self.stage_attempt,
            partition: self.partition,
            attempt: self.attempt,
            payload_hash,
        }
    }
}

/// A stage attempt's hash, with the first of its tasks an executor
/// receives, and its encoded payload unless the executor already holds it
/// (for another attempt with the same contents, say the same action run by
/// two threads at once).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireStage {
    pub hash: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub bytes: Option<Vec<u8>>,
}

/// A request to an executor's block server.
#[derive(Debug, Serialize, Deserialize)]
pub enum BlockRequest {
    ShuffleSegment {
        shuffle_id: u64,
        map_index: usize,
        reduce_id: usize,
    },
    /// A task result too large for its status update (taken once).
    TaskResult {
        task_id: TaskId,
    },
    /// A cached RDD partition, encoded, for a task running elsewhere.
    CachedBlock {
        rdd_id: u64,
        partition: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum BlockResponse {
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    Missing(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte fields go through `serde_bytes`: one length and one copy instead
    /// of a serializer call per byte, and the same bytes on the wire as a
    /// postcard sequence of `u8` (length, then the bytes).
    #[test]
    fn byte_fields_are_length_and_raw_bytes() {
        let bytes = postcard::to_allocvec(&BlockResponse::Bytes(vec![7, 8, 9])).unwrap();
        assert_eq!(bytes, [0, 3, 7, 8, 9]);
        let big = vec![0xabu8; 300];
        let encoded = postcard::to_allocvec(&BlockResponse::Bytes(big.clone())).unwrap();
        let as_seq = postcard::to_allocvec(&(0u8, &big)).unwrap();
        assert_eq!(encoded, as_seq);
        match postcard::from_bytes::<BlockResponse>(&encoded).unwrap() {
            BlockResponse::Bytes(b) => assert_eq!(b, big),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_launch_without_its_stage_is_small_and_keeps_every_field() {
        let task = TaskDescription {
            task_id: TaskId(123_456),
            stage_id: StageId(7),
            stage_attempt: 1,
            partition: 9_999,
            attempt: 2,
            payload_hash: [5; 32],
        };
        let msg = ToExecutor::LaunchTask { task: WireTask::new(&task), stage: None };
        let bytes = postcard::to_allocvec(&msg).unwrap();
        assert!(bytes.len() <= 12, "{} bytes", bytes.len());
        match postcard::from_bytes::<ToExecutor>(&bytes).unwrap() {
            ToExecutor::LaunchTask { task: wire, stage: None } => assert_eq!(wire.describe([5; 32]), task),
            other => panic!("{other:?}"),
        }
    }
}
