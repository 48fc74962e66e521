//! The DAG scheduler: turns a job into stages and decides what to run next.
//!
//! A job is a *result stage* over the action's RDD; every shuffle dependency
//! reachable through narrow dependencies becomes a parent *shuffle-map stage*
//! (shared by every job that needs the same shuffle). A stage is submitted
//! once all its parents' map outputs are available; missing parents are
//! submitted first. Map outputs live in the [`MapOutputTracker`] beyond the
//! jobs that made them, so a later action on the same shuffled RDD skips the
//! map stage.
//!
//! Stage lifecycle: `created → waiting (parents missing) → running (task set
//! submitted) → done`, or `running → failed (fetch failure) → resubmitted`.
//!
//! This is a pure state machine: [`DagScheduler::handle`] takes a
//! [`DagEvent`] and the current time and returns [`DagAction`]s. It performs
//! no I/O, never sleeps and never reads a clock.

use crate::listener::ListenerEvent;
use ember_common::{Error, ExecutorId, JobId, ShuffleId, StageId, TaskFailure};
use ember_core::codec::EncodableNode;
use ember_core::shuffle_dep::ShuffleDependencyBase;
use ember_core::task::{CachedBlockLocation, MapStatus, ShuffleInput, TaskOutput};
use ember_core::{Dependency, RddBase};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What a stage's tasks produce.
#[derive(Clone)]
pub enum StageKind {
    ShuffleMap(Arc<dyn ShuffleDependencyBase>),
    Result { job_id: JobId },
}

struct Stage {
    id: StageId,
    rdd: Arc<dyn RddBase>,
    kind: StageKind,
    /// The node that ends this stage's encoded lineage.
    sink: Arc<dyn EncodableNode>,
    parents: Vec<StageId>,
    /// Number of attempts made so far; the latest is `attempts - 1`.
    attempts: u32,
    /// Partitions of the latest attempt still to finish.
    pending: HashSet<usize>,
    jobs: HashSet<JobId>,
    consecutive_fetch_failures: u32,
}

struct ActiveJob {
    /// RDD partitions the job computes, by output index.
    partitions: Vec<usize>,
    /// Output index of each RDD partition (a job can have 10,000s of tasks).
    index_of: HashMap<usize, usize>,
    finished: Vec<bool>,
    num_finished: usize,
}

/// Registered map outputs, by shuffle and map partition.
#[derive(Default)]
pub struct MapOutputTracker {
    outputs: HashMap<ShuffleId, Vec<Option<MapStatus>>>,
}

impl MapOutputTracker {
    fn register_shuffle(&mut self, shuffle: ShuffleId, num_maps: usize) {
        self.outputs.entry(shuffle).or_insert_with(|| vec![None; num_maps]);
    }
    fn register(&mut self, shuffle: ShuffleId, map: usize, status: MapStatus) {
        if let Some(v) = self.outputs.get_mut(&shuffle) {
            v[map] = Some(status);
        }
    }
    fn unregister(&mut self, shuffle: ShuffleId, map: usize) {
        if let Some(slot) = self.outputs.get_mut(&shuffle).and_then(|v| v.get_mut(map)) {
            *slot = None;
        }
    }
    /// Forgets every output held by `executor`; returns the shuffles affected.
    fn remove_executor(&mut self, executor: &ExecutorId) -> Vec<ShuffleId> {
        let mut hit = Vec::new();
        for (s, v) in self.outputs.iter_mut() {
            for slot in v.iter_mut() {
                if slot.as_ref().is_some_and(|m| &m.executor == executor) {
                    *slot = None;
                    hit.push(*s);
                }
            }
        }
        hit
    }
    pub fn is_available(&self, shuffle: ShuffleId) -> bool {
        self.outputs.get(&shuffle).is_some_and(|v| v.iter().all(Option::is_some))
    }
    pub fn missing(&self, shuffle: ShuffleId) -> Vec<usize> {
        self.outputs
            .get(&shuffle)
            .map(|v| v.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| i).collect())
            .unwrap_or_default()
    }
    fn input(&self, shuffle: ShuffleId) -> Option<ShuffleInput> {
        let v = self.outputs.get(&shuffle)?;
        let maps = v.iter().cloned().collect::<Option<Vec<_>>>()?;
        Some(ShuffleInput { shuffle_id: shuffle.0, maps })
    }
}

/// A task set to hand to the task scheduler.
pub struct TaskSetSpec {
    pub stage_id: StageId,
    pub stage_attempt: u32,
    /// FIFO priority: the earliest job that needs this stage.
    pub job_id: JobId,
    pub sink: Arc<dyn EncodableNode>,
    pub partitions: Vec<usize>,
    /// Per partition, the executors holding a cached partition its task will
    /// read (an empty list: no preference; an empty vector: none at all).
    pub preferred: Vec<Vec<ExecutorId>>,
    pub shuffle_inputs: Vec<ShuffleInput>,
    /// Out-of-process executors caching partitions the tasks may read,
    /// sorted by (rdd, partition): a task placed elsewhere reads them there.
    pub cached_blocks: Vec<CachedBlockLocation>,
}

pub enum DagEvent {
    JobSubmitted {
        job_id: JobId,
        rdd: Arc<dyn RddBase>,
        sink: Arc<dyn EncodableNode>,
        partitions: Vec<usize>,
    },
    TaskSucceeded {
        stage_id: StageId,
        stage_attempt: u32,
        partition: usize,
        output: TaskOutput,
    },
    /// A reducer could not read a map output.
    FetchFailed {
        stage_id: StageId,
        stage_attempt: u32,
        shuffle_id: ShuffleId,
        map_index: usize,
        message: String,
    },
    /// A task set gave up (a task failed `maxFailures` times, or it could not be encoded).
    TaskSetFailed {
        stage_id: StageId,
        stage_attempt: u32,
        reason: String,
    },
    JobCancelled {
        job_id: JobId,
        reason: String,
    },
    /// An executor registered; `block_address` is empty for the in-process one.
    ExecutorAdded {
        executor: ExecutorId,
        block_address: String,
    },
    ExecutorLost {
        executor: ExecutorId,
    },
    /// A task on `executor` stored these `(rdd, partition)` blocks in its cache.
    BlocksCached {
        executor: ExecutorId,
        blocks: Vec<(u64, u32)>,
    },
    /// `unpersist`: executors drop the RDD's cached partitions.
    RddUnpersisted {
        rdd: u64,
    },
}

pub enum DagAction {
    SubmitTaskSet(TaskSetSpec),
    /// Stop launching tasks of this stage attempt (and kill running ones if asked).
    CancelTaskSet {
        stage_id: StageId,
        stage_attempt: u32,
        kill_running: bool,
    },
    TaskResult {
        job_id: JobId,
        output_index: usize,
        bytes: Vec<u8>,
    },
    JobSucceeded {
        job_id: JobId,
    },
    JobFailed {
        job_id: JobId,
        error: Error,
    },
    Event(ListenerEvent),
}

pub struct DagScheduler {
    next_stage_id: u64,
    stages: HashMap<StageId, Stage>,
    shuffle_to_stage: HashMap<ShuffleId, StageId>,
    jobs: HashMap<JobId, ActiveJob>,
    waiting: BTreeSet<StageId>,
    running: BTreeSet<StageId>,
    failed: BTreeSet<StageId>,
    pub map_outputs: MapOutputTracker,
    /// Where cached RDD partitions live: `(rdd, partition)` → executors
    /// (Spark's `cacheLocs`, fed by tasks' reported blocks).
    cache_locs: HashMap<(u64, usize), Vec<ExecutorId>>,
    /// Block servers of live out-of-process executors.
    block_addresses: HashMap<ExecutorId, String>,
    max_consecutive_attempts: u32,
    /// Stages forgotten since [`take_released`](Self::take_released).
    released: Vec<Stage>,
}

/// Stages the DAG scheduler has forgotten. Dropping the last reference to
/// a lineage drops it recursively, one stack frame per RDD, so whoever
/// takes these decides which thread's stack that happens on.
pub struct Released(Vec<Stage>);

impl Released {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl DagScheduler {
    pub fn new(max_consecutive_attempts: u32) -> Self {
        DagScheduler {
            next_stage_id: 0,
            stages: HashMap::new(),
            shuffle_to_stage: HashMap::new(),
            jobs: HashMap::new(),
            waiting: BTreeSet::new(),
            running: BTreeSet::new(),
            failed: BTreeSet::new(),
            map_outputs: MapOutputTracker::default(),
            cache_locs: HashMap::new(),
            block_addresses: HashMap::new(),
            max_consecutive_attempts: max_consecutive_attempts.max(1),
            released: Vec::new(),
        }
    }

    pub fn active_jobs(&self) -> usize {
        self.jobs.len()
    }

    pub fn num_stages(&self) -> usize {
        self.stages.len()
    }

    pub fn is_running(&self, stage: StageId) -> bool {
        self.running.contains(&stage)
    }

    pub fn handle(&mut self, event: DagEvent, now: u64) -> Vec<DagAction> {
        let mut out = Vec::with_capacity(2);
        match event {
            DagEvent::JobSubmitted { job_id, rdd, sink, partitions } => {
                self.job_submitted(job_id, rdd, sink, partitions, now, &mut out)
            }
            DagEvent::TaskSucceeded { stage_id, stage_attempt, partition, output } => {
                self.task_succeeded(stage_id, stage_attempt, partition, output, now, &mut out)
            }
            DagEvent::FetchFailed { stage_id, stage_attempt, shuffle_id, map_index, message } => {
                self.fetch_failed(stage_id, stage_attempt, shuffle_id, map_index, message, now, &mut out)
            }
            DagEvent::TaskSetFailed { stage_id, stage_attempt, reason } => {
                let latest = self.stages.get(&stage_id).map(|s| s.attempts.saturating_sub(1));
                if latest == Some(stage_attempt) {
                    self.abort_stage(stage_id, &format!("Job aborted due to stage failure: {reason}"), now, &mut out);
                }
            }
            DagEvent::JobCancelled { job_id, reason } => {
                if self.jobs.contains_key(&job_id) {
                    self.finish_job(job_id, Err(Error::Cancelled { reason }), now, &mut out);
                }
            }
            DagEvent::ExecutorAdded { executor, block_address } => {
                if !block_address.is_empty() {
                    self.block_addresses.insert(executor, block_address);
                }
            }
            DagEvent::ExecutorLost { executor } => {
                self.block_addresses.remove(&executor);
                self.cache_locs.retain(|_, execs| {
                    execs.retain(|e| *e != executor);
                    !execs.is_empty()
                });
                if !self.map_outputs.remove_executor(&executor).is_empty() {
                    self.resubmit_waiting(now, &mut out);
                }
            }
            DagEvent::BlocksCached { executor, blocks } => {
                for (rdd, partition) in blocks {
                    let execs = self.cache_locs.entry((rdd, partition as usize)).or_default();
                    if !execs.contains(&executor) {
                        execs.push(executor.clone());
                    }
                }
            }
            DagEvent::RddUnpersisted { rdd } => self.cache_locs.retain(|(r, _), _| *r != rdd),
        }
        out
    }

    /// The persisted RDDs that a task of a stage over `rdd` reads through
    /// one-to-one narrow dependencies (so partition `p` reads their partition
    /// `p`), nearest first. Empty while nothing is cached anywhere.
    fn persisted_in_lineage(&self, rdd: &Arc<dyn RddBase>) -> Vec<u64> {
        let mut persisted = Vec::new();
        if self.cache_locs.is_empty() {
            return persisted;
        }
        let mut visited = HashSet::new();
        let mut stack = vec![rdd.clone()];
        while let Some(r) = stack.pop() {
            if !visited.insert(r.id()) {
                continue;
            }
            if r.persisted() {
                persisted.push(r.id().0);
            }
            if r.narrow_one_to_one() {
                // Reversed, so that the first dependency is searched first.
                for d in r.dependencies().into_iter().rev() {
                    if let Dependency::Narrow(parent) = d {
                        if parent.num_partitions() == r.num_partitions() {
                            stack.push(parent);
                        }
                    }
                }
            }
        }
        persisted
    }

    /// The executors caching a partition that the task for partition `p`
    /// would read, nearest persisted RDD first (Spark's `getPreferredLocs`,
    /// cached locations only). Empty when the lineage reaches no persisted RDD.
    fn preferred_locations(&self, persisted: &[u64], partitions: &[usize]) -> Vec<Vec<ExecutorId>> {
        if persisted.is_empty() {
            return Vec::new();
        }
        partitions
            .iter()
            .map(|&p| persisted.iter().find_map(|r| self.cache_locs.get(&(*r, p)).cloned()).unwrap_or_default())
            .collect()
    }

    /// Every out-of-process executor caching a partition of `persisted` that
    /// the tasks would read, with its block server, sorted by (rdd,
    /// partition): a task that runs elsewhere reads the partition there.
    fn cached_block_locations(&self, persisted: &[u64], partitions: &[usize]) -> Vec<CachedBlockLocation> {
        let mut out = Vec::new();
        if self.block_addresses.is_empty() {
            return out;
        }
        for &rdd_id in persisted {
            for &partition in partitions {
                for executor in self.cache_locs.get(&(rdd_id, partition)).into_iter().flatten() {
                    if let Some(address) = self.block_addresses.get(executor) {
                        let (executor, address) = (executor.clone(), address.clone());
                        out.push(CachedBlockLocation { rdd_id, partition, executor, address });
                    }
                }
            }
        }
        out.sort_by_key(|l| (l.rdd_id, l.partition));
        out
    }

    /// Cached partitions known to the scheduler (for tests and diagnostics).
    pub fn cached_partitions(&self) -> usize {
        self.cache_locs.len()
    }

    fn new_stage(
        &mut self,
        rdd: Arc<dyn RddBase>,
        kind: StageKind,
        sink: Arc<dyn EncodableNode>,
        job: JobId,
    ) -> StageId {
        // Parents first, so they get the lower ids and a job's result stage
        // the highest, as in Spark (`createResultStage`).
        let parents = self.parent_stages(&rdd, job);
        let id = StageId(self.next_stage_id);
        self.next_stage_id += 1;
        let mut jobs = HashSet::new();
        jobs.insert(job);
        self.stages.insert(
            id,
            Stage {
                id,
                rdd,
                kind,
                sink,
                parents,
                attempts: 0,
                pending: HashSet::new(),
                jobs,
                consecutive_fetch_failures: 0,
            },
        );
        id
    }

    /// The shuffle dependencies reachable from `rdd` through narrow dependencies only.
    fn direct_shuffle_deps(rdd: &Arc<dyn RddBase>) -> Vec<Arc<dyn ShuffleDependencyBase>> {
        let mut deps = Vec::new();
        let mut seen_shuffles = HashSet::new();
        let mut visited = HashSet::new();
        let mut stack = vec![rdd.clone()];
        while let Some(r) = stack.pop() {
            if !visited.insert(r.id()) {
                continue;
            }
            for d in r.dependencies() {
                match d {
                    Dependency::Narrow(p) => stack.push(p),
                    Dependency::Shuffle(s) => {
                        if seen_shuffles.insert(s.shuffle_id()) {
                            deps.push(s);
                        }
                    }
                }
            }
        }
        deps
    }

    /// Parent stages of a stage over `rdd`, creating shuffle-map stages (and
    /// their ancestors, deepest first, without recursion) as needed.
    fn parent_stages(&mut self, rdd: &Arc<dyn RddBase>, job: JobId) -> Vec<StageId> {
        let direct = Self::direct_shuffle_deps(rdd);
        // Create missing ancestor stages in post-order with an explicit stack.
        let mut stack: Vec<(Arc<dyn ShuffleDependencyBase>, bool)> =
            direct.iter().map(|d| (d.clone(), false)).collect();
        while let Some((dep, expanded)) = stack.pop() {
            let sid = dep.shuffle_id();
            if let Some(stage) = self.shuffle_to_stage.get(&sid) {
                let stage = *stage;
                self.stages.get_mut(&stage).expect("registered stage").jobs.insert(job);
                continue;
            }
            if !expanded {
                stack.push((dep.clone(), true));
                for p in Self::direct_shuffle_deps(&dep.rdd()) {
                    if !self.shuffle_to_stage.contains_key(&p.shuffle_id()) {
                        stack.push((p, false));
                    }
                }
                continue;
            }
            let map_rdd = dep.rdd();
            self.map_outputs.register_shuffle(sid, map_rdd.num_partitions());
            let sink = dep.sink();
            let id = self.new_stage(map_rdd, StageKind::ShuffleMap(dep), sink, job);
            self.shuffle_to_stage.insert(sid, id);
        }
        direct.iter().map(|d| self.shuffle_to_stage[&d.shuffle_id()]).collect()
    }

    fn job_submitted(
        &mut self,
        job_id: JobId,
        rdd: Arc<dyn RddBase>,
        sink: Arc<dyn EncodableNode>,
        partitions: Vec<usize>,
        now: u64,
        out: &mut Vec<DagAction>,
    ) {
        if partitions.is_empty() {
            out.push(DagAction::Event(ListenerEvent::JobStart { job_id, stage_ids: vec![], time: now }));
            out.push(DagAction::Event(ListenerEvent::JobEnd { job_id, succeeded: true, error: None, time: now }));
            out.push(DagAction::JobSucceeded { job_id });
            return;
        }
        let stage = self.new_stage(rdd, StageKind::Result { job_id }, sink, job_id);
        let n = partitions.len();
        let index_of = partitions.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        self.jobs.insert(job_id, ActiveJob { partitions, index_of, finished: vec![false; n], num_finished: 0 });
        let mut stage_ids: Vec<StageId> =
            self.stages.values().filter(|s| s.jobs.contains(&job_id)).map(|s| s.id).collect();
        stage_ids.sort();
        out.push(DagAction::Event(ListenerEvent::JobStart { job_id, stage_ids, time: now }));
        self.submit_stage(stage, now, out);
    }

    fn missing_parents(&self, stage: StageId) -> Vec<StageId> {
        let s = &self.stages[&stage];
        s.parents
            .iter()
            .copied()
            .filter(|p| match &self.stages[p].kind {
                StageKind::ShuffleMap(dep) => !self.map_outputs.is_available(dep.shuffle_id()),
                StageKind::Result { .. } => true,
            })
            .collect()
    }

    /// Submits `stage`, or its missing ancestors first (worklist, no recursion).
    fn submit_stage(&mut self, stage: StageId, now: u64, out: &mut Vec<DagAction>) {
        let mut work = vec![stage];
        while let Some(id) = work.pop() {
            if !self.stages.contains_key(&id)
                || self.waiting.contains(&id)
                || self.running.contains(&id)
                || self.failed.contains(&id)
            {
                continue;
            }
            let missing = self.missing_parents(id);
            if missing.is_empty() {
                self.submit_missing_tasks(id, now, out);
            } else {
                self.waiting.insert(id);
                work.extend(missing);
            }
        }
    }

    fn first_job(&self, stage: &Stage) -> JobId {
        stage.jobs.iter().min().copied().unwrap_or(JobId(u64::MAX))
    }

    fn submit_missing_tasks(&mut self, id: StageId, now: u64, out: &mut Vec<DagAction>) {
        let (partitions, shuffle_inputs, job_id) = {
            let stage = &self.stages[&id];
            let partitions: Vec<usize> = match &stage.kind {
                StageKind::ShuffleMap(dep) => self.map_outputs.missing(dep.shuffle_id()),
                StageKind::Result { job_id } => {
                    let job = &self.jobs[job_id];
                    job.partitions.iter().zip(&job.finished).filter(|(_, f)| !**f).map(|(p, _)| *p).collect()
                }
            };
            let inputs: Vec<ShuffleInput> = Self::direct_shuffle_deps(&stage.rdd)
                .iter()
                .filter_map(|d| self.map_outputs.input(d.shuffle_id()))
                .collect();
            (partitions, inputs, self.first_job(stage))
        };
        let persisted = self.persisted_in_lineage(&self.stages[&id].rdd);
        let preferred = self.preferred_locations(&persisted, &partitions);
        let cached_blocks = self.cached_block_locations(&persisted, &partitions);
        let stage = self.stages.get_mut(&id).expect("stage");
        let attempt = stage.attempts;
        stage.attempts += 1;
        stage.pending = partitions.iter().copied().collect();
        self.running.insert(id);
        out.push(DagAction::Event(ListenerEvent::StageSubmitted {
            stage_id: id,
            attempt,
            name: stage.rdd.name().to_string(),
            num_tasks: partitions.len(),
            time: now,
        }));
        if partitions.is_empty() {
            self.stage_finished(id, now, out);
            return;
        }
        out.push(DagAction::SubmitTaskSet(TaskSetSpec {
            stage_id: id,
            stage_attempt: attempt,
            job_id,
            sink: stage.sink.clone(),
            partitions,
            preferred,
            shuffle_inputs,
            cached_blocks,
        }));
    }

    fn task_succeeded(
        &mut self,
        stage_id: StageId,
        stage_attempt: u32,
        partition: usize,
        output: TaskOutput,
        now: u64,
        out: &mut Vec<DagAction>,
    ) {
        let Some(stage) = self.stages.get_mut(&stage_id) else { return };
        let latest = stage.attempts.saturating_sub(1) == stage_attempt;
        match (&stage.kind, output) {
            (StageKind::Result { job_id }, TaskOutput::Result(bytes)) => {
                let job_id = *job_id;
                if latest {
                    stage.pending.remove(&partition);
                }
                let Some(job) = self.jobs.get_mut(&job_id) else { return };
                let Some(&idx) = job.index_of.get(&partition) else { return };
                if job.finished[idx] {
                    return;
                }
                job.finished[idx] = true;
                job.num_finished += 1;
                out.push(DagAction::TaskResult { job_id, output_index: idx, bytes });
                if job.num_finished == job.partitions.len() {
                    self.running.remove(&stage_id);
                    out.push(DagAction::Event(ListenerEvent::StageCompleted {
                        stage_id,
                        attempt: stage_attempt,
                        failure: None,
                        time: now,
                    }));
                    self.finish_job(job_id, Ok(()), now, out);
                }
            }
            (StageKind::ShuffleMap(dep), TaskOutput::MapStatus(status)) => {
                let sid = dep.shuffle_id();
                self.map_outputs.register(sid, partition, status);
                if latest {
                    stage.pending.remove(&partition);
                }
                if self.running.contains(&stage_id) && stage.pending.is_empty() && latest {
                    self.stage_finished(stage_id, now, out);
                }
            }
            _ => {
                let reason = format!("{stage_id} got a task output of the wrong kind");
                self.abort_stage(stage_id, &reason, now, out);
            }
        }
    }

    /// A shuffle-map stage attempt finished: wake the stages waiting on it.
    fn stage_finished(&mut self, id: StageId, now: u64, out: &mut Vec<DagAction>) {
        self.running.remove(&id);
        let stage = self.stages.get_mut(&id).expect("stage");
        let attempt = stage.attempts.saturating_sub(1);
        if let StageKind::ShuffleMap(dep) = &stage.kind {
            if !self.map_outputs.is_available(dep.shuffle_id()) {
                // Outputs were lost while this attempt ran: run the missing ones again.
                self.submit_stage(id, now, out);
                return;
            }
            stage.consecutive_fetch_failures = 0;
        }
        out.push(DagAction::Event(ListenerEvent::StageCompleted { stage_id: id, attempt, failure: None, time: now }));
        self.resubmit_waiting(now, out);
    }

    /// Re-evaluates every waiting stage: submits those whose parents are now
    /// available, and (re)submits missing parents that nothing is running —
    /// e.g. a map stage that had finished but lost outputs with an executor.
    fn resubmit_waiting(&mut self, now: u64, out: &mut Vec<DagAction>) {
        let waiting: Vec<StageId> = self.waiting.iter().copied().collect();
        for w in waiting {
            self.waiting.remove(&w);
            self.submit_stage(w, now, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fetch_failed(
        &mut self,
        stage_id: StageId,
        stage_attempt: u32,
        shuffle_id: ShuffleId,
        map_index: usize,
        message: String,
        now: u64,
        out: &mut Vec<DagAction>,
    ) {
        let Some(stage) = self.stages.get_mut(&stage_id) else { return };
        if stage.attempts.saturating_sub(1) != stage_attempt {
            return; // a late failure from an attempt already superseded
        }
        self.map_outputs.unregister(shuffle_id, map_index);
        if !self.running.contains(&stage_id) {
            return; // this attempt has already been failed; one resubmission per attempt
        }
        stage.consecutive_fetch_failures += 1;
        let failures = stage.consecutive_fetch_failures;
        self.running.remove(&stage_id);
        out.push(DagAction::CancelTaskSet { stage_id, stage_attempt, kill_running: false });
        out.push(DagAction::Event(ListenerEvent::StageCompleted {
            stage_id,
            attempt: stage_attempt,
            failure: Some(format!("fetch failed: {message}")),
            time: now,
        }));
        if failures >= self.max_consecutive_attempts {
            let reason = format!(
                "{stage_id} (attempt {stage_attempt}) has failed the maximum allowable number of times: {}. \
                 Most recent failure reason: fetch failed for shuffle {} map {map_index}: {message}",
                self.max_consecutive_attempts, shuffle_id.0
            );
            self.abort_stage(stage_id, &reason, now, out);
            return;
        }
        // Resubmit: the parent map stage recomputes only its missing partitions, then this stage reruns.
        if let Some(&map_stage) = self.shuffle_to_stage.get(&shuffle_id) {
            self.running.remove(&map_stage);
        }
        self.submit_stage(stage_id, now, out);
    }

    /// Fails every job that depends on `stage`.
    fn abort_stage(&mut self, stage: StageId, reason: &str, now: u64, out: &mut Vec<DagAction>) {
        let jobs: Vec<JobId> = self.stages.get(&stage).map(|s| s.jobs.iter().copied().collect()).unwrap_or_default();
        let mut jobs = jobs;
        jobs.sort();
        for job in jobs {
            if self.jobs.contains_key(&job) {
                self.finish_job(job, Err(Error::JobAborted { reason: reason.to_string() }), now, out);
            }
        }
    }

    /// The stages forgotten since the last call, for the caller to drop.
    pub fn take_released(&mut self) -> Released {
        Released(std::mem::take(&mut self.released))
    }

    /// Ends a job and forgets stages no other active job needs.
    fn finish_job(&mut self, job_id: JobId, result: Result<(), Error>, now: u64, out: &mut Vec<DagAction>) {
        self.jobs.remove(&job_id);
        let mut orphaned = Vec::new();
        for s in self.stages.values_mut() {
            if s.jobs.remove(&job_id) && s.jobs.is_empty() {
                orphaned.push((s.id, s.attempts.saturating_sub(1)));
            }
        }
        for (id, attempt) in orphaned {
            if self.running.remove(&id) {
                out.push(DagAction::CancelTaskSet { stage_id: id, stage_attempt: attempt, kill_running: true });
            }
            self.waiting.remove(&id);
            self.failed.remove(&id);
            if let Some(stage) = self.stages.remove(&id) {
                if let StageKind::ShuffleMap(dep) = &stage.kind {
                    self.shuffle_to_stage.remove(&dep.shuffle_id());
                }
                self.released.push(stage);
            }
        }
        match result {
            Ok(()) => {
                out.push(DagAction::Event(ListenerEvent::JobEnd { job_id, succeeded: true, error: None, time: now }));
                out.push(DagAction::JobSucceeded { job_id });
            }
            Err(error) => {
                out.push(DagAction::Event(ListenerEvent::JobEnd {
                    job_id,
                    succeeded: false,
                    error: Some(error.to_string()),
                    time: now,
                }));
                out.push(DagAction::JobFailed { job_id, error });
            }
        }
    }
}

/// Converts a task failure into the DAG event it implies, if any.
pub fn fetch_failure_event(stage_id: StageId, stage_attempt: u32, failure: &TaskFailure) -> Option<DagEvent> {
    match failure {
        TaskFailure::FetchFailed { shuffle_id, map_index, message, .. } => Some(DagEvent::FetchFailed {
            stage_id,
            stage_attempt,
            shuffle_id: ShuffleId(*shuffle_id),
            map_index: *map_index,
            message: message.clone(),
        }),
        _ => None,
    }
}
