//! The task scheduler: one task set per stage attempt, offered to executors
//! by free cores, FIFO across jobs (earliest job first, then earliest
//! stage), with per-task retries.
//!
//! Task lifecycle inside a set: `pending → running → succeeded`, or
//! `running → failed → pending` again until it has failed `max_failures`
//! times, which aborts the set (and so its jobs). A fetch failure does not
//! count as a task failure: it turns the set into a *zombie* (no new
//! launches) and is passed to the DAG scheduler, which resubmits the lost map
//! outputs. A killed task is not retried.
//!
//! Executors are offered one task per free core, as in Spark, with one
//! exception for sets of *short* tasks: once a set's last
//! [`SHORT_STREAK`] tasks each ran in under a millisecond, every executor
//! core may hold up to the short-task queue depth of that set's tasks (one
//! running, the rest queued in the executor). A task that short costs less
//! than its round trip through the driver, so one at a time leaves the cores
//! waiting on messages; with a queue, launches and status updates travel in
//! batches. A set's first tasks, and any task that runs a millisecond or more,
//! bring it back to one per core, so long tasks do not queue behind each other
//! on one executor while another idles (but see packing below). A task lost
//! with its executor before it reported `Running` (still queued) is
//! resubmitted without using up one of its attempts.
//!
//! Sets of *tiny* tasks are packed: once the last [`SHORT_STREAK`] tasks of
//! a stage's code (its [shape](ember_core::codec::StageBlob::shape), kept
//! across sets and jobs) each ran in under `ember.scheduler.tinyTaskThreshold`
//! (10 µs), its sets fill one executor, in id order, with up to two tasks per
//! core, before the next executor gets any. Sending a task that short to
//! another executor process costs more than running it after another: a
//! second process wakes up, decodes the stage and answers, and with more
//! polling processes than CPUs it must first be switched in. `local[N]` gets
//! this for free, as one pool thread takes both of a tiny job's tasks. If a
//! packed set's tasks turn out long this time, at most one task per core
//! waits behind a long one, and the first long task ends the packing.
//!
//! Locality (Spark's delay scheduling, with one level below "any"): a task
//! that reads a cached partition prefers the executors caching it. An
//! executor's offer goes first to a task preferring it, then to a task with
//! no preference; a task preferring *other* executors waits until the set has
//! gone `ember.locality.wait` without launching a preferred task, then runs
//! anywhere (and recomputes or re-reads what it needs). Preferences for lost
//! executors are dropped.
//!
//! Pure state machine, like the DAG scheduler: calls in, launches and events out.

use crate::dag::DagEvent;
use crate::listener::ListenerEvent;
use ember_common::{ExecutorId, JobId, StageId, TaskFailure, TaskId};
use ember_core::metrics::TaskMetricsSnapshot;
use ember_core::task::{StagePayload, TaskDescription, TaskState};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// A stage attempt ready to run, with its encoded payload.
pub struct TaskSet {
    pub stage_id: StageId,
    pub stage_attempt: u32,
    pub job_id: JobId,
    pub partitions: Vec<usize>,
    /// Per partition, executors caching data its task reads; shorter than
    /// `partitions` (often empty) when the rest have no preference.
    pub preferred: Vec<Vec<ExecutorId>>,
    pub payload: Arc<StagePayload>,
    /// The stage's [shape](ember_core::codec::StageBlob::shape): sets of
    /// the same shape are expected to run tasks of similar length.
    pub shape: u64,
}

struct TaskSetManager {
    set: TaskSet,
    /// Every pending task, in order; entries already launched are skipped
    /// (`is_pending`), as in the per-executor queues below.
    pending: VecDeque<usize>,
    is_pending: Vec<bool>,
    num_pending: usize,
    /// Whether any task has a preference; if not, only `pending` is used.
    has_prefs: bool,
    /// Pending tasks preferring each executor, and those preferring none alive.
    for_executor: HashMap<ExecutorId, VecDeque<usize>>,
    no_pref: VecDeque<usize>,
    /// When the set last launched a task where it preferred to (or was submitted).
    local_since: u64,
    attempts: Vec<u32>,
    failures: Vec<u32>,
    succeeded: Vec<bool>,
    num_succeeded: usize,
    running: usize,
    zombie: bool,
    /// Consecutive successful tasks of this set that ran in under 1 ms.
    short_streak: usize,
}

/// Consecutive short tasks after which a set's tasks may queue.
pub const SHORT_STREAK: usize = 8;

/// A task whose decode and run took less than this (µs) is *short*.
const SHORT_TASK_US: u64 = 1000;

/// `ember.scheduler.tinyTaskThreshold`'s default, in µs. A task whose
/// decode and run took less is *tiny*: it costs less than sending it to
/// another executor process — a message each way and that process's
/// wake-up, 3–10 µs on the 2-vCPU machines measured.
pub const DEFAULT_TINY_TASK_US: u64 = 10;

/// Tasks of a packed set each core takes: one running, one queued behind it.
const PACKED_PER_CORE: usize = 2;

/// Spark's `spark.locality.wait` default, in ms.
pub const DEFAULT_LOCALITY_WAIT_MS: u64 = 3000;

/// The first entry of `queue` still pending, removed with everything before it.
fn pop_pending(queue: &mut VecDeque<usize>, is_pending: &[bool]) -> Option<usize> {
    while let Some(i) = queue.pop_front() {
        if is_pending[i] {
            return Some(i);
        }
    }
    None
}

impl TaskSetManager {
    /// Makes task `index` pending, queued by its live preferences.
    fn enqueue(&mut self, index: usize, alive: &BTreeMap<ExecutorId, ExecutorSlots>) {
        if self.is_pending[index] {
            return;
        }
        self.is_pending[index] = true;
        self.num_pending += 1;
        self.pending.push_back(index);
        if !self.has_prefs {
            return;
        }
        let mut preferred = false;
        for e in &self.set.preferred[index] {
            if alive.contains_key(e) {
                self.for_executor.entry(e.clone()).or_default().push_back(index);
                preferred = true;
            }
        }
        if !preferred {
            self.no_pref.push_back(index);
        }
    }

    /// The task to launch on `exec` now, if the set has one for it.
    fn next_task(&mut self, exec: &ExecutorId, now: u64, wait: u64) -> Option<usize> {
        let index = if !self.has_prefs {
            pop_pending(&mut self.pending, &self.is_pending)?
        } else if let Some(i) = self.for_executor.get_mut(exec).and_then(|q| pop_pending(q, &self.is_pending)) {
            self.local_since = now;
            i
        } else if let Some(i) = pop_pending(&mut self.no_pref, &self.is_pending) {
            i
        } else if now.saturating_sub(self.local_since) >= wait {
            pop_pending(&mut self.pending, &self.is_pending)?
        } else {
            return None;
        };
        self.is_pending[index] = false;
        self.num_pending -= 1;
        Some(index)
    }

    /// `exec` is gone: its tasks with no other live preference lose theirs.
    fn forget_executor(&mut self, exec: &ExecutorId, alive: &BTreeMap<ExecutorId, ExecutorSlots>) {
        let Some(queue) = self.for_executor.remove(exec) else { return };
        for i in queue {
            if self.is_pending[i] && !self.set.preferred[i].iter().any(|e| alive.contains_key(e)) {
                self.no_pref.push_back(i);
            }
        }
    }

    /// Whether the set has pending tasks that may be waiting for their executors.
    fn waits_for_locality(&self) -> bool {
        self.has_prefs && self.num_pending > 0 && !self.zombie
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.no_pref.clear();
        self.for_executor.clear();
        self.is_pending.iter_mut().for_each(|p| *p = false);
        self.num_pending = 0;
    }
}

struct RunningTask {
    key: (StageId, u32),
    index: usize,
    attempt: u32,
    executor: ExecutorId,
    /// The executor reported it `Running` (it may have sat in the executor's queue until then).
    started: bool,
}

struct ExecutorSlots {
    cores: usize,
    /// Tasks launched there and not yet reported finished (running or queued).
    in_flight: usize,
    payloads: HashSet<[u8; 32]>,
}

/// A task to send to an executor; `payload` is set the first time that
/// executor needs this stage attempt.
pub struct Launch {
    pub executor: ExecutorId,
    pub task: TaskDescription,
    pub payload: Option<Arc<StagePayload>>,
}

/// What the task scheduler asks of the world after a call.
pub enum TsOutput {
    Dag(DagEvent),
    Event(ListenerEvent),
    Kill {
        executor: ExecutorId,
        task_id: TaskId,
    },
    /// The executor may drop its cached copy of a finished stage attempt.
    Release {
        executor: ExecutorId,
        payload_hash: [u8; 32],
    },
}

pub struct TaskScheduler {
    sets: BTreeMap<(JobId, StageId, u32), TaskSetManager>,
    keys: HashMap<(StageId, u32), (JobId, StageId, u32)>,
    executors: BTreeMap<ExecutorId, ExecutorSlots>,
    running: HashMap<TaskId, RunningTask>,
    next_task_id: u64,
    max_failures: u32,
    short_task_queue: usize,
    locality_wait: u64,
    /// Whether to produce `TaskStart`/`TaskEnd` listener events.
    task_events: bool,
    /// Tasks that ran in less than this many µs are tiny (0: none is).
    tiny_task_us: u64,
    tiny_shapes: TinyShapes,
}

impl TaskScheduler {
    /// One task per free core at all times (Spark's rule).
    pub fn new(max_failures: u32) -> Self {
        TaskScheduler {
            sets: BTreeMap::new(),
            keys: HashMap::new(),
            executors: BTreeMap::new(),
            running: HashMap::new(),
            next_task_id: 0,
            max_failures: max_failures.max(1),
            short_task_queue: 1,
            locality_wait: DEFAULT_LOCALITY_WAIT_MS,
            task_events: true,
            tiny_task_us: DEFAULT_TINY_TASK_US,
            tiny_shapes: TinyShapes::default(),
        }
    }

    /// Turns the per-task listener events on or off. The event loop turns
    /// them off while no listener is registered: a 10,000-task job would
    /// otherwise build, move and drop 20,000 events of ~180 bytes.
    pub fn set_task_events(&mut self, on: bool) {
        self.task_events = on;
    }

    /// How long a set keeps a task for the executors it prefers before
    /// running it anywhere (`ember.locality.wait`, ms; 0 still prefers them
    /// when they have a free core).
    pub fn with_locality_wait(mut self, ms: u64) -> Self {
        self.locality_wait = ms;
        self
    }

    /// When a set holding tasks back for locality may run them anywhere, if
    /// that is later than `now` and a core is free to run them.
    pub fn locality_deadline(&self, now: u64) -> Option<u64> {
        if self.total_free_cores() == 0 {
            return None;
        }
        self.sets
            .values()
            .filter(|t| t.waits_for_locality())
            .map(|t| t.local_since.saturating_add(self.locality_wait))
            .filter(|&d| d > now)
            .min()
    }

    /// True if a set's locality wait ended after `since` and by `now`, and a
    /// core is free to run its tasks elsewhere: offers made at `since` did
    /// not see it, so new ones are due at once.
    pub fn locality_expired(&self, since: u64, now: u64) -> bool {
        self.total_free_cores() > 0
            && self.sets.values().any(|t| {
                let ends = t.local_since.saturating_add(self.locality_wait);
                t.waits_for_locality() && since < ends && ends <= now
            })
    }

    /// Whether any set has pending tasks with preferences (a cheap test
    /// before reading the clock for [`Self::locality_deadline`]).
    pub fn holds_tasks_for_locality(&self) -> bool {
        self.sets.values().any(|t| t.waits_for_locality())
    }

    /// Lets each core hold up to `depth` tasks of a set of short tasks
    /// (`ember.scheduler.shortTaskQueueDepth`; 1 turns queueing off).
    pub fn with_short_task_queue(mut self, depth: usize) -> Self {
        self.short_task_queue = depth.max(1);
        self
    }

    /// Tasks that ran in less than `us` µs are tiny, and sets of a stage
    /// shape whose last tasks were tiny are packed
    /// (`ember.scheduler.tinyTaskThreshold`; 0 turns packing off).
    pub fn with_tiny_task_threshold(mut self, us: u64) -> Self {
        self.tiny_task_us = us;
        self
    }

    pub fn add_executor(&mut self, id: ExecutorId, cores: usize) {
        self.executors.insert(id, ExecutorSlots { cores, in_flight: 0, payloads: HashSet::new() });
    }

    /// Cores with no task launched on them.
    pub fn total_free_cores(&self) -> usize {
        self.executors.values().map(|e| e.cores.saturating_sub(e.in_flight)).sum()
    }

    pub fn num_running_tasks(&self) -> usize {
        self.running.len()
    }

    /// Adds a stage attempt's tasks (`now` starts its locality wait).
    pub fn submit(&mut self, mut set: TaskSet, now: u64) {
        let n = set.partitions.len();
        let has_prefs = set.preferred.iter().any(|p| !p.is_empty());
        if has_prefs {
            set.preferred.resize(n, Vec::new());
        }
        let key = (set.job_id, set.stage_id, set.stage_attempt);
        self.keys.insert((set.stage_id, set.stage_attempt), key);
        let mut tsm = TaskSetManager {
            pending: VecDeque::with_capacity(n),
            is_pending: vec![false; n],
            num_pending: 0,
            has_prefs,
            for_executor: HashMap::new(),
            no_pref: VecDeque::new(),
            local_since: now,
            attempts: vec![0; n],
            failures: vec![0; n],
            succeeded: vec![false; n],
            num_succeeded: 0,
            running: 0,
            zombie: false,
            short_streak: 0,
            set,
        };
        for i in 0..n {
            tsm.enqueue(i, &self.executors);
        }
        self.sets.insert(key, tsm);
    }

    /// Assigns pending tasks to free cores (or queue places, for short
    /// tasks): sets in FIFO order, executors round-robin.
    pub fn resource_offers(&mut self, now: u64) -> (Vec<Launch>, Vec<ListenerEvent>) {
        if self.sets.is_empty() {
            return (Vec::new(), Vec::new());
        }
        // Sized once for every slot that could take a task, rather than
        // regrown (and copied) while a round of offers fills them.
        let depth = self.short_task_queue.max(1);
        let slots: usize = self.executors.values().map(|e| (e.cores * depth).saturating_sub(e.in_flight)).sum();
        let pending: usize = self.sets.values().map(|t| t.num_pending).sum();
        let mut launches = Vec::with_capacity(slots.min(pending));
        let mut events = Vec::with_capacity(slots.min(pending));
        let execs: Vec<ExecutorId> = self.executors.keys().cloned().collect();
        loop {
            let mut launched_any = false;
            for exec in &execs {
                // One task per executor and round, except that a packed set
                // fills each executor (in id order) before the next.
                loop {
                    // The earliest set with pending tasks decides how many tasks a core may hold.
                    let Some(first) = self.sets.values().find(|t| !t.zombie && t.num_pending > 0) else {
                        return (launches, events);
                    };
                    let packed = self.tiny_shapes.is_tiny(first.set.shape);
                    let per_core = if first.short_streak >= SHORT_STREAK {
                        self.short_task_queue
                    } else if packed {
                        PACKED_PER_CORE.min(self.short_task_queue)
                    } else {
                        1
                    };
                    if !self.launch_on(exec, per_core, now, &mut launches, &mut events) {
                        break;
                    }
                    launched_any = true;
                    if !packed {
                        break;
                    }
                }
            }
            if !launched_any {
                return (launches, events);
            }
        }
    }

    /// Launches the next task for `exec` from the earliest set that has one,
    /// if `exec` has fewer than `per_core` tasks per core in flight.
    fn launch_on(
        &mut self,
        exec: &ExecutorId,
        per_core: usize,
        now: u64,
        launches: &mut Vec<Launch>,
        events: &mut Vec<ListenerEvent>,
    ) -> bool {
        let slots = self.executors.get_mut(exec).expect("executor");
        if slots.in_flight >= slots.cores * per_core {
            return false;
        }
        // Sets in FIFO order; one waiting for its preferred executors passes the offer on.
        let wait = self.locality_wait;
        let Some((tsm, index)) = self
            .sets
            .values_mut()
            .filter(|t| !t.zombie && t.num_pending > 0)
            .find_map(|t| t.next_task(exec, now, wait).map(|i| (t, i)))
        else {
            return false;
        };
        let attempt = tsm.attempts[index];
        tsm.attempts[index] += 1;
        tsm.running += 1;
        let task_id = TaskId(self.next_task_id);
        self.next_task_id += 1;
        slots.in_flight += 1;
        let payload = if slots.payloads.insert(tsm.set.payload.hash) { Some(tsm.set.payload.clone()) } else { None };
        let task = TaskDescription {
            task_id,
            stage_id: tsm.set.stage_id,
            stage_attempt: tsm.set.stage_attempt,
            partition: tsm.set.partitions[index],
            attempt,
            payload_hash: tsm.set.payload.hash,
        };
        self.running.insert(
            task_id,
            RunningTask {
                key: (task.stage_id, task.stage_attempt),
                index,
                attempt,
                executor: exec.clone(),
                started: false,
            },
        );
        if self.task_events {
            events.push(ListenerEvent::TaskStart {
                task_id,
                stage_id: task.stage_id,
                stage_attempt: task.stage_attempt,
                partition: task.partition,
                attempt,
                executor: exec.clone(),
                time: now,
            });
        }
        launches.push(Launch { executor: exec.clone(), task, payload });
        true
    }

    /// Handles a status update from an executor.
    pub fn status_update(&mut self, task_id: TaskId, state: TaskState, now: u64) -> Vec<TsOutput> {
        self.end_task(task_id, state, now, true)
    }

    /// A task's final (or `Running`) status. `counts` is false for a failure
    /// that is not the task's doing and must not use up its attempts.
    fn end_task(&mut self, task_id: TaskId, state: TaskState, now: u64, counts: bool) -> Vec<TsOutput> {
        if matches!(state, TaskState::Running) {
            if let Some(rt) = self.running.get_mut(&task_id) {
                rt.started = true;
            }
            return Vec::new();
        }
        // A task's end and its success: one allocation, not a regrowth.
        let mut out = Vec::with_capacity(2);
        let Some(rt) = self.running.remove(&task_id) else { return out };
        if let Some(slots) = self.executors.get_mut(&rt.executor) {
            slots.in_flight = slots.in_flight.saturating_sub(1);
        }
        let Some(set_key) = self.keys.get(&rt.key).copied() else { return out };
        let Some(tsm) = self.sets.get_mut(&set_key) else { return out };
        tsm.running -= 1;
        let (stage_id, stage_attempt) = rt.key;
        let partition = tsm.set.partitions[rt.index];
        if self.task_events {
            let (failure, metrics) = match &state {
                TaskState::Finished { metrics, .. } => (None, metrics.clone()),
                TaskState::Failed { failure, metrics } => (Some(failure.to_string()), metrics.clone()),
                TaskState::Running => unreachable!("handled above"),
            };
            out.push(TsOutput::Event(ListenerEvent::TaskEnd {
                task_id,
                stage_id,
                stage_attempt,
                partition,
                attempt: rt.attempt,
                executor: rt.executor.clone(),
                failure,
                metrics,
                time: now,
            }));
        }
        let finished_in = match &state {
            TaskState::Finished { metrics, .. } => Some(metrics.decode_time_us + metrics.run_time_us),
            _ => None,
        };
        let short = finished_in.is_some_and(|us| us < SHORT_TASK_US);
        tsm.short_streak = if short { tsm.short_streak + 1 } else { 0 };
        self.tiny_shapes.note(tsm.set.shape, finished_in.is_some_and(|us| us < self.tiny_task_us));
        match state {
            TaskState::Finished { output, metrics } => {
                if !metrics.cached_blocks.is_empty() {
                    // Before the success, so that a stage it completes already sees them.
                    out.push(TsOutput::Dag(DagEvent::BlocksCached {
                        executor: rt.executor.clone(),
                        blocks: metrics.cached_blocks,
                    }));
                }
                if !tsm.succeeded[rt.index] {
                    tsm.succeeded[rt.index] = true;
                    tsm.num_succeeded += 1;
                    out.push(TsOutput::Dag(DagEvent::TaskSucceeded { stage_id, stage_attempt, partition, output }));
                }
            }
            TaskState::Failed { failure, .. } => match &failure {
                TaskFailure::FetchFailed { .. } => {
                    tsm.zombie = true;
                    if let Some(ev) = crate::dag::fetch_failure_event(stage_id, stage_attempt, &failure) {
                        out.push(TsOutput::Dag(ev));
                    }
                }
                TaskFailure::Killed { .. } => {}
                TaskFailure::ResultTooLarge { .. } => {
                    tsm.zombie = true;
                    out.push(TsOutput::Dag(DagEvent::TaskSetFailed {
                        stage_id,
                        stage_attempt,
                        reason: failure.to_string(),
                    }));
                    for kill in self.kill_running_of(rt.key) {
                        out.push(kill);
                    }
                }
                _ if tsm.succeeded[rt.index] || tsm.zombie => {}
                _ => {
                    if counts {
                        tsm.failures[rt.index] += 1;
                    }
                    if tsm.failures[rt.index] >= self.max_failures {
                        tsm.zombie = true;
                        let reason = format!(
                            "Task {} in stage {}.{} failed {} times, most recent failure: \
                             Lost task {}.{} in stage {}.{} ({task_id}) ({}): {failure}",
                            partition,
                            stage_id.0,
                            stage_attempt,
                            tsm.failures[rt.index],
                            partition,
                            rt.attempt,
                            stage_id.0,
                            stage_attempt,
                            rt.executor,
                        );
                        out.push(TsOutput::Dag(DagEvent::TaskSetFailed { stage_id, stage_attempt, reason }));
                        for kill in self.kill_running_of(rt.key) {
                            out.push(kill);
                        }
                    } else {
                        tsm.enqueue(rt.index, &self.executors);
                    }
                }
            },
            TaskState::Running => {}
        }
        out.extend(self.gc_set(set_key));
        out
    }

    fn kill_running_of(&self, key: (StageId, u32)) -> Vec<TsOutput> {
        self.running
            .iter()
            .filter(|(_, r)| r.key == key)
            .map(|(t, r)| TsOutput::Kill { executor: r.executor.clone(), task_id: *t })
            .collect()
    }

    /// Stops launching tasks of a stage attempt; optionally kills its running tasks.
    pub fn cancel_set(&mut self, stage_id: StageId, stage_attempt: u32, kill_running: bool) -> Vec<TsOutput> {
        let Some(set_key) = self.keys.get(&(stage_id, stage_attempt)).copied() else { return Vec::new() };
        if let Some(tsm) = self.sets.get_mut(&set_key) {
            tsm.zombie = true;
            tsm.clear_pending();
        }
        let mut out = if kill_running { self.kill_running_of((stage_id, stage_attempt)) } else { Vec::new() };
        out.extend(self.gc_set(set_key));
        out
    }

    /// Drops a set once it launches nothing more and has nothing running.
    fn gc_set(&mut self, key: (JobId, StageId, u32)) -> Vec<TsOutput> {
        let done = self
            .sets
            .get(&key)
            .is_some_and(|t| t.running == 0 && (t.zombie || t.num_succeeded == t.set.partitions.len()));
        let mut out = Vec::new();
        if done {
            let tsm = self.sets.remove(&key).expect("present");
            self.keys.remove(&(key.1, key.2));
            let hash = tsm.set.payload.hash;
            // Identical stage attempts (one action run from several threads)
            // share a payload: it stays on executors until the last is done.
            if self.sets.values().any(|t| t.set.payload.hash == hash) {
                return out;
            }
            for (id, slots) in self.executors.iter_mut() {
                if slots.payloads.remove(&hash) {
                    out.push(TsOutput::Release { executor: id.clone(), payload_hash: hash });
                }
            }
        }
        out
    }

    /// An executor is gone: its running tasks fail (and are retried elsewhere).
    ///
    /// A task counts as having run there, and so uses up one of its
    /// attempts, if it reported `Running` or was among the executor's
    /// `cores` oldest unfinished tasks: executors start tasks in launch
    /// order, so those held its cores. (`Running` is sent up to a
    /// millisecond late, so a task that brings its executor down at once
    /// may never report it.) The younger ones still sat in its queue and
    /// are resubmitted for free.
    pub fn remove_executor(&mut self, executor: &ExecutorId, reason: &str, now: u64) -> Vec<TsOutput> {
        let cores = self.executors.remove(executor).map_or(0, |s| s.cores);
        for tsm in self.sets.values_mut() {
            tsm.forget_executor(executor, &self.executors);
        }
        let mut lost: Vec<(TaskId, bool)> =
            self.running.iter().filter(|(_, r)| &r.executor == executor).map(|(t, r)| (*t, r.started)).collect();
        lost.sort_unstable_by_key(|(t, _)| *t);
        let mut out = Vec::new();
        for (i, (t, reported)) in lost.into_iter().enumerate() {
            let ran = reported || i < cores;
            let message = if ran {
                format!("{executor} lost: {reason}")
            } else {
                format!("{executor} lost before the task started: {reason}")
            };
            let failed =
                TaskState::Failed { failure: TaskFailure::Error { message }, metrics: TaskMetricsSnapshot::default() };
            out.extend(self.end_task(t, failed, now, ran));
        }
        out
    }
}

/// Stage shapes whose recent tasks were tiny: for each, how many of its
/// tasks in a row (up to [`SHORT_STREAK`]) were tiny.
#[derive(Default)]
struct TinyShapes {
    streaks: HashMap<u64, usize>,
}

impl TinyShapes {
    /// Shapes remembered at most; past it the history starts afresh.
    const CAPACITY: usize = 4096;

    fn note(&mut self, shape: u64, tiny: bool) {
        if !tiny {
            self.streaks.remove(&shape);
            return;
        }
        if self.streaks.len() >= Self::CAPACITY && !self.streaks.contains_key(&shape) {
            self.streaks.clear();
        }
        let streak = self.streaks.entry(shape).or_default();
        *streak = (*streak + 1).min(SHORT_STREAK);
    }

    /// Whether sets of this shape may be packed.
    fn is_tiny(&self, shape: u64) -> bool {
        self.streaks.get(&shape).is_some_and(|s| *s >= SHORT_STREAK)
    }
}
