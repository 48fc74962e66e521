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
}

impl TaskMetrics {
    pub fn add(counter: &AtomicU64, v: u64) {
        counter.fetch_add(v, Ordering::Relaxed);
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
            ..Default::default()
        }
    }
}

/// Final metrics of one task attempt, as reported in its status update.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMetricsSnapshot {
    pub decode_time_ms: u64,
    pub run_time_ms: u64,
    pub result_size: u64,
    pub records_read: u64,
    pub shuffle_records_read: u64,
    pub shuffle_bytes_read: u64,
    pub shuffle_records_written: u64,
    pub shuffle_bytes_written: u64,
    pub bytes_spilled: u64,
}
