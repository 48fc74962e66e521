//! One newtype per kind of id, so a stage id can never be passed where a
//! job id is expected. All ids are allocated by the driver.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// A job: one action on one RDD.
    JobId(u64), "job "
);
id_type!(
    /// A stage: a pipelined slice of lineage between shuffle boundaries.
    StageId(u64), "stage "
);
id_type!(
    /// A task attempt, unique within the application.
    TaskId(u64), "TID "
);
id_type!(
    /// A shuffle dependency; its map outputs are keyed by it.
    ShuffleId(u64), "shuffle "
);
id_type!(
    /// An RDD, unique within the application.
    RddId(u64), "rdd "
);

/// An executor. `"driver"` is the in-process executor of `local` mode.
///
/// Shared, not owned: the scheduler copies an executor's id into every task
/// it places there and every event about it, and a clone is a reference
/// count rather than an allocation. On the wire it is a plain string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExecutorId(pub std::sync::Arc<str>);

impl ExecutorId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "executor {}", self.0)
    }
}

impl From<&str> for ExecutorId {
    fn from(s: &str) -> Self {
        ExecutorId(s.into())
    }
}

impl From<String> for ExecutorId {
    fn from(s: String) -> Self {
        ExecutorId(s.into())
    }
}
