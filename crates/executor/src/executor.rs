//! [`Executor`]: `launch_task`, `kill_task`, `release_stage`, `stop` — the
//! seeds' `Executor.launchTask` + `TaskRunner`. Each task attempt:
//!
//! 1. reports `Running`;
//! 2. decodes its stage (once per stage attempt per executor, shared by all
//!    its tasks; the decode time is charged to the task that paid it);
//! 3. runs the stage's sink under `catch_unwind`, so a panic in user code
//!    becomes a task failure carrying the panic message;
//! 4. reports `Finished` with its output, or `Failed` with a structured
//!    reason (an error recorded inside the pipeline, such as a fetch
//!    failure, wins over the error it caused downstream), plus metrics.

use crate::env::{ExecutorConfig, ExecutorEnv, RemoteFetcher};
use crate::pool::{Inbox, TaskPool};
use ember_common::{Result, TaskFailure, TaskId};
use ember_core::codec::decode_stage;
use ember_core::metrics::TaskMetricsSnapshot;
use ember_core::task::{
    sink_of, CachedBlockLocation, ShuffleInput, StagePayload, StageSink, TaskContext, TaskDescription, TaskEnv,
    TaskIds, TaskOutput, TaskState,
};
use foldhash::{HashMap, HashMapExt, HashSet};
use parking_lot::Mutex;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Where an executor sends status updates (the driver, locally or over RPC).
pub trait ExecutorBackend: Send + Sync {
    fn status_update(&self, task_id: TaskId, state: TaskState);
    /// Sends the updates given so far. The executor calls it when no other
    /// task is waiting to start, so a run of short tasks reports in batches
    /// while a lone task's updates leave at once. Backends that deliver at
    /// once need not implement it.
    fn flush(&self) {}
    /// Sends the updates given so far within a millisecond, unless a
    /// [`flush`](Self::flush) comes first. A task's `Running` waits this
    /// way; a backend may leave it out if the task's end comes first.
    fn flush_soon(&self) {
        self.flush();
    }
}

struct DecodedStage {
    sink: Arc<dyn StageSink>,
    shuffle_inputs: Arc<Vec<ShuffleInput>>,
    cached_blocks: Arc<Vec<CachedBlockLocation>>,
}

struct StageEntry {
    payload: Arc<StagePayload>,
    decoded: OnceLock<std::result::Result<Arc<DecodedStage>, String>>,
}

#[derive(Default)]
struct Running {
    contexts: HashMap<TaskId, TaskContext>,
    /// Kills that arrived before the task started.
    killed_early: HashMap<TaskId, String>,
    queued: HashSet<TaskId>,
}

struct Inner {
    env: Arc<ExecutorEnv>,
    backend: Arc<dyn ExecutorBackend>,
    stages: Mutex<HashMap<[u8; 32], Arc<StageEntry>>>,
    running: Mutex<Running>,
}

pub struct Executor {
    inner: Arc<Inner>,
    pool: Mutex<Option<TaskPool>>,
}

impl Executor {
    /// `inbox`: what idle task threads read besides the task queue (an
    /// executor process's connection to the driver).
    pub fn new(
        config: ExecutorConfig,
        backend: Arc<dyn ExecutorBackend>,
        remote: Option<Arc<dyn RemoteFetcher>>,
        inbox: Option<Arc<dyn Inbox>>,
    ) -> Result<Self> {
        let (cores, spin_wait) = (config.cores, config.spin_wait);
        let name = format!("executor-{}", config.id.0);
        let env = Arc::new(ExecutorEnv::new(config, remote)?);
        let pool = TaskPool::new(&name, cores, spin_wait, inbox)
            .map_err(|e| ember_common::Error::io("cannot start task threads", e))?;
        Ok(Executor {
            inner: Arc::new(Inner {
                env,
                backend,
                stages: Mutex::new(HashMap::new()),
                running: Mutex::new(Running::default()),
            }),
            pool: Mutex::new(Some(pool)),
        })
    }

    pub fn env(&self) -> &Arc<ExecutorEnv> {
        &self.inner.env
    }

    /// Queues a task. `payload` must accompany the first task of each stage
    /// attempt this executor sees.
    pub fn launch_task(&self, task: TaskDescription, payload: Option<Arc<StagePayload>>) {
        if let Some(p) = payload {
            self.inner
                .stages
                .lock()
                .entry(p.hash)
                .or_insert_with(|| Arc::new(StageEntry { payload: p, decoded: OnceLock::new() }));
        }
        self.inner.running.lock().queued.insert(task.task_id);
        let inner = self.inner.clone();
        let pool = self.pool.lock();
        match &*pool {
            Some(pool) => pool.execute(move || inner.run_task(task)),
            None => {
                self.inner.backend.status_update(
                    task.task_id,
                    TaskState::Failed {
                        failure: TaskFailure::Error { message: "executor is stopped".into() },
                        metrics: TaskMetricsSnapshot::default(),
                    },
                );
                self.inner.backend.flush();
            }
        }
    }

    /// True when every task thread has been running one task for at least
    /// `d` (so none is free to read the inbox).
    pub fn all_busy_for(&self, d: std::time::Duration) -> bool {
        self.pool.lock().as_ref().is_some_and(|p| p.all_busy_for(d))
    }

    /// See [`TaskPool::wake_a_sleeper`].
    pub fn wake_idle_reader(&self) {
        if let Some(p) = self.pool.lock().as_ref() {
            p.wake_a_sleeper();
        }
    }

    /// Asks a task to stop at its next record boundary.
    pub fn kill_task(&self, task_id: TaskId, reason: &str) {
        let mut r = self.inner.running.lock();
        if let Some(ctx) = r.contexts.get(&task_id) {
            ctx.kill(reason);
        } else if r.queued.contains(&task_id) {
            r.killed_early.insert(task_id, reason.to_string());
        }
    }

    /// Forgets a finished stage attempt's payload.
    pub fn release_stage(&self, hash: &[u8; 32]) {
        self.inner.stages.lock().remove(hash);
    }

    pub fn num_cached_stages(&self) -> usize {
        self.inner.stages.lock().len()
    }

    /// Kills running tasks, waits for the threads, removes the executor's files.
    pub fn stop(&self) {
        {
            let r = self.inner.running.lock();
            for ctx in r.contexts.values() {
                ctx.kill("executor stopping");
            }
        }
        // Not under the lock: a task thread handling the driver's last
        // messages may still queue a task while the pool drains.
        let pool = self.pool.lock().take();
        if let Some(mut pool) = pool {
            pool.shutdown();
        }
        let _ = std::fs::remove_dir_all(self.inner.env.dir());
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn decode(&self, hash: &[u8; 32]) -> std::result::Result<Arc<DecodedStage>, String> {
        let entry = self
            .stages
            .lock()
            .get(hash)
            .cloned()
            .ok_or_else(|| "stage payload was never received by this executor".to_string())?;
        entry
            .decoded
            .get_or_init(|| {
                let attempt = StagePayload::decode(&entry.payload.bytes, hash).map_err(|e| e.to_string())?;
                let root = decode_stage(&attempt.blob).map_err(|e| e.to_string())?;
                let sink = sink_of(&root).map_err(|e| e.to_string())?;
                Ok(Arc::new(DecodedStage {
                    sink,
                    shuffle_inputs: Arc::new(attempt.shuffle_inputs),
                    cached_blocks: Arc::new(attempt.cached_blocks),
                }))
            })
            .clone()
    }

    /// Sends the updates given so far unless another task is about to start
    /// (`waiting` counts the calling task if it is still queued).
    fn flush_unless_busy(&self, waiting: usize) {
        if self.running.lock().queued.len() <= waiting {
            self.backend.flush();
        }
    }

    fn run_task(self: Arc<Self>, task: TaskDescription) {
        let task_id = task.task_id;
        self.backend.status_update(task_id, TaskState::Running);
        self.backend.flush_soon();
        let decode_start = Instant::now();
        let stage = self.decode(&task.payload_hash);
        let decode_time_us = decode_start.elapsed().as_micros() as u64;
        let stage = match stage {
            Ok(s) => s,
            Err(message) => {
                self.running.lock().queued.remove(&task_id);
                let metrics = TaskMetricsSnapshot { decode_time_us, ..Default::default() };
                let failure = TaskFailure::Error { message: format!("cannot decode task: {message}") };
                self.backend.status_update(task_id, TaskState::Failed { failure, metrics });
                self.flush_unless_busy(0);
                return;
            }
        };
        let env: Arc<dyn TaskEnv> = self.env.clone();
        let ctx = TaskContext::new(
            TaskIds {
                task_id,
                stage_id: task.stage_id,
                stage_attempt: task.stage_attempt,
                partition: task.partition,
                attempt: task.attempt,
            },
            env,
            stage.shuffle_inputs.clone(),
            stage.cached_blocks.clone(),
        );
        {
            let mut r = self.running.lock();
            r.queued.remove(&task_id);
            if let Some(reason) = r.killed_early.remove(&task_id) {
                ctx.kill(&reason);
            }
            r.contexts.insert(task_id, ctx.clone());
        }
        let run_start = Instant::now();
        let outcome = if ctx.is_killed() {
            Ok(Err(ember_common::Error::Stopped("killed before start".into())))
        } else {
            catch_unwind(AssertUnwindSafe(|| stage.sink.run(&ctx)))
        };
        let mut metrics = ctx.metrics().snapshot();
        metrics.decode_time_us = decode_time_us;
        metrics.run_time_us = run_start.elapsed().as_micros() as u64;
        let state = match outcome {
            Err(panic) => TaskState::Failed {
                failure: TaskFailure::Panic { message: ember_common::panic_message(&*panic) },
                metrics,
            },
            Ok(result) => match (ctx.take_failure(), result) {
                (Some(failure), _) => TaskState::Failed { failure, metrics },
                (None, Err(e)) => TaskState::Failed { failure: TaskFailure::Error { message: e.to_string() }, metrics },
                (None, Ok(output)) => {
                    if let TaskOutput::Result(bytes) = &output {
                        metrics.result_size = bytes.len() as u64;
                    }
                    TaskState::Finished { output, metrics }
                }
            },
        };
        self.running.lock().contexts.remove(&task_id);
        self.backend.status_update(task_id, state);
        self.flush_unless_busy(0);
    }
}
