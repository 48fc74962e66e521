//! Ember's sort-based shuffle and memory accounting.
//!
//! * [`memory`]: the executor-wide [`MemoryPool`] and per-task [`MemoryReservation`]s.
//! * [`mod@format`]: the map output file layout (data region + index trailer), [`BlockWriter`] and the
//!   checksum-verifying [`SegmentReader`].
//! * [`aggregator`]: the [`Aggregator`] trait (combineByKey semantics) and [`key_hash`].
//! * [`writer`]: the map side — [`write_plain`] and [`write_combined`], which
//!   buffer under a memory reservation, spill sorted runs and merge them into
//!   one file per map task (its data, then its index).
//! * [`reader`]: reduce-side [`combine_by_key`], [`merge_combiners_by_key`] and
//!   the external [`sort_by_key`].
//! * [`input`]: [`RecordInput`], the batched record source the writers and
//!   aggregators consume (any iterator of `Result`s is one).
//! * `record`: the encoding of one record, with fast paths for byte keys.
//! * [`error`]: the crate's [`Error`] type.

pub mod aggregator;
mod byte_sort;
pub mod error;
pub mod format;
pub mod input;
pub mod memory;
mod prefetch;
pub mod reader;
mod record;
mod spill;
mod table;
pub mod writer;

pub use aggregator::{key_hash, Aggregator, FnAggregator, MergeCombiners, KEY_HASH_SEED};
pub use error::{Error, Result};
pub use format::{
    open_segment, read_index, read_segment, segment_range, BlockWriter, MapOutputFile, SegmentReader,
    DEFAULT_BLOCK_SIZE, FORMAT_VERSION,
};
pub use input::RecordInput;
pub use memory::{MemoryPool, MemoryReservation};
pub use reader::{
    combine_by_key, merge_combiners_by_key, sort_by_key, sort_segments_by_key, sorts_segments, CombinedIter, SortedIter,
};
pub use record::sort_prefix;
pub use writer::{write_combined, write_plain, MapOutputInfo, WriteConfig};
