//! [`ExecutorEnv`]: what an executor offers its tasks (the core crate's
//! [`TaskEnv`]): a memory pool, a directory for shuffle files and spills,
//! the block manager, and shuffle-segment fetching.

use crate::block_manager::BlockManager;
use ember_common::{Error, ExecutorId, Result, TaskFailure};
use ember_core::task::{fetch_when_waited, CachedBlock, CachedBlockLocation, MapStatus, SegmentFetch, TaskEnv};
use ember_shuffle::{MemoryPool, WriteConfig};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Fetches shuffle segments held by *other* executors (over the network).
pub trait RemoteFetcher: Send + Sync {
    fn fetch(
        &self,
        status: &MapStatus,
        shuffle_id: u64,
        map_index: usize,
        reduce_id: usize,
    ) -> Result<Vec<u8>, TaskFailure>;

    /// Sends the request now; the returned fetch waits for the answer. The
    /// default fetches when waited on.
    fn start(&self, status: &MapStatus, shuffle_id: u64, map_index: usize, reduce_id: usize) -> SegmentFetch {
        fetch_when_waited(status, shuffle_id, map_index, reduce_id)
    }

    /// A cached partition held by another executor, encoded.
    fn fetch_cached(&self, location: &CachedBlockLocation) -> Result<Vec<u8>, String>;
}

#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    pub id: ExecutorId,
    pub cores: usize,
    /// This executor's own directory (created; removed on stop).
    pub dir: PathBuf,
    pub memory_budget: usize,
    pub compress: bool,
    pub block_size: usize,
    /// Address of this executor's block server; empty when in-process.
    pub block_address: String,
    /// How long an idle task thread polls for its next task before it sleeps (`ember.spinWait`).
    pub spin_wait: std::time::Duration,
}

pub struct ExecutorEnv {
    config: ExecutorConfig,
    memory: Arc<MemoryPool>,
    blocks: BlockManager,
    remote: Option<Arc<dyn RemoteFetcher>>,
    /// `TaskEnv::record_keys`, per (shuffle, reduce side).
    key_counts: parking_lot::Mutex<std::collections::HashMap<(u64, bool), usize>>,
}

impl ExecutorEnv {
    pub fn new(config: ExecutorConfig, remote: Option<Arc<dyn RemoteFetcher>>) -> Result<Self> {
        for d in [config.dir.clone(), config.dir.join("spill")] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
        }
        Ok(ExecutorEnv {
            memory: MemoryPool::new(config.memory_budget),
            blocks: BlockManager::default(),
            remote,
            config,
            key_counts: Default::default(),
        })
    }

    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    pub fn blocks(&self) -> &BlockManager {
        &self.blocks
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }
}

impl TaskEnv for ExecutorEnv {
    fn executor_id(&self) -> &ExecutorId {
        &self.config.id
    }

    fn memory_pool(&self) -> &Arc<MemoryPool> {
        &self.memory
    }

    fn expected_keys(&self, shuffle_id: u64, reduce_side: bool) -> usize {
        self.key_counts.lock().get(&(shuffle_id, reduce_side)).copied().unwrap_or(0)
    }

    fn record_keys(&self, shuffle_id: u64, reduce_side: bool, keys: usize) {
        self.key_counts.lock().insert((shuffle_id, reduce_side), keys);
    }

    fn write_config(&self) -> WriteConfig {
        let mut cfg = WriteConfig::new(self.config.dir.join("spill"));
        cfg.compress = self.config.compress;
        cfg.block_size = self.config.block_size;
        cfg
    }

    fn map_output_path(&self, shuffle_id: u64, map_index: usize) -> PathBuf {
        self.config.dir.join(format!("shuffle_{shuffle_id}_{map_index}.data"))
    }

    fn block_address(&self) -> String {
        self.config.block_address.clone()
    }

    fn fetch_segment(
        &self,
        status: &MapStatus,
        shuffle_id: u64,
        map_index: usize,
        reduce_id: usize,
    ) -> Result<Vec<u8>, TaskFailure> {
        if status.executor == self.config.id {
            return ember_shuffle::read_segment(self.map_output_path(shuffle_id, map_index), reduce_id)
                .map_err(|e| TaskFailure::FetchFailed { shuffle_id, map_index, reduce_id, message: e.to_string() });
        }
        match &self.remote {
            Some(r) => r.fetch(status, shuffle_id, map_index, reduce_id),
            None => Err(TaskFailure::FetchFailed {
                shuffle_id,
                map_index,
                reduce_id,
                message: format!("{} is not reachable from {}", status.executor, self.config.id),
            }),
        }
    }

    fn start_fetch(&self, status: &MapStatus, shuffle_id: u64, map_index: usize, reduce_id: usize) -> SegmentFetch {
        match &self.remote {
            Some(r) if status.executor != self.config.id => r.start(status, shuffle_id, map_index, reduce_id),
            _ => fetch_when_waited(status, shuffle_id, map_index, reduce_id),
        }
    }

    fn cache_get(&self, rdd_id: u64, partition: usize) -> Option<Arc<dyn Any + Send + Sync>> {
        self.blocks.get(rdd_id, partition)
    }

    fn cache_put(&self, rdd_id: u64, partition: usize, block: CachedBlock) {
        self.blocks.put(rdd_id, partition, block)
    }

    fn fetch_cached(&self, location: &CachedBlockLocation) -> std::result::Result<Vec<u8>, String> {
        match &self.remote {
            Some(r) => r.fetch_cached(location),
            None => Err(format!("{} is not reachable from {}", location.executor, self.config.id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_counts_are_remembered_per_shuffle_and_side() {
        let dir = std::env::temp_dir().join(format!("ember-env-test-{}", std::process::id()));
        let env = ExecutorEnv::new(
            ExecutorConfig {
                id: ExecutorId::from("e"),
                cores: 1,
                dir: dir.clone(),
                memory_budget: 1 << 20,
                compress: true,
                block_size: 64 << 10,
                block_address: String::new(),
                spin_wait: std::time::Duration::ZERO,
            },
            None,
        )
        .unwrap();
        assert_eq!(env.expected_keys(3, false), 0);
        env.record_keys(3, false, 1000);
        env.record_keys(3, true, 50);
        env.record_keys(3, false, 1200);
        assert_eq!(
            (env.expected_keys(3, false), env.expected_keys(3, true), env.expected_keys(4, false)),
            (1200, 50, 0)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
