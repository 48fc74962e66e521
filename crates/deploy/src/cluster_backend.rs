//! The driver endpoint for executor processes. One authenticated, long-lived
//! connection per executor carries every control message both ways. The
//! scheduler's event loop writes its messages itself through the
//! connection's [`SharedWriter`] — appended during a loop turn, flushed with
//! one non-blocking write at its end — so it never waits on the network and
//! no thread wake-up sits between a launch decision and the wire.

use crossbeam_channel::Sender;
use ember_common::{ExecutorId, TaskFailure, TaskId};
use ember_core::task::{TaskOutput, TaskState};
use ember_rpc::{
    accept, BlockClients, BlockRequest, BlockResponse, ConnReader, Secret, SharedWriter, ToDriver, ToExecutor,
    PROTOCOL_VERSION,
};
use ember_scheduler::event_loop::{LoopMsg, SchedulerBackend};
use ember_scheduler::task_scheduler::Launch;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Driver-side settings for executor connections.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub max_frame: usize,
    /// An executor silent this long (no heartbeat or other message) is declared lost.
    pub network_timeout: Duration,
    /// Results larger than this fail their job without being fetched.
    pub max_result_size: u64,
    /// How long a connection's reader polls for the next message before it sleeps (`ember.spinWait`).
    pub spin_wait: Duration,
}

struct ExecutorConn {
    link: Arc<SharedWriter>,
    last_seen: Instant,
    /// Wakes the connection's reader to drop it (heartbeat timeout).
    cut: Arc<tokio::sync::Notify>,
}

struct Shared {
    secret: Secret,
    settings: ClusterSettings,
    loop_tx: Sender<LoopMsg>,
    executors: Mutex<HashMap<ExecutorId, ExecutorConn>>,
    memory_reports: Mutex<HashMap<ExecutorId, u64>>,
    blocks: BlockClients,
    refusals: Mutex<Vec<String>>,
    /// Told about every lost executor (the launcher replaces them).
    lost_watchers: Mutex<Vec<Sender<ExecutorId>>>,
}

/// Accepts executor connections and routes their messages.
pub struct DriverEndpoint {
    shared: Arc<Shared>,
    address: String,
    runtime: tokio::runtime::Handle,
}

impl DriverEndpoint {
    /// Binds on loopback and starts accepting executors on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        secret: Secret,
        settings: ClusterSettings,
        loop_tx: Sender<LoopMsg>,
    ) -> std::io::Result<Self> {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let address = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            blocks: BlockClients::new(runtime.handle().clone(), secret.clone(), settings.max_frame),
            secret,
            settings,
            loop_tx,
            executors: Mutex::new(HashMap::new()),
            memory_reports: Mutex::new(HashMap::new()),
            refusals: Mutex::new(Vec::new()),
            lost_watchers: Mutex::new(Vec::new()),
        });
        runtime.spawn(accept_loop(listener, shared.clone()));
        runtime.spawn(heartbeat_monitor(shared.clone()));
        Ok(DriverEndpoint { shared, address, runtime: runtime.handle().clone() })
    }

    /// Where executors connect.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn registered(&self) -> Vec<ExecutorId> {
        let mut v: Vec<ExecutorId> = self.shared.executors.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Reasons connections or registrations were refused (for diagnostics and tests).
    pub fn refusals(&self) -> Vec<String> {
        self.shared.refusals.lock().clone()
    }

    pub fn send(&self, executor: &ExecutorId, msg: ToExecutor) -> bool {
        self.shared.executors.lock().get(executor).is_some_and(|c| c.link.send(&msg))
    }

    pub fn broadcast(&self, make: impl Fn() -> ToExecutor) {
        for c in self.shared.executors.lock().values() {
            c.link.send(&make());
        }
    }

    /// Memory reserved across executors right now (asks each one).
    pub fn memory_used(&self, timeout: Duration) -> Option<u64> {
        let ids = self.registered();
        self.shared.memory_reports.lock().clear();
        self.broadcast(|| ToExecutor::ReportMemory);
        let deadline = Instant::now() + timeout;
        loop {
            {
                let reports = self.shared.memory_reports.lock();
                if ids.iter().all(|id| reports.contains_key(id)) {
                    return Some(reports.values().sum());
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Registers a channel that hears of every executor lost from now on.
    pub fn watch_lost(&self, tx: Sender<ExecutorId>) {
        self.shared.lost_watchers.lock().push(tx);
    }

    pub fn backend(&self) -> ClusterBackend {
        ClusterBackend { shared: self.shared.clone(), _runtime: self.runtime.clone(), dirty: Vec::new() }
    }
}

fn refuse(shared: &Shared, reason: String) {
    tracing::warn!(%reason, "refused an executor");
    shared.refusals.lock().push(reason);
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { return };
        let shared = shared.clone();
        tokio::spawn(async move {
            let (mut reader, mut writer) =
                match accept(stream, &shared.secret, PROTOCOL_VERSION, shared.settings.max_frame).await {
                    Ok(c) => c,
                    Err(e) => return refuse(&shared, format!("connection from {peer}: {e}")),
                };
            let (id, cores, block_address) = match reader.recv::<ToDriver>().await {
                Ok(ToDriver::RegisterExecutor {
                    executor_id,
                    block_address,
                    cores,
                    exe_hash,
                    protocol_version,
                    ..
                }) => {
                    let problem = if protocol_version != PROTOCOL_VERSION {
                        Some(format!("protocol version {protocol_version}, driver speaks {PROTOCOL_VERSION}"))
                    } else if &exe_hash != ember_core::codec::exe_hash() {
                        Some(format!(
                            "executable hash {} differs from the driver's {}; executors must run the driver's binary",
                            ember_core::codec::hex(&exe_hash),
                            ember_core::codec::hex(ember_core::codec::exe_hash())
                        ))
                    } else {
                        None
                    };
                    if let Some(reason) = problem {
                        let _ = writer.send(&ToExecutor::RegisterExecutorFailed { reason: reason.clone() }).await;
                        return refuse(&shared, format!("executor {executor_id}: {reason}"));
                    }
                    (ExecutorId(executor_id), cores, block_address)
                }
                Ok(other) => return refuse(&shared, format!("{peer} sent {other:?} before registering")),
                Err(e) => return refuse(&shared, format!("{peer}: {e}")),
            };
            let link = SharedWriter::start(writer);
            reader.spin_wait(shared.settings.spin_wait);
            link.send(&ToExecutor::RegisteredExecutor);
            let cut = Arc::new(tokio::sync::Notify::new());
            shared
                .executors
                .lock()
                .insert(id.clone(), ExecutorConn { link, last_seen: Instant::now(), cut: cut.clone() });
            let _ = shared.loop_tx.send(LoopMsg::ExecutorAdded { executor: id.clone(), cores });
            let timeout = shared.settings.network_timeout;
            let reason = tokio::select! {
                reason = serve_executor(&shared, &id, &block_address, &mut reader) => reason,
                _ = cut.notified() => format!("no heartbeat from {id} for {timeout:?} (ember.network.timeout)"),
            };
            shared.executors.lock().remove(&id);
            tracing::warn!(executor = %id, %reason, "executor lost");
            for w in shared.lost_watchers.lock().iter() {
                let _ = w.send(id.clone());
            }
            let _ = shared.loop_tx.send(LoopMsg::ExecutorLost { executor: id, reason });
        });
    }
}

/// Reads an executor's messages until its connection ends; returns why.
async fn serve_executor(shared: &Shared, id: &ExecutorId, block_address: &str, reader: &mut ConnReader) -> String {
    loop {
        let msg = reader.recv::<ToDriver>().await;
        if let Some(c) = shared.executors.lock().get_mut(id) {
            c.last_seen = Instant::now();
        }
        match msg {
            Ok(ToDriver::StatusUpdate { task_id, state }) => {
                let state = resolve_stored(shared, block_address, task_id, state).await;
                let _ = shared.loop_tx.send(LoopMsg::StatusUpdate { task_id, state });
            }
            Ok(ToDriver::Heartbeat { .. }) => {
                if let Some(c) = shared.executors.lock().get(id) {
                    c.link.send(&ToExecutor::HeartbeatAck);
                }
            }
            Ok(ToDriver::MemoryReport { used }) => {
                shared.memory_reports.lock().insert(id.clone(), used);
            }
            Ok(ToDriver::RegisterExecutor { .. }) => return format!("{id} registered twice"),
            Err(e) => return format!("connection to {id} ended: {e}"),
        }
    }
}

/// Declares executors lost when they have been silent for the network timeout.
async fn heartbeat_monitor(shared: Arc<Shared>) {
    let timeout = shared.settings.network_timeout;
    let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(50)));
    loop {
        tick.tick().await;
        let now = Instant::now();
        for c in shared.executors.lock().values() {
            if now.duration_since(c.last_seen) > timeout {
                c.cut.notify_one();
            }
        }
    }
}

/// Fetches a result parked in the executor's block server, unless it is over the limit.
async fn resolve_stored(shared: &Shared, block_address: &str, task_id: TaskId, state: TaskState) -> TaskState {
    let TaskState::Finished { output: TaskOutput::Stored { size }, metrics } = state else { return state };
    let limit = shared.settings.max_result_size;
    if limit > 0 && size > limit {
        return TaskState::Failed { failure: TaskFailure::ResultTooLarge { size, limit }, metrics };
    }
    match shared.blocks.fetch(block_address, BlockRequest::TaskResult { task_id }).await {
        Ok(BlockResponse::Bytes(bytes)) => TaskState::Finished { output: TaskOutput::Result(bytes), metrics },
        Ok(BlockResponse::Missing(m)) => TaskState::Failed {
            failure: TaskFailure::Error { message: format!("result of {task_id} lost: {m}") },
            metrics,
        },
        Err(e) => TaskState::Failed {
            failure: TaskFailure::Error { message: format!("cannot fetch the result of {task_id}: {e}") },
            metrics,
        },
    }
}

/// The scheduler backend for executor processes.
pub struct ClusterBackend {
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Handle,
    /// Executors with messages queued this loop turn that must leave at its end.
    dirty: Vec<ExecutorId>,
}

impl ClusterBackend {
    /// Queues a message; it goes out when the event loop flushes its turn.
    fn push(&mut self, executor: &ExecutorId, msg: ToExecutor) -> bool {
        let pushed = self.shared.executors.lock().get(executor).is_some_and(|c| c.link.push(&msg));
        if pushed && !self.dirty.contains(executor) {
            self.dirty.push(executor.clone());
        }
        pushed
    }
}

impl SchedulerBackend for ClusterBackend {
    fn launch(&mut self, launch: Launch) {
        let payload = launch.payload.map(|p| p.bytes.clone());
        let exec = launch.executor.clone();
        let task_id = launch.task.task_id;
        if !self.push(&exec, ToExecutor::LaunchTask { task: launch.task, payload }) {
            // The executor vanished between the offer and the launch: fail the attempt so it is retried.
            let _ = self.shared.loop_tx.send(LoopMsg::StatusUpdate {
                task_id,
                state: TaskState::Failed {
                    failure: TaskFailure::Error { message: format!("{exec} is gone") },
                    metrics: Default::default(),
                },
            });
        }
    }

    fn kill(&mut self, executor: &ExecutorId, task_id: TaskId, reason: &str) {
        self.push(executor, ToExecutor::KillTask { task_id, reason: reason.to_string() });
    }

    /// Not urgent: it travels with the executor's next launch, or within
    /// a millisecond, rather than costing a write and a wake-up of its own
    /// at the end of every job.
    fn release(&mut self, executor: &ExecutorId, payload_hash: [u8; 32]) {
        if let Some(c) = self.shared.executors.lock().get(executor) {
            c.link.push(&ToExecutor::ReleaseStage { payload_hash });
            c.link.flush_soon();
        }
    }

    fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let executors = self.shared.executors.lock();
        for id in self.dirty.drain(..) {
            if let Some(c) = executors.get(&id) {
                c.link.flush();
            }
        }
    }

    fn stop(&mut self) {
        for c in self.shared.executors.lock().values() {
            c.link.send(&ToExecutor::StopExecutor);
        }
    }
}
