//! A [`TaskEnv`] for unit tests of RDDs: no files and no network. Shuffle
//! segments come from memory, with a log of when each fetch starts and is
//! waited on; cached partitions live in a map; other executors' cached
//! partitions are answered from `remote`, with a log of whom was asked.

use crate::task::{CachedBlock, CachedBlockLocation, MapStatus, SegmentFetch, TaskEnv};
use ember_common::{ExecutorId, TaskFailure};
use ember_shuffle::{MemoryPool, WriteConfig};
use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub(crate) struct TestEnv {
    pub id: ExecutorId,
    pub pool: Arc<MemoryPool>,
    /// Map index → the reduce segment a fetch returns.
    pub segments: Vec<Vec<u8>>,
    /// "start M" / "wait M" for each segment fetch.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Executor → the encoded block it answers with (absent: unreachable).
    pub remote: HashMap<String, Vec<u8>>,
    pub local: Mutex<HashMap<(u64, usize), CachedBlock>>,
    /// The executors asked for a cached partition, in order.
    pub fetched: Mutex<Vec<String>>,
}

impl TestEnv {
    pub fn new(id: &str) -> TestEnv {
        TestEnv {
            id: ExecutorId::from(id),
            pool: MemoryPool::new(1 << 20),
            segments: Vec::new(),
            log: Arc::default(),
            remote: HashMap::new(),
            local: Mutex::default(),
            fetched: Mutex::default(),
        }
    }
}

impl TaskEnv for TestEnv {
    fn executor_id(&self) -> &ExecutorId {
        &self.id
    }
    fn memory_pool(&self) -> &Arc<MemoryPool> {
        &self.pool
    }
    fn write_config(&self) -> WriteConfig {
        WriteConfig::new(std::env::temp_dir())
    }
    fn map_output_path(&self, _: u64, _: usize) -> PathBuf {
        unreachable!("test environments write no map outputs")
    }
    fn block_address(&self) -> String {
        String::new()
    }
    fn fetch_segment(&self, _: &MapStatus, _: u64, map: usize, _: usize) -> Result<Vec<u8>, TaskFailure> {
        Ok(self.segments[map].clone())
    }
    fn start_fetch(&self, _: &MapStatus, _: u64, map: usize, _: usize) -> SegmentFetch {
        self.log.lock().push(format!("start {map}"));
        let (log, bytes) = (self.log.clone(), self.segments[map].clone());
        Box::new(move |_: &dyn TaskEnv| {
            log.lock().push(format!("wait {map}"));
            Ok(bytes)
        })
    }
    fn cache_get(&self, rdd: u64, partition: usize) -> Option<Arc<dyn Any + Send + Sync>> {
        self.local.lock().get(&(rdd, partition)).map(|b| b.values.clone())
    }
    fn cache_put(&self, rdd: u64, partition: usize, block: CachedBlock) {
        self.local.lock().insert((rdd, partition), block);
    }
    fn fetch_cached(&self, location: &CachedBlockLocation) -> Result<Vec<u8>, String> {
        self.fetched.lock().push(location.executor.as_str().to_string());
        self.remote.get(location.executor.as_str()).cloned().ok_or_else(|| "unreachable".to_string())
    }
}
