//! The error type users see. Failures the scheduler acts on are structured
//! (see [`TaskFailure`]); nothing downstream parses error strings.

use serde::{Deserialize, Serialize};
use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why one task attempt failed. Travels from executor to driver as data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskFailure {
    /// User code panicked; carries the panic message.
    Panic { message: String },
    /// The task returned an error (I/O, decoding, a user-visible error).
    Error { message: String },
    /// A shuffle block could not be read: the map output must be recomputed.
    FetchFailed { shuffle_id: u64, map_index: usize, reduce_id: usize, message: String },
    /// The task was killed on request (cancellation, or a superseded attempt).
    Killed { reason: String },
    /// The task's result exceeds `ember.driver.maxResultSize`; retrying cannot help.
    ResultTooLarge { size: u64, limit: u64 },
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskFailure::Panic { message } => write!(f, "task panicked: {message}"),
            TaskFailure::Error { message } => write!(f, "{message}"),
            TaskFailure::FetchFailed { shuffle_id, map_index, reduce_id, message } => {
                write!(f, "fetch failed for shuffle {shuffle_id} map {map_index} reduce {reduce_id}: {message}")
            }
            TaskFailure::Killed { reason } => write!(f, "task killed: {reason}"),
            TaskFailure::ResultTooLarge { size, limit } => write!(
                f,
                "Total size of serialized results ({size} bytes) is bigger than ember.driver.maxResultSize ({limit} bytes)"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job was aborted; `reason` names the stage, task and the last failure.
    #[error("job aborted: {reason}")]
    JobAborted { reason: String },
    /// The job was cancelled by the user.
    #[error("job cancelled: {reason}")]
    Cancelled { reason: String },
    /// An action that needs at least one element found none (Spark: "empty collection").
    #[error("empty collection")]
    EmptyCollection,
    /// The caller passed something that cannot work (bad partition count, mismatched zip, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A configuration key has a value that cannot be parsed or is out of range.
    #[error("invalid configuration: {key} = {value:?}: {reason}")]
    Config { key: String, value: String, reason: String },
    /// A malformed master URL.
    #[error("invalid master URL {url:?}: {reason}")]
    MasterUrl { url: String, reason: String },
    /// Encoding or decoding a stage, a record or a result failed.
    #[error("codec error: {0}")]
    Codec(String),
    /// A file or directory operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Shuffle data could not be read back.
    #[error("shuffle error: {0}")]
    Shuffle(String),
    /// A task failed while running (inside an executor).
    #[error("{0}")]
    Task(TaskFailure),
    /// The context was stopped while the operation was in flight.
    #[error("context stopped: {0}")]
    Stopped(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// The message of a caught panic's payload (`panic!` with a literal gives
/// a `&str`, with formatting a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
