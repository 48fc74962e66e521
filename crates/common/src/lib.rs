//! Vocabulary shared by every Ember crate: typed ids, the configuration
//! registry, the user-facing error type and the clock abstraction.
//!
//! Nothing here does I/O or spawns threads; it sits at the bottom of the
//! crate graph so that every layer above can speak the same words.

pub mod clock;
pub mod conf;
pub mod error;
pub mod ids;
pub mod spin;

pub use clock::{Clock, ManualClock, SystemClock};
pub use conf::{Conf, ConfEntry, KNOWN_KEYS};
pub use error::{panic_message, Error, Result, TaskFailure};
pub use ids::{ExecutorId, JobId, RddId, ShuffleId, StageId, TaskId};
