//! Per-task metrics, updated lock-free while a task runs and shipped to the
//! driver with the task's final status.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a running task.
#[derive(Debug, Default)]
pub struct TaskMetrics {
    pub records_read: AtomicU64,
    pub shuffle_records_read: AtomicU64,
    pub shuffle_bytes_read: AtomicU64,
    pub shuffle_records_written: AtomicU64,
    pub shuffle_bytes_written: AtomicU64,
    pub bytes_spilled: AtomicU64,
    /// Bytes of cached partitions read from other executors' block servers.
    pub remote_cached_bytes_read: AtomicU64,
    /// `(rdd, partition)` blocks the task stored in its executor's cache.
    cached_blocks: parking_lot::Mutex<Vec<(u64, u32)>>,
}

impl TaskMetrics {
    pub fn add(counter: &AtomicU64, v: u64) {
        counter.fetch_add(v, Ordering::Relaxed);
    }

    /// Notes that the task stored partition `partition` of RDD `rdd` in its executor's cache.
    pub fn cached_block(&self, rdd: u64, partition: usize) {
        self.cached_blocks.lock().push((rdd, partition as u32));
    }

    pub fn snapshot(&self) -> TaskMetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TaskMetricsSnapshot {
            records_read: g(&self.records_read),
            shuffle_records_read: g(&self.shuffle_records_read),
            shuffle_bytes_read: g(&self.shuffle_bytes_read),
            shuffle_records_written: g(&self.shuffle_records_written),
            shuffle_bytes_written: g(&self.shuffle_bytes_written),
            bytes_spilled: g(&self.bytes_spilled),
            remote_cached_bytes_read: g(&self.remote_cached_bytes_read),
            cached_blocks: self.cached_blocks.lock().clone(),
            ..Default::default()
        }
    }
}

/// Final metrics of one task attempt, as reported in its status update.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMetricsSnapshot {
    /// Time to decode the task's stage (Spark's `executorDeserializeTime`), in µs.
    pub decode_time_us: u64,
    /// Time the task's sink ran (Spark's `executorRunTime`), in µs: fine
    /// enough for the scheduler to tell a 2 µs task from a 50 µs one.
    pub run_time_us: u64,
    pub result_size: u64,
    pub records_read: u64,
    pub shuffle_records_read: u64,
    pub shuffle_bytes_read: u64,
    pub shuffle_records_written: u64,
    pub shuffle_bytes_written: u64,
    pub bytes_spilled: u64,
    /// Bytes of cached partitions read from other executors' block servers.
    pub remote_cached_bytes_read: u64,
    /// `(rdd, partition)` blocks stored in the executor's cache by this task
    /// (Spark's `updatedBlockStatuses`): the driver prefers that executor
    /// for later tasks that read them.
    pub cached_blocks: Vec<(u64, u32)>,
}
