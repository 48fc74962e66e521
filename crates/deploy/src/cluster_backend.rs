//! The driver endpoint for executor processes. One authenticated, long-lived
//! connection per executor carries every control message both ways. The
//! scheduler's event loop writes its messages itself through the
//! connection's [`SharedWriter`] — appended during a loop turn, flushed with
//! one non-blocking write at its end — and reads the executors' messages
//! itself through [`ClusterBackend`]'s `poll_incoming`, so no thread
//! wake-up sits between the wire and a scheduling decision either way.
//!
//! The tokio runtime accepts and authenticates connections, registers
//! executors, fetches results parked in executors' block servers, and
//! writes what a socket could not take at once. After registration a
//! connection's reading moves to the event loop ([`ember_rpc::detach`]),
//! which also declares an executor lost when its connection ends or it has
//! been silent for `ember.network.timeout`.
//!
//! An executor this process launched on this host may also share a ring
//! file with it ([`ember_rpc::ring`]): the launcher names the ring by the
//! child's process id ([`RingOffers`]), and a connection
//! from that process over the Unix socket (its id comes from the socket's
//! peer credentials) attaches it when the executor says it attached it too.

use crossbeam_channel::Sender;
use ember_common::{ExecutorId, StageId, TaskFailure, TaskId};
use ember_core::task::{TaskOutput, TaskState};
use ember_rpc::ring::{RingFile, Side};
use ember_rpc::{
    accept, BlockClients, BlockRequest, BlockResponse, BlockingReader, Secret, SharedWriter, ToDriver, ToExecutor,
    WireStage, WireTask, PROTOCOL_VERSION,
};
use ember_scheduler::doorbell::Doorbell;
use ember_scheduler::event_loop::{LoopMsg, SchedulerBackend};
use ember_scheduler::task_scheduler::Launch;
use ember_scheduler::LoopSender;
use foldhash::{HashMap, HashMapExt};
use parking_lot::Mutex;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Where to listen, besides loopback TCP, for executors on this host:
    /// a Unix socket path (see `ember_rpc::stream`). `None`, or a path that
    /// cannot be bound (too long for a socket address, say), leaves TCP only.
    pub unix_socket: Option<std::path::PathBuf>,
}

struct ExecutorConn {
    link: Arc<SharedWriter>,
}

/// A registered executor's connection as the event loop reads it.
struct Incoming {
    id: ExecutorId,
    cores: usize,
    block_address: String,
    reader: BlockingReader,
    link: Arc<SharedWriter>,
    last_seen: Instant,
}

struct Shared {
    secret: Secret,
    settings: ClusterSettings,
    loop_tx: LoopSender,
    executors: Mutex<HashMap<ExecutorId, ExecutorConn>>,
    /// Connections registered since the event loop last looked.
    registered: Mutex<Vec<Incoming>>,
    any_registered: AtomicBool,
    memory_reports: Mutex<HashMap<ExecutorId, u64>>,
    blocks: BlockClients,
    refusals: Mutex<Vec<String>>,
    /// Told about every lost executor (the launcher replaces them).
    lost_watchers: Mutex<Vec<Sender<ExecutorId>>>,
    /// Ring files of launched executors not yet registered.
    rings: RingOffers,
}

/// Ring files offered to launched executors not yet registered, by process
/// id (the launcher's handle on the endpoint's list).
#[derive(Clone, Default)]
pub struct RingOffers(Arc<Mutex<HashMap<u32, Arc<RingFile>>>>);

impl RingOffers {
    /// Offers `ring` to the executor process `pid` when it registers over
    /// the Unix socket (replacing any offer to an earlier process of that id).
    pub fn offer(&self, pid: u32, ring: Arc<RingFile>) {
        self.0.lock().insert(pid, ring);
    }

    /// Withdraws the offer to `pid`, if it never registered.
    pub fn withdraw(&self, pid: u32) {
        self.0.lock().remove(&pid);
    }

    /// Withdraws every offer (the cluster is stopping).
    pub fn clear(&self) {
        self.0.lock().clear();
    }

    fn take(&self, pid: u32) -> Option<Arc<RingFile>> {
        self.0.lock().remove(&pid)
    }
}

/// Accepts executor connections and routes their messages.
pub struct DriverEndpoint {
    shared: Arc<Shared>,
    address: String,
    /// `unix:PATH`, when the endpoint also listens on a Unix socket.
    unix_address: Option<String>,
    runtime: tokio::runtime::Handle,
}

impl DriverEndpoint {
    /// Binds on loopback and starts accepting executors on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        secret: Secret,
        settings: ClusterSettings,
        loop_tx: LoopSender,
    ) -> std::io::Result<Self> {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let address = listener.local_addr()?.to_string();
        let unix_listener = settings.unix_socket.as_ref().and_then(|path| {
            let _guard = runtime.enter();
            match tokio::net::UnixListener::bind(path) {
                Ok(l) => Some((l, format!("{}{}", ember_rpc::stream::UNIX_PREFIX, path.display()))),
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "no Unix socket for the driver; executors use TCP");
                    None
                }
            }
        });
        let shared = Arc::new(Shared {
            blocks: BlockClients::new(runtime.handle().clone(), secret.clone(), settings.max_frame),
            secret,
            settings,
            loop_tx,
            executors: Mutex::new(HashMap::new()),
            registered: Mutex::new(Vec::new()),
            any_registered: AtomicBool::new(false),
            memory_reports: Mutex::new(HashMap::new()),
            refusals: Mutex::new(Vec::new()),
            lost_watchers: Mutex::new(Vec::new()),
            rings: RingOffers::default(),
        });
        runtime.spawn(accept_tcp(listener, shared.clone()));
        let unix_address = unix_listener.map(|(l, address)| {
            runtime.spawn(accept_unix(l, shared.clone()));
            address
        });
        Ok(DriverEndpoint { shared, address, unix_address, runtime: runtime.handle().clone() })
    }

    /// Where a launcher offers ring files to the executors it starts.
    pub fn ring_offers(&self) -> RingOffers {
        self.shared.rings.clone()
    }

    /// Where executors connect over TCP.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Where executors on this host connect (`unix:PATH`), if the endpoint
    /// listens on a Unix socket.
    pub fn unix_address(&self) -> Option<&str> {
        self.unix_address.as_deref()
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

    /// The event loop's side of the endpoint. Only one backend may read
    /// the connections: make one.
    pub fn backend(&self) -> ClusterBackend {
        ClusterBackend {
            shared: self.shared.clone(),
            runtime: self.runtime.clone(),
            dirty: Vec::new(),
            incoming: Vec::new(),
            lost: Vec::new(),
            silence_checked: Instant::now(),
            attempts: HashMap::new(),
        }
    }
}

fn refuse(shared: &Shared, reason: String) {
    tracing::warn!(%reason, "refused an executor");
    shared.refusals.lock().push(reason);
}

async fn accept_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { return };
        tokio::spawn(register(stream.into(), peer.to_string(), None, shared.clone()));
    }
}

async fn accept_unix(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    let mut local = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        local += 1;
        let pid = stream.peer_cred().ok().and_then(|c| c.pid()).and_then(|p| u32::try_from(p).ok());
        tokio::spawn(register(stream.into(), format!("local connection #{local}"), pid, shared.clone()));
    }
}

/// Authenticates a new connection and registers its executor; `pid` is
/// the peer's process id when the connection is local.
async fn register(stream: ember_rpc::Stream, peer: String, pid: Option<u32>, shared: Arc<Shared>) {
    let (mut reader, mut writer) =
        match accept(stream, &shared.secret, PROTOCOL_VERSION, shared.settings.max_frame).await {
            Ok(c) => c,
            Err(e) => return refuse(&shared, format!("connection from {peer}: {e}")),
        };
    let (id, cores, block_address) = match reader.recv::<ToDriver>().await {
        Ok(ToDriver::RegisterExecutor { executor_id, block_address, cores, exe_hash, protocol_version, .. }) => {
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
            (ExecutorId::from(executor_id), cores, block_address)
        }
        Ok(other) => return refuse(&shared, format!("{peer} sent {other:?} before registering")),
        Err(e) => return refuse(&shared, format!("{peer}: {e}")),
    };
    // The ring is used when the process it was made for attached it before
    // registering; the executor reads the driver's mark after this reply.
    let ring = pid.and_then(|p| shared.rings.take(p)).filter(|r| r.is_attached(Side::Executor));
    if let Some(r) = &ring {
        r.mark_attached(Side::Driver);
    }
    // The reply goes over the socket: the executor reads it before it detaches.
    if let Err(e) = writer.send(&ToExecutor::RegisteredExecutor).await {
        return refuse(&shared, format!("executor {id}: cannot confirm its registration: {e}"));
    }
    // From here the event loop reads this connection.
    let (reader, writer) = match ember_rpc::detach_with_ring(reader, writer, ring.map(|r| (r, Side::Driver))) {
        Ok(halves) => halves,
        Err(e) => return refuse(&shared, format!("executor {id}: {e}")),
    };
    let link = SharedWriter::start(writer);
    shared.executors.lock().insert(id.clone(), ExecutorConn { link: link.clone() });
    shared.registered.lock().push(Incoming { id, cores, block_address, reader, link, last_seen: Instant::now() });
    shared.any_registered.store(true, Ordering::Release);
    // The event loop reports the executor added when it takes the
    // connection, so its loss can never come first.
    shared.loop_tx.wake();
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
    runtime: tokio::runtime::Handle,
    /// Executors with messages queued this loop turn that must leave at its end.
    dirty: Vec<ExecutorId>,
    /// The connections this backend reads, for the event loop.
    incoming: Vec<Incoming>,
    /// Connections found dead in this poll, with why.
    lost: Vec<(usize, String)>,
    silence_checked: Instant,
    /// Per executor, the stage attempts it has been told about, with their
    /// payload hashes: the first task of an attempt carries its hash.
    attempts: HashMap<ExecutorId, HashMap<(StageId, u32), [u8; 32]>>,
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

    /// Ends a connection: the executor is lost to the scheduler, and the
    /// launcher hears of it (it replaces executors).
    fn lose(&mut self, index: usize, reason: String, into: &mut Vec<LoopMsg>) {
        let conn = self.incoming.swap_remove(index);
        self.shared.executors.lock().remove(&conn.id);
        self.attempts.remove(&conn.id);
        tracing::warn!(executor = %conn.id, %reason, "executor lost");
        for w in self.shared.lost_watchers.lock().iter() {
            let _ = w.send(conn.id.clone());
        }
        into.push(LoopMsg::ExecutorLost { executor: conn.id, reason });
    }
}

impl SchedulerBackend for ClusterBackend {
    fn launch(&mut self, launch: Launch) {
        let exec = launch.executor.clone();
        let (attempt, hash) = ((launch.task.stage_id, launch.task.stage_attempt), launch.task.payload_hash);
        let first = self.attempts.entry(exec.clone()).or_default().insert(attempt, hash).is_none();
        // The scheduler attaches the payload once per hash per executor; the
        // hash goes with each attempt's first task there.
        let stage = (first || launch.payload.is_some())
            .then(|| WireStage { hash, bytes: launch.payload.map(|p| p.bytes.clone()) });
        let task_id = launch.task.task_id;
        if !self.push(&exec, ToExecutor::LaunchTask { task: WireTask::new(&launch.task), stage }) {
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
        if let Some(attempts) = self.attempts.get_mut(executor) {
            attempts.retain(|_, h| *h != payload_hash);
        }
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

    fn reads_connections(&self) -> bool {
        true
    }

    fn poll_incoming(&mut self, into: &mut Vec<LoopMsg>) {
        if self.shared.any_registered.swap(false, Ordering::AcqRel) {
            for conn in self.shared.registered.lock().drain(..) {
                into.push(LoopMsg::ExecutorAdded {
                    executor: conn.id.clone(),
                    cores: conn.cores,
                    block_address: conn.block_address.clone(),
                });
                self.incoming.push(conn);
            }
        }
        let mut now = None;
        for (index, conn) in self.incoming.iter_mut().enumerate() {
            let mut heard = false;
            let ended = loop {
                match conn.reader.try_recv::<ToDriver>() {
                    Ok(Some(msg)) => {
                        heard = true;
                        if let Some(reason) = receive(&self.shared, &self.runtime, conn, msg, into) {
                            break Some(reason);
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(format!("connection to {} ended: {e}", conn.id)),
                };
            };
            if heard {
                conn.last_seen = *now.get_or_insert_with(Instant::now);
            }
            if let Some(reason) = ended {
                self.lost.push((index, reason));
            }
        }
        // An executor silent this long (no heartbeat or other message) is lost.
        let now = now.unwrap_or_else(Instant::now);
        if now.duration_since(self.silence_checked) >= SILENCE_CHECK {
            self.silence_checked = now;
            let timeout = self.shared.settings.network_timeout;
            for (index, conn) in self.incoming.iter().enumerate() {
                if now.duration_since(conn.last_seen) > timeout && !self.lost.iter().any(|(i, _)| *i == index) {
                    self.lost.push((
                        index,
                        format!("no heartbeat from {} for {timeout:?} (ember.network.timeout)", conn.id),
                    ));
                }
            }
        }
        // Highest index first, so the indices left stay valid.
        self.lost.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
        for (index, reason) in std::mem::take(&mut self.lost) {
            self.lose(index, reason, into);
        }
    }

    fn wait_incoming(&mut self, bell: &Doorbell, timeout: Option<Duration>) {
        // Wake for the silence check even when nothing else happens.
        let timeout = timeout.map_or(SILENCE_CHECK, |t| t.min(SILENCE_CHECK));
        if let Err(e) = ember_rpc::wait_any(self.incoming.iter().map(|c| &c.reader), bell.as_fd(), timeout) {
            tracing::warn!(error = %e, "cannot wait on executor connections");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Hands one message from an executor to the event loop (or answers it
/// here). Returns why the connection must end, if it must.
fn receive(
    shared: &Arc<Shared>,
    runtime: &tokio::runtime::Handle,
    conn: &Incoming,
    msg: ToDriver,
    into: &mut Vec<LoopMsg>,
) -> Option<String> {
    match msg {
        ToDriver::StatusUpdate {
            task_id,
            state: state @ TaskState::Finished { output: TaskOutput::Stored { .. }, .. },
        } => {
            // Fetched off the loop; the update follows through the channel.
            let (shared, address) = (shared.clone(), conn.block_address.clone());
            runtime.spawn(async move {
                let state = resolve_stored(&shared, &address, task_id, state).await;
                let _ = shared.loop_tx.send(LoopMsg::StatusUpdate { task_id, state });
            });
        }
        ToDriver::StatusUpdate { task_id, state } => into.push(LoopMsg::StatusUpdate { task_id, state }),
        ToDriver::Heartbeat { .. } => {
            conn.link.send(&ToExecutor::HeartbeatAck);
        }
        ToDriver::MemoryReport { used } => {
            shared.memory_reports.lock().insert(conn.id.clone(), used);
        }
        ToDriver::RegisterExecutor { .. } => return Some(format!("{} registered twice", conn.id)),
    }
    None
}

/// How often the event loop looks for executors silent for longer than
/// `ember.network.timeout`.
const SILENCE_CHECK: Duration = Duration::from_millis(500);
