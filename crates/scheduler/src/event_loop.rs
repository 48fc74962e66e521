//! The driver's event loop: one thread that owns the DAG scheduler, the task
//! scheduler and the backend, and processes [`LoopMsg`]s in order — job
//! submissions from user threads, status updates from executors, executor
//! arrivals and losses, cancellations. Everything that changes scheduling
//! state happens here, so the state machines need no locks.
//!
//! It is a plain thread rather than an async task, and it never waits on
//! the network for anything but its next message: an in-process backend
//! feeds it through its channel, and a backend with executor connections
//! lets it read them itself ([`SchedulerBackend::poll_incoming`]) —
//! non-blocking reads while it polls, `poll(2)` on the sockets and the
//! channel's [`Doorbell`] while it sleeps — so a status update reaches the
//! schedulers without a hand-off from another thread.

use crate::dag::{DagAction, DagEvent, DagScheduler};
use crate::doorbell::{Doorbell, LoopReceiver, LoopSender};
use crate::listener::{ListenerBus, ListenerEvent};
use crate::task_scheduler::{Launch, TaskScheduler, TaskSet, TsOutput};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender, TryRecvError};
use ember_common::{Clock, Error, ExecutorId, JobId, Result, TaskId};
use ember_core::codec::{encode_stage, EncodableNode};
use ember_core::task::{StageAttempt, StagePayload, TaskState};
use ember_core::RddBase;
use foldhash::{HashMap, HashMapExt};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Where tasks go: an in-process executor, or executor processes over RPC.
pub trait SchedulerBackend: Send {
    fn launch(&mut self, launch: Launch);
    fn kill(&mut self, executor: &ExecutorId, task_id: TaskId, reason: &str);
    /// The executor may forget a finished stage attempt's payload.
    fn release(&mut self, executor: &ExecutorId, payload_hash: [u8; 32]);
    /// Sends what this loop turn's calls queued. Backends that deliver
    /// at once need not implement it.
    fn flush(&mut self) {}
    fn stop(&mut self);
    /// True if the loop must read the backend's connections itself
    /// ([`poll_incoming`](Self::poll_incoming),
    /// [`wait_incoming`](Self::wait_incoming)); false if everything the
    /// backend has to say comes through the loop's channel.
    fn reads_connections(&self) -> bool {
        false
    }
    /// Reads what has arrived on the backend's connections, without
    /// blocking, and appends the messages for the loop to `into`.
    fn poll_incoming(&mut self, _into: &mut Vec<LoopMsg>) {}
    /// Sleeps until a connection has something to read, `bell` rings, or
    /// `timeout` passes (a backend may wake earlier, for its own checks).
    fn wait_incoming(&mut self, _bell: &Doorbell, _timeout: Option<Duration>) {}
}

/// Messages into the event loop.
pub enum LoopMsg {
    SubmitJob {
        job_id: JobId,
        rdd: Arc<dyn RddBase>,
        sink: Arc<dyn EncodableNode>,
        partitions: Vec<usize>,
        /// The job group of the submitting thread, if any.
        group: Option<String>,
        waiter: Sender<JobMsg>,
    },
    CancelJob {
        job_id: JobId,
        reason: String,
    },
    CancelGroup {
        group: String,
        reason: String,
    },
    CancelAll {
        reason: String,
    },
    StatusUpdate {
        task_id: TaskId,
        state: TaskState,
    },
    ExecutorAdded {
        executor: ExecutorId,
        cores: usize,
        /// Its block server; empty for the in-process executor.
        block_address: String,
    },
    ExecutorLost {
        executor: ExecutorId,
        reason: String,
    },
    /// The RDD's cached partitions are being dropped everywhere.
    RddUnpersisted {
        rdd: u64,
    },
    Stop,
}

/// Messages from the event loop to a job's waiter.
pub enum JobMsg {
    /// Results of some of the job's tasks, `(output index, encoded value)`:
    /// those one loop turn produced.
    TaskResults(Vec<(usize, Vec<u8>)>),
    Done(Result<()>),
}

/// Scheduling settings the loop needs.
pub struct LoopConfig {
    pub max_task_failures: u32,
    pub max_consecutive_stage_attempts: u32,
    /// Tasks of a short-task set one executor core may hold (see `task_scheduler`).
    pub short_task_queue: usize,
    /// How long a task waits for the executors caching its input (`ember.locality.wait`).
    pub locality_wait: Duration,
    /// How long the loop polls for its next message before it sleeps (`ember.spinWait`).
    pub spin_wait: Duration,
}

/// The driver side's handle on the running event loop.
pub struct DriverHandle {
    tx: LoopSender,
    thread: Mutex<Option<JoinHandle<()>>>,
    next_job_id: AtomicU64,
}

impl DriverHandle {
    /// Starts the loop on `channel` (made first, so that executors created
    /// before the loop can already hold its sender).
    pub fn start(
        config: LoopConfig,
        backend: Box<dyn SchedulerBackend>,
        bus: Arc<ListenerBus>,
        clock: Arc<dyn Clock>,
        (tx, rx): (LoopSender, LoopReceiver),
    ) -> Self {
        let thread = std::thread::Builder::new()
            .name("ember-dag-scheduler".into())
            // Deep lineage is dropped and walked here; give it room.
            .stack_size(256 << 20)
            .spawn(move || {
                let mut state = LoopState {
                    dag: DagScheduler::new(config.max_consecutive_stage_attempts),
                    ts: TaskScheduler::new(config.max_task_failures)
                        .with_short_task_queue(config.short_task_queue)
                        .with_locality_wait(config.locality_wait.as_millis() as u64),
                    waiters: HashMap::new(),
                    groups: HashMap::new(),
                    backend,
                    bus,
                    clock,
                    spin_wait: config.spin_wait,
                    events: Vec::new(),
                    results: Vec::new(),
                };
                state.run(rx);
            })
            .expect("spawn scheduler thread");
        DriverHandle { tx, thread: Mutex::new(Some(thread)), next_job_id: AtomicU64::new(0) }
    }

    /// Submits a job; results and completion arrive on the returned receiver.
    pub fn submit_job(
        &self,
        rdd: Arc<dyn RddBase>,
        sink: Arc<dyn EncodableNode>,
        partitions: Vec<usize>,
        group: Option<String>,
    ) -> Result<(JobId, Receiver<JobMsg>)> {
        let job_id = JobId(self.next_job_id.fetch_add(1, Ordering::Relaxed));
        let (waiter, rx) = unbounded();
        self.tx
            .send(LoopMsg::SubmitJob { job_id, rdd, sink, partitions, group, waiter })
            .map_err(|_| Error::Stopped("the scheduler has stopped".into()))?;
        Ok((job_id, rx))
    }

    pub fn cancel_job(&self, job_id: JobId, reason: &str) {
        let _ = self.tx.send(LoopMsg::CancelJob { job_id, reason: reason.to_string() });
    }

    pub fn cancel_group(&self, group: &str, reason: &str) {
        let _ = self.tx.send(LoopMsg::CancelGroup { group: group.to_string(), reason: reason.to_string() });
    }

    /// The RDD's cached partitions are being dropped: stop preferring their executors.
    pub fn rdd_unpersisted(&self, rdd: u64) {
        let _ = self.tx.send(LoopMsg::RddUnpersisted { rdd });
    }

    pub fn cancel_all(&self, reason: &str) {
        let _ = self.tx.send(LoopMsg::CancelAll { reason: reason.to_string() });
    }

    /// Fails running jobs, stops the backend and joins the loop thread.
    pub fn stop(&self) {
        let _ = self.tx.send(LoopMsg::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

struct LoopState {
    dag: DagScheduler,
    ts: TaskScheduler,
    waiters: HashMap<JobId, Sender<JobMsg>>,
    groups: HashMap<JobId, String>,
    backend: Box<dyn SchedulerBackend>,
    bus: Arc<ListenerBus>,
    clock: Arc<dyn Clock>,
    spin_wait: Duration,
    /// Listener events of the current turn, posted together at its end
    /// (and before a job's waiter hears the job ended).
    events: Vec<ListenerEvent>,
    /// Task results of the current turn, sent to their jobs' waiters
    /// together at its end (and before a waiter hears its job ended).
    results: Vec<(JobId, usize, Vec<u8>)>,
}

impl LoopState {
    fn run(&mut self, rx: LoopReceiver) {
        let mut incoming: Vec<LoopMsg> = Vec::new();
        loop {
            // Tasks held back for locality must be offered again when their
            // wait ends, even if nothing else happens by then.
            let deadline = if self.ts.holds_tasks_for_locality() {
                let now = self.clock.now_millis();
                self.ts.locality_deadline(now).map(|d| Duration::from_millis(d - now))
            } else {
                None
            };
            let backend = &mut self.backend;
            let reads = backend.reads_connections();
            let spun = ember_common::spin::spin_for(self.spin_wait, || {
                take_incoming(&rx, &mut **backend, reads, &mut incoming);
                (!incoming.is_empty()).then_some(())
            });
            if spun.is_none() {
                self.sleep(&rx, deadline, &mut incoming);
            }
            // Per-task listener events only while someone listens; a listener
            // may have registered while the loop waited.
            self.ts.set_task_events(self.bus.is_listening());
            if incoming.is_empty() {
                // The locality wait ended (or nothing came after all).
                self.make_offers();
                self.end_turn();
                continue;
            }
            // Handle it, and whatever else is queued, before making offers.
            loop {
                for msg in incoming.drain(..) {
                    if !self.handle(msg) {
                        self.shutdown();
                        return;
                    }
                }
                take_incoming(&rx, &mut *self.backend, reads, &mut incoming);
                if incoming.is_empty() {
                    break;
                }
            }
            self.make_offers();
            self.end_turn();
        }
    }

    /// Sleeps until a message arrives or `deadline` passes: on the channel,
    /// or — when the loop reads the backend's connections — on them and the
    /// channel's doorbell.
    fn sleep(&mut self, rx: &LoopReceiver, deadline: Option<Duration>, into: &mut Vec<LoopMsg>) {
        if !self.backend.reads_connections() {
            let msg = match deadline {
                None => rx.rx.recv().map_err(|_| ()),
                Some(wait) => match rx.rx.recv_timeout(wait) {
                    Ok(msg) => Ok(msg),
                    Err(RecvTimeoutError::Timeout) => return,
                    Err(RecvTimeoutError::Disconnected) => Err(()),
                },
            };
            into.push(msg.unwrap_or(LoopMsg::Stop));
            return;
        }
        rx.bell.going_to_sleep();
        // Look once more: what was sent before the announcement rang no bell.
        take_incoming(rx, &mut *self.backend, true, into);
        if into.is_empty() {
            self.backend.wait_incoming(&rx.bell, deadline);
        }
        rx.bell.woke();
        take_incoming(rx, &mut *self.backend, true, into);
    }

    /// Sends what the turn queued: messages to executors, listener events.
    fn end_turn(&mut self) {
        self.backend.flush();
        self.deliver();
    }

    /// Hands the turn's results to their waiters and its events to the
    /// listeners: at the turn's end, and before a waiter hears its job ended
    /// (so the results precede `Done`, and listeners have the job's end by
    /// the time its caller returns).
    fn deliver(&mut self) {
        self.send_results();
        self.post_events();
    }

    /// One message per job with results this turn, so a stream of short
    /// tasks wakes a waiter once per turn rather than once per task.
    fn send_results(&mut self) {
        let mut batches: Vec<(JobId, Vec<(usize, Vec<u8>)>)> = Vec::new();
        for (job_id, index, bytes) in self.results.drain(..) {
            match batches.iter_mut().find(|(j, _)| *j == job_id) {
                Some((_, batch)) => batch.push((index, bytes)),
                None => batches.push((job_id, vec![(index, bytes)])),
            }
        }
        for (job_id, batch) in batches {
            if let Some(w) = self.waiters.get(&job_id) {
                let _ = w.send(JobMsg::TaskResults(batch));
            }
        }
    }

    fn post_events(&mut self) {
        if !self.events.is_empty() {
            self.bus.post_all(&mut self.events);
        }
    }

    fn shutdown(&mut self) {
        self.post_events();
        for (_, w) in self.waiters.drain() {
            let _ = w.send(JobMsg::Done(Err(Error::Stopped("the context was stopped".into()))));
        }
        self.backend.stop();
    }

    /// Returns false when the loop must stop.
    fn handle(&mut self, msg: LoopMsg) -> bool {
        let now = self.clock.now_millis();
        match msg {
            LoopMsg::SubmitJob { job_id, rdd, sink, partitions, group, waiter } => {
                self.waiters.insert(job_id, waiter);
                if let Some(g) = group {
                    self.groups.insert(job_id, g);
                }
                self.dag_event(DagEvent::JobSubmitted { job_id, rdd, sink, partitions }, now);
            }
            LoopMsg::CancelJob { job_id, reason } => {
                self.dag_event(DagEvent::JobCancelled { job_id, reason }, now);
            }
            LoopMsg::CancelGroup { group, reason } => {
                let jobs: Vec<JobId> = self.groups.iter().filter(|(_, g)| **g == group).map(|(j, _)| *j).collect();
                for job_id in jobs {
                    self.dag_event(DagEvent::JobCancelled { job_id, reason: reason.clone() }, now);
                }
            }
            LoopMsg::CancelAll { reason } => {
                let jobs: Vec<JobId> = self.waiters.keys().copied().collect();
                for job_id in jobs {
                    self.dag_event(DagEvent::JobCancelled { job_id, reason: reason.clone() }, now);
                }
            }
            LoopMsg::StatusUpdate { task_id, state } => {
                let outs = self.ts.status_update(task_id, state, now);
                self.ts_outputs(outs, now);
            }
            LoopMsg::ExecutorAdded { executor, cores, block_address } => {
                self.events.push(ListenerEvent::ExecutorAdded { executor: executor.clone(), cores, time: now });
                self.ts.add_executor(executor.clone(), cores);
                self.dag_event(DagEvent::ExecutorAdded { executor, block_address }, now);
            }
            LoopMsg::ExecutorLost { executor, reason } => {
                self.events.push(ListenerEvent::ExecutorRemoved {
                    executor: executor.clone(),
                    reason: reason.clone(),
                    time: now,
                });
                let outs = self.ts.remove_executor(&executor, &reason, now);
                self.ts_outputs(outs, now);
                self.dag_event(DagEvent::ExecutorLost { executor }, now);
            }
            LoopMsg::RddUnpersisted { rdd } => self.dag_event(DagEvent::RddUnpersisted { rdd }, now),
            LoopMsg::Stop => return false,
        }
        true
    }

    fn ts_outputs(&mut self, outs: Vec<TsOutput>, now: u64) {
        for o in outs {
            match o {
                TsOutput::Dag(ev) => self.dag_event(ev, now),
                TsOutput::Event(ev) => self.events.push(ev),
                TsOutput::Kill { executor, task_id } => self.backend.kill(&executor, task_id, "stage cancelled"),
                TsOutput::Release { executor, payload_hash } => self.backend.release(&executor, payload_hash),
            }
        }
    }

    fn dag_event(&mut self, event: DagEvent, now: u64) {
        let mut queue: VecDeque<DagAction> = self.dag.handle(event, now).into();
        while let Some(action) = queue.pop_front() {
            match action {
                DagAction::SubmitTaskSet(spec) => {
                    let encoded = encode_stage(spec.sink.clone()).and_then(|blob| {
                        StagePayload::encode(&StageAttempt {
                            blob,
                            shuffle_inputs: spec.shuffle_inputs,
                            cached_blocks: spec.cached_blocks,
                        })
                    });
                    match encoded {
                        Ok(payload) => self.ts.submit(
                            TaskSet {
                                stage_id: spec.stage_id,
                                stage_attempt: spec.stage_attempt,
                                job_id: spec.job_id,
                                partitions: spec.partitions,
                                preferred: spec.preferred,
                                payload: Arc::new(payload),
                            },
                            now,
                        ),
                        Err(e) => queue.extend(self.dag.handle(
                            DagEvent::TaskSetFailed {
                                stage_id: spec.stage_id,
                                stage_attempt: spec.stage_attempt,
                                reason: format!("failed to encode {}: {e}", spec.stage_id),
                            },
                            now,
                        )),
                    }
                }
                DagAction::CancelTaskSet { stage_id, stage_attempt, kill_running } => {
                    let outs = self.ts.cancel_set(stage_id, stage_attempt, kill_running);
                    for o in outs {
                        match o {
                            TsOutput::Kill { executor, task_id } => {
                                self.backend.kill(&executor, task_id, "stage cancelled")
                            }
                            TsOutput::Release { executor, payload_hash } => {
                                self.backend.release(&executor, payload_hash)
                            }
                            TsOutput::Dag(ev) => queue.extend(self.dag.handle(ev, now)),
                            TsOutput::Event(ev) => self.events.push(ev),
                        }
                    }
                }
                DagAction::TaskResult { job_id, output_index, bytes } => {
                    self.results.push((job_id, output_index, bytes));
                }
                DagAction::JobSucceeded { job_id } => {
                    self.deliver();
                    self.groups.remove(&job_id);
                    if let Some(w) = self.waiters.remove(&job_id) {
                        let _ = w.send(JobMsg::Done(Ok(())));
                    }
                }
                DagAction::JobFailed { job_id, error } => {
                    self.deliver();
                    self.groups.remove(&job_id);
                    if let Some(w) = self.waiters.remove(&job_id) {
                        let _ = w.send(JobMsg::Done(Err(error)));
                    }
                }
                DagAction::Event(ev) => self.events.push(ev),
            }
        }
    }

    fn make_offers(&mut self) {
        let now = self.clock.now_millis();
        let (launches, events) = self.ts.resource_offers(now);
        self.events.extend(events);
        for l in launches {
            self.backend.launch(l);
        }
    }
}

/// Moves what has arrived — on the channel, and on the backend's
/// connections if the loop reads them — into `into`. A channel whose every
/// sender is gone reads as `Stop`.
fn take_incoming(rx: &LoopReceiver, backend: &mut dyn SchedulerBackend, reads: bool, into: &mut Vec<LoopMsg>) {
    loop {
        match rx.rx.try_recv() {
            Ok(msg) => into.push(msg),
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                into.push(LoopMsg::Stop);
                break;
            }
        }
    }
    if reads {
        backend.poll_incoming(into);
    }
}
