//! What a running task sees: its [`TaskContext`] (ids, kill flag, metrics,
//! error slot) and the [`TaskEnv`] services its executor provides (memory,
//! shuffle files, block cache). Also the stage *sinks* — the last node of
//! every encoded stage — and what a task returns.

use crate::metrics::TaskMetrics;
use ember_common::{Error, ExecutorId, Result, StageId, TaskFailure, TaskId};
use ember_shuffle::{MemoryPool, WriteConfig};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where one map task's output lives and how big each reduce partition is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MapStatus {
    pub executor: ExecutorId,
    /// The address of the executor's block server; empty for in-process executors.
    pub address: String,
    pub partition_lengths: Vec<u64>,
}

/// Map outputs of one shuffle read by a stage, indexed by map partition.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShuffleInput {
    pub shuffle_id: u64,
    pub maps: Vec<MapStatus>,
}

/// An executor holding a cached RDD partition that a stage's tasks may read
/// (Spark's block locations from the block manager master). A task that
/// runs elsewhere reads the partition from that executor's block server
/// instead of recomputing it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedBlockLocation {
    pub rdd_id: u64,
    pub partition: usize,
    pub executor: ExecutorId,
    /// The executor's block server.
    pub address: String,
}

/// A cached partition as the block manager keeps it: the live values, and
/// how to encode them for a task on another executor.
#[derive(Clone)]
pub struct CachedBlock {
    pub values: Arc<dyn Any + Send + Sync>,
    pub encode: fn(&(dyn Any + Send + Sync)) -> std::result::Result<Vec<u8>, String>,
}

/// What a finished task hands back to the driver.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TaskOutput {
    /// A result task's serialized value.
    Result(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A shuffle-map task's output location.
    MapStatus(MapStatus),
    /// A result too large for a status update, held by the executor's block
    /// server until the driver fetches it (only on the wire; the driver
    /// turns it back into `Result` before scheduling sees it).
    Stored { size: u64 },
}

/// A segment fetch in progress (see [`TaskEnv::start_fetch`]); calling it
/// waits for the bytes.
pub type SegmentFetch = Box<dyn FnOnce(&dyn TaskEnv) -> Result<Vec<u8>, TaskFailure> + Send>;

/// A [`SegmentFetch`] that does nothing until waited on, then calls
/// [`TaskEnv::fetch_segment`].
pub fn fetch_when_waited(status: &MapStatus, shuffle_id: u64, map_index: usize, reduce_id: usize) -> SegmentFetch {
    let status = status.clone();
    Box::new(move |env: &dyn TaskEnv| env.fetch_segment(&status, shuffle_id, map_index, reduce_id))
}

/// Services an executor offers to the tasks it runs.
pub trait TaskEnv: Send + Sync {
    fn executor_id(&self) -> &ExecutorId;
    fn memory_pool(&self) -> &Arc<MemoryPool>;
    fn write_config(&self) -> WriteConfig;
    /// Final path of one map output file of this executor.
    fn map_output_path(&self, shuffle_id: u64, map_index: usize) -> PathBuf;
    /// The block server address recorded in this executor's map statuses.
    fn block_address(&self) -> String;
    /// The raw bytes of one reduce partition of one map output, wherever it lives.
    fn fetch_segment(
        &self,
        status: &MapStatus,
        shuffle_id: u64,
        map_index: usize,
        reduce_id: usize,
    ) -> Result<Vec<u8>, TaskFailure>;
    /// Starts fetching a segment and returns what waits for it. Remote
    /// segments are requested right away, so a reduce task can have several
    /// in flight; the default (and local segments) read when waited on.
    fn start_fetch(&self, status: &MapStatus, shuffle_id: u64, map_index: usize, reduce_id: usize) -> SegmentFetch {
        fetch_when_waited(status, shuffle_id, map_index, reduce_id)
    }
    fn cache_get(&self, rdd_id: u64, partition: usize) -> Option<Arc<dyn Any + Send + Sync>>;
    fn cache_put(&self, rdd_id: u64, partition: usize, block: CachedBlock);
    /// The encoded values of a partition cached by another executor
    /// ([`CachedBlock::encode`]), read from its block server.
    fn fetch_cached(&self, location: &CachedBlockLocation) -> std::result::Result<Vec<u8>, String> {
        Err(format!("{} cannot reach {}", self.executor_id(), location.executor))
    }
    /// How many distinct keys the last task aggregating `shuffle_id` on this
    /// side (map or reduce) held; 0 when none did. Tasks of one stage see
    /// similar key counts, so the next one sizes its table once.
    fn expected_keys(&self, _shuffle_id: u64, _reduce_side: bool) -> usize {
        0
    }
    /// Records what [`expected_keys`](Self::expected_keys) returns next.
    fn record_keys(&self, _shuffle_id: u64, _reduce_side: bool, _keys: usize) {}
}

struct TaskShared {
    task_id: TaskId,
    stage_id: StageId,
    stage_attempt: u32,
    partition: usize,
    attempt: u32,
    killed: AtomicBool,
    kill_reason: Mutex<Option<String>>,
    failed: AtomicBool,
    failure: Mutex<Option<TaskFailure>>,
    metrics: TaskMetrics,
    env: Arc<dyn TaskEnv>,
    shuffle_inputs: Arc<Vec<ShuffleInput>>,
    cached_blocks: Arc<Vec<CachedBlockLocation>>,
}

/// A running task's context. Cheap to clone; iterators hold a clone so they
/// can check the kill flag and report errors from deep inside a pipeline.
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<TaskShared>,
}

/// Ids identifying a task attempt.
#[derive(Clone, Copy, Debug)]
pub struct TaskIds {
    pub task_id: TaskId,
    pub stage_id: StageId,
    pub stage_attempt: u32,
    pub partition: usize,
    pub attempt: u32,
}

impl TaskContext {
    /// `cached_blocks` is sorted by (rdd, partition), as the driver ships it.
    pub fn new(
        ids: TaskIds,
        env: Arc<dyn TaskEnv>,
        shuffle_inputs: Arc<Vec<ShuffleInput>>,
        cached_blocks: Arc<Vec<CachedBlockLocation>>,
    ) -> Self {
        TaskContext {
            inner: Arc::new(TaskShared {
                task_id: ids.task_id,
                stage_id: ids.stage_id,
                stage_attempt: ids.stage_attempt,
                partition: ids.partition,
                attempt: ids.attempt,
                killed: AtomicBool::new(false),
                kill_reason: Mutex::new(None),
                failed: AtomicBool::new(false),
                failure: Mutex::new(None),
                metrics: TaskMetrics::default(),
                env,
                shuffle_inputs,
                cached_blocks,
            }),
        }
    }

    pub fn task_id(&self) -> TaskId {
        self.inner.task_id
    }
    pub fn stage_id(&self) -> StageId {
        self.inner.stage_id
    }
    pub fn stage_attempt(&self) -> u32 {
        self.inner.stage_attempt
    }
    /// The partition this task computes.
    pub fn partition_id(&self) -> usize {
        self.inner.partition
    }
    /// 0 for the first attempt of this task, 1 for the first retry, ...
    pub fn attempt_number(&self) -> u32 {
        self.inner.attempt
    }
    pub fn env(&self) -> &Arc<dyn TaskEnv> {
        &self.inner.env
    }
    pub fn metrics(&self) -> &TaskMetrics {
        &self.inner.metrics
    }
    pub fn shuffle_input(&self, shuffle_id: u64) -> Result<&ShuffleInput> {
        self.inner
            .shuffle_inputs
            .iter()
            .find(|s| s.shuffle_id == shuffle_id)
            .ok_or_else(|| Error::Shuffle(format!("no map outputs shipped for shuffle {shuffle_id}")))
    }

    /// The executors known, when the stage was submitted, to cache this
    /// partition of a persisted RDD.
    pub fn cached_block_locations(&self, rdd_id: u64, partition: usize) -> &[CachedBlockLocation] {
        let all = &self.inner.cached_blocks[..];
        let start = all.partition_point(|l| (l.rdd_id, l.partition) < (rdd_id, partition));
        let len = all[start..].partition_point(|l| (l.rdd_id, l.partition) == (rdd_id, partition));
        &all[start..start + len]
    }

    /// Asks the task to stop at the next record boundary.
    pub fn kill(&self, reason: &str) {
        *self.inner.kill_reason.lock() = Some(reason.to_string());
        self.inner.killed.store(true, Ordering::Release);
    }

    pub fn is_killed(&self) -> bool {
        self.inner.killed.load(Ordering::Relaxed)
    }

    /// Records a failure found inside an iterator (which cannot return an
    /// error itself) and makes every interruptible iterator stop. The first
    /// failure wins; the task runner reports it after the sink returns.
    pub fn fail(&self, failure: TaskFailure) {
        let mut slot = self.inner.failure.lock();
        if slot.is_none() {
            *slot = Some(failure);
        }
        self.inner.failed.store(true, Ordering::Release);
    }

    /// True once the task must stop: killed or failed.
    #[inline]
    pub fn should_stop(&self) -> bool {
        self.inner.killed.load(Ordering::Relaxed) || self.inner.failed.load(Ordering::Relaxed)
    }

    /// The failure recorded by [`fail`](Self::fail) or a kill, if any.
    pub fn take_failure(&self) -> Option<TaskFailure> {
        if let Some(f) = self.inner.failure.lock().take() {
            return Some(f);
        }
        if self.is_killed() {
            let reason = self.inner.kill_reason.lock().clone().unwrap_or_default();
            return Some(TaskFailure::Killed { reason });
        }
        None
    }

    /// Wraps an iterator so it stops early when the task is killed or failed.
    pub fn interruptible<I: Iterator>(&self, iter: I) -> Interruptible<I> {
        Interruptible { iter, ctx: self.clone() }
    }
}

impl TaskContext {
    /// Adapts a record iterator for the shuffle layer, which takes fallible
    /// input: if the task was killed or failed while the iterator ran, a final
    /// `Err` makes the consumer abort instead of publishing partial output.
    pub fn checked<I: Iterator>(&self, iter: I) -> Checked<I> {
        Checked { iter, ctx: self.clone(), finished: false }
    }

    /// [`checked`](Self::checked) for a stage's pipeline, which the shuffle
    /// then pulls a batch at a time (or a record at a time, from a batch
    /// pulled and buffered here).
    pub fn checked_batches<T>(&self, iter: crate::BoxIter<T>) -> CheckedBatches<T> {
        CheckedBatches { iter, ctx: self.clone(), finished: false, rest: Vec::new().into_iter() }
    }
}

/// See [`TaskContext::checked_batches`]: the stop flags are read once, when
/// the input ends.
pub struct CheckedBatches<T> {
    iter: crate::BoxIter<T>,
    ctx: TaskContext,
    finished: bool,
    /// The rest of the batch [`next_record`](ember_shuffle::RecordInput::next_record)
    /// pulled. A fresh vector per batch costs one allocation per
    /// [`RECORD_BATCH`] records, less than moving records within a reused one.
    rest: std::vec::IntoIter<T>,
}

/// Records [`CheckedBatches::next_record`] pulls at a time.
const RECORD_BATCH: usize = 64;

impl<T> ember_shuffle::RecordInput<T> for CheckedBatches<T> {
    fn next_batch(&mut self, out: &mut Vec<T>, max: usize) -> std::result::Result<(), ember_shuffle::Error> {
        let before = out.len();
        self.iter.next_batch(out, max);
        if out.len() == before && !std::mem::replace(&mut self.finished, true) && self.ctx.should_stop() {
            return Err(ember_shuffle::Error::upstream(std::io::Error::other("task stopped")));
        }
        Ok(())
    }

    #[inline]
    fn next_record(&mut self) -> std::result::Result<Option<T>, ember_shuffle::Error> {
        if let Some(x) = self.rest.next() {
            return Ok(Some(x));
        }
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        self.next_batch(&mut batch, RECORD_BATCH)?;
        self.rest = batch.into_iter();
        Ok(self.rest.next())
    }
}

/// See [`TaskContext::checked`]. One branch per record on the hot path; the
/// stop flags are read once, when the input ends.
pub struct Checked<I> {
    iter: I,
    ctx: TaskContext,
    finished: bool,
}

impl<I: Iterator> Iterator for Checked<I> {
    type Item = Result<I::Item, ember_shuffle::Error>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self.iter.next() {
            Some(x) => Some(Ok(x)),
            None if !self.finished => {
                self.finished = true;
                self.ctx
                    .should_stop()
                    .then(|| Err(ember_shuffle::Error::upstream(std::io::Error::other("task stopped"))))
            }
            None => None,
        }
    }
}

/// An iterator that checks the task's kill/fail flags at every record.
pub struct Interruptible<I> {
    iter: I,
    ctx: TaskContext,
}

impl<I: Iterator> Iterator for Interruptible<I> {
    type Item = I::Item;
    #[inline]
    fn next(&mut self) -> Option<I::Item> {
        if self.ctx.should_stop() {
            return None;
        }
        self.iter.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.iter.size_hint().1)
    }
}

/// The last node of an encoded stage: what a task of that stage does.
pub trait StageSink: Send + Sync {
    fn run(&self, ctx: &TaskContext) -> Result<TaskOutput>;
}

/// Unwraps a decoded stage root into its sink.
pub fn sink_of(node: &crate::codec::AnyNode) -> Result<Arc<dyn StageSink>> {
    node.downcast_ref::<Arc<dyn StageSink>>().cloned().ok_or_else(|| Error::Codec("stage root is not a sink".into()))
}

/// The driver's instruction to run one task attempt. The stage itself travels
/// separately, once per executor per stage attempt, identified by its hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskDescription {
    pub task_id: TaskId,
    pub stage_id: StageId,
    pub stage_attempt: u32,
    pub partition: usize,
    pub attempt: u32,
    pub payload_hash: [u8; 32],
}

/// A task attempt's state, as reported by its executor (`StatusUpdate`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TaskState {
    Running,
    Finished { output: TaskOutput, metrics: crate::metrics::TaskMetricsSnapshot },
    Failed { failure: TaskFailure, metrics: crate::metrics::TaskMetricsSnapshot },
}

/// Everything an executor needs to run any task of one stage attempt: the
/// encoded stage, the locations of the map outputs it reads, and those of
/// the cached partitions it may read (sorted by rdd and partition).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageAttempt {
    pub blob: crate::codec::StageBlob,
    pub shuffle_inputs: Vec<ShuffleInput>,
    pub cached_blocks: Vec<CachedBlockLocation>,
}

/// A [`StageAttempt`] encoded once, with its content hash.
#[derive(Debug)]
pub struct StagePayload {
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
}

/// A payload's content hash: SHA-256, not BLAKE3. Most payloads are a few
/// hundred bytes, where BLAKE3 cannot use its parallelism and SHA-256 has
/// the CPU's SHA instructions: 103 bytes (a tiny job's stage) hash in 75 ns
/// against 185 ns, 1,000 bytes in 530 against 1,403 ns. Every stage pays it
/// once in the driver and once per executor.
fn content_hash(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

impl StagePayload {
    pub fn encode(attempt: &StageAttempt) -> Result<Self> {
        let bytes = postcard::to_allocvec(attempt).map_err(|e| Error::Codec(format!("encoding stage attempt: {e}")))?;
        Ok(StagePayload { hash: content_hash(&bytes), bytes })
    }

    /// Decodes and verifies the hash the driver announced.
    pub fn decode(bytes: &[u8], expected_hash: &[u8; 32]) -> Result<StageAttempt> {
        if &content_hash(bytes) != expected_hash {
            return Err(Error::Codec("stage payload does not match its hash".into()));
        }
        postcard::from_bytes(bytes).map_err(|e| Error::Codec(format!("malformed stage payload: {e}")))
    }
}
