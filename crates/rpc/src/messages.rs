//! The messages, as the seeds name them. Versioned by [`PROTOCOL_VERSION`],
//! which both sides check during the handshake, before any message.

use ember_common::TaskId;
use ember_core::task::{TaskDescription, TaskState};
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to frames or messages.
pub const PROTOCOL_VERSION: u32 = 2;

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
    /// `payload` is the stage attempt, sent with the first task of that attempt only.
    LaunchTask {
        task: TaskDescription,
        #[serde(with = "serde_bytes")]
        payload: Option<Vec<u8>>,
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
}
