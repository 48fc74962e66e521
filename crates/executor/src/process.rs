//! The executor process (Spark's `CoarseGrainedExecutorBackend`).
//!
//! A driver launches executors by running its *own executable* with
//! `EMBER_EXECUTOR_MODE=1` and the settings below in the environment, and the
//! application secret on stdin (never on the command line). Before the
//! user's `main` runs, [`run_if_requested`] sees the marker and turns the
//! process into an executor, which:
//!
//! 1. starts its block server (shuffle segments and large task results);
//! 2. connects to the driver, authenticates, and sends `RegisterExecutor`
//!    with its executable hash and protocol version, then waits for
//!    `RegisteredExecutor` (or exits with the driver's refusal);
//! 3. runs `LaunchTask`s on its [`Executor`], answers `KillTask`,
//!    `ReleaseStage`, `UnpersistRdd`, `ReportMemory`, and reports every
//!    `StatusUpdate`; results over `maxDirectResultSize` stay in the block
//!    server until the driver fetches them;
//! 4. heartbeats; and exits when told to (`StopExecutor`, `Shutdown`) or when
//!    the driver connection ends for any reason — so executors never outlive
//!    their driver.
//!
//! The driver's messages are read by the executor's idle task threads
//! (`Control`, the pool's [`Inbox`]): the thread that reads a
//! `LaunchTask` runs it, with no I/O thread polling beside the task threads
//! and no hand-off between them. When every task thread has been busy with
//! one task for a few milliseconds, the process's main thread reads instead,
//! so a `KillTask` never waits for the task it is meant to stop. The tokio
//! runtime keeps the rest: the block server, heartbeats, delayed flushes,
//! and the writes the socket could not take at once.

use crate::env::{ExecutorConfig, RemoteFetcher};
use crate::executor::{Executor, ExecutorBackend};
use crate::pool::Inbox;
use ember_common::{ExecutorId, StageId, TaskFailure, TaskId};
use ember_core::task::{CachedBlockLocation, MapStatus, SegmentFetch, StagePayload, TaskEnv, TaskOutput, TaskState};
use ember_rpc::launch::{ProcessConfig, EXECUTOR_MODE_ENV};
use ember_rpc::ring::{RingFile, Side, RING_FD_ENV};
use ember_rpc::shared::Soon;
use ember_rpc::{
    accept, connect, BlockClients, BlockRequest, BlockResponse, BlockingReader, ConnReader, Secret, SharedWriter,
    ToDriver, ToExecutor, PROTOCOL_VERSION,
};
use foldhash::{HashMap, HashMapExt};
use parking_lot::Mutex;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// True when this process was launched as an executor.
pub fn is_executor_process() -> bool {
    std::env::var_os(EXECUTOR_MODE_ENV).is_some_and(|v| v == "1")
}

/// If this process was launched as an executor, runs it and exits; otherwise returns.
pub fn run_if_requested() {
    if !is_executor_process() {
        return;
    }
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ember executor: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn run() -> Result<(), String> {
    let config = ProcessConfig::from_env()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read the secret from stdin: {e}"))?;
    let secret = Secret::from_hex(&line).ok_or("stdin did not carry a valid application secret")?;
    let ring = inherited_ring();
    let runtime =
        ember_rpc::io_runtime("ember-executor-io", 64 << 20).map_err(|e| format!("cannot start the runtime: {e}"))?;
    // The driver's messages are handled on task threads or, while those are
    // busy, on the thread that runs `serve`. A released stage may be dropped
    // there, walking its whole lineage, so that thread gets a task thread's
    // stack rather than the process's main one.
    std::thread::Builder::new()
        .name("ember-executor-main".into())
        .stack_size(crate::pool::TASK_STACK_SIZE)
        .spawn(move || {
            let result = {
                let _in_runtime = runtime.enter();
                serve(&runtime, config, secret, ring)
            };
            runtime.shutdown_timeout(Duration::from_secs(1));
            result
        })
        .map_err(|e| format!("cannot start the executor's main thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the executor's main thread panicked".into()))
}

/// Sends status updates to the driver, parking large results in the block
/// server. Task threads write them to the connection themselves.
///
/// A task's `Running` is held until the next flush and leaves within
/// [`FLUSH_SOON`](ember_rpc::shared::FLUSH_SOON); if the task ends first,
/// its final update stands for it and `Running` is not sent at all. For a
/// run of sub-millisecond tasks
/// that removes a third of the messages the driver decodes and handles;
/// every task that runs longer still reports `Running` as it starts.
struct DriverLink {
    out: Arc<SharedWriter>,
    results: Arc<Mutex<HashMap<TaskId, Vec<u8>>>>,
    max_direct_result: usize,
    /// Tasks whose `Running` has not gone out yet.
    unsent_running: Mutex<Vec<TaskId>>,
    soon: Soon,
}

impl DriverLink {
    fn start(
        out: Arc<SharedWriter>,
        results: Arc<Mutex<HashMap<TaskId, Vec<u8>>>>,
        max_direct_result: usize,
    ) -> Arc<Self> {
        Arc::new_cyclic(|weak| DriverLink {
            out,
            results,
            max_direct_result,
            unsent_running: Mutex::new(Vec::new()),
            soon: Soon::new(weak.clone(), <DriverLink as ExecutorBackend>::flush),
        })
    }
}

impl ExecutorBackend for DriverLink {
    fn status_update(&self, task_id: TaskId, state: TaskState) {
        if matches!(state, TaskState::Running) {
            self.unsent_running.lock().push(task_id);
            return;
        }
        {
            let mut unsent = self.unsent_running.lock();
            if let Some(at) = unsent.iter().position(|t| *t == task_id) {
                unsent.swap_remove(at);
            }
        }
        let state = match state {
            TaskState::Finished { output: TaskOutput::Result(bytes), metrics }
                if bytes.len() > self.max_direct_result =>
            {
                let size = bytes.len() as u64;
                self.results.lock().insert(task_id, bytes);
                TaskState::Finished { output: TaskOutput::Stored { size }, metrics }
            }
            other => other,
        };
        self.out.push(&ToDriver::StatusUpdate { task_id, state });
    }

    fn flush(&self) {
        for task_id in self.unsent_running.lock().drain(..) {
            self.out.push(&ToDriver::StatusUpdate { task_id, state: TaskState::Running });
        }
        self.out.flush();
    }

    fn flush_soon(&self) {
        self.soon.arm();
    }
}

/// Fetches shuffle segments from other executors' block servers.
struct ShuffleFetcher {
    clients: Arc<BlockClients>,
}

impl ShuffleFetcher {
    /// Sends the request now; the returned closure waits for and checks the answer.
    fn request(
        &self,
        status: &MapStatus,
        shuffle_id: u64,
        map_index: usize,
        reduce_id: usize,
    ) -> impl FnOnce() -> Result<Vec<u8>, TaskFailure> + Send + 'static {
        let wait = self
            .clients
            .fetch_in_background(&status.address, BlockRequest::ShuffleSegment { shuffle_id, map_index, reduce_id });
        let status = status.clone();
        move || {
            let failed = |message: String| TaskFailure::FetchFailed { shuffle_id, map_index, reduce_id, message };
            let expected = status.partition_lengths.get(reduce_id).copied().unwrap_or(0);
            match wait() {
                Ok(BlockResponse::Bytes(b)) if b.len() as u64 == expected => Ok(b),
                Ok(BlockResponse::Bytes(b)) => {
                    Err(failed(format!("{} returned {} bytes, expected {expected}", status.executor, b.len())))
                }
                Ok(BlockResponse::Missing(m)) => Err(failed(format!("{}: {m}", status.executor))),
                Err(e) => Err(failed(format!("cannot fetch from {} at {}: {e}", status.executor, status.address))),
            }
        }
    }
}

impl RemoteFetcher for ShuffleFetcher {
    fn fetch(
        &self,
        status: &MapStatus,
        shuffle_id: u64,
        map_index: usize,
        reduce_id: usize,
    ) -> Result<Vec<u8>, TaskFailure> {
        self.request(status, shuffle_id, map_index, reduce_id)()
    }

    fn start(&self, status: &MapStatus, shuffle_id: u64, map_index: usize, reduce_id: usize) -> SegmentFetch {
        let wait = self.request(status, shuffle_id, map_index, reduce_id);
        Box::new(move |_: &dyn TaskEnv| wait())
    }

    fn fetch_cached(&self, location: &CachedBlockLocation) -> Result<Vec<u8>, String> {
        let (rdd_id, partition) = (location.rdd_id, location.partition);
        let wait = self.clients.fetch_in_background(&location.address, BlockRequest::CachedBlock { rdd_id, partition });
        match wait() {
            Ok(BlockResponse::Bytes(b)) => Ok(b),
            Ok(BlockResponse::Missing(m)) => Err(format!("{}: {m}", location.executor)),
            Err(e) => Err(format!("cannot fetch from {} at {}: {e}", location.executor, location.address)),
        }
    }
}

/// The ring file the launcher handed down, if any and if it is one, marked
/// attached. Called before any other thread exists.
fn inherited_ring() -> Option<Arc<RingFile>> {
    let fd: std::os::fd::RawFd = std::env::var(RING_FD_ENV).ok()?.parse().ok()?;
    // SAFETY: only borrowed for these checks; nothing is closed if they fail.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    // Own the descriptor only if it is a sealed memory file, as the
    // launcher's is, so a stray variable cannot close someone else's.
    if rustix::fs::fcntl_get_seals(borrowed).is_err() {
        tracing::warn!(fd, "{RING_FD_ENV} names no ring file; control frames use the socket");
        return None;
    }
    // Children of this process do not inherit it.
    let _ = rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC);
    // SAFETY: the launcher left this descriptor open for this process and
    // nothing else here owns it.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    match RingFile::open(owned) {
        Ok(ring) => {
            ring.mark_attached(Side::Executor);
            Some(ring)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the inherited ring file is unusable; control frames use the socket");
            None
        }
    }
}

/// Connects, authenticates and registers; returns the block server's
/// listener and address, the driver connection, and `ring` if the driver
/// attached it too.
async fn register(
    config: &ProcessConfig,
    secret: &Secret,
    ring: Option<Arc<RingFile>>,
) -> Result<(TcpListener, String, ConnReader, ember_rpc::ConnWriter, Option<Arc<RingFile>>), String> {
    let block_listener =
        TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("cannot bind the block server: {e}"))?;
    let block_address = block_listener.local_addr().map_err(|e| e.to_string())?.to_string();
    let stream = ember_rpc::Stream::connect(&config.driver_address)
        .await
        .map_err(|e| format!("cannot reach the driver at {}: {e}", config.driver_address))?;
    let (mut reader, mut writer) = connect(stream, secret, PROTOCOL_VERSION, config.max_frame)
        .await
        .map_err(|e| format!("cannot connect to the driver: {e}"))?;
    writer
        .send(&ToDriver::RegisterExecutor {
            executor_id: config.executor_id.clone(),
            host: "127.0.0.1".into(),
            block_address: block_address.clone(),
            cores: config.cores,
            exe_hash: *ember_core::codec::exe_hash(),
            protocol_version: PROTOCOL_VERSION,
        })
        .await
        .map_err(|e| format!("cannot register: {e}"))?;
    match reader.recv::<ToExecutor>().await.map_err(|e| format!("no registration reply: {e}"))? {
        // The driver marks the ring before its reply when it uses it too.
        ToExecutor::RegisteredExecutor => {
            Ok((block_listener, block_address, reader, writer, ring.filter(|r| r.is_attached(Side::Driver))))
        }
        ToExecutor::RegisterExecutorFailed { reason } => Err(format!("registration refused: {reason}")),
        other => Err(format!("unexpected reply to registration: {other:?}")),
    }
}

/// How often the process's main thread looks for a stop, a silent driver,
/// or task threads too busy to read the driver's connection.
const WATCH_TICK: Duration = Duration::from_millis(10);
/// Once every task thread has run one task this long, the main thread
/// reads the driver's connection until one is free (so a `KillTask` is
/// never stuck behind the task it is meant to stop).
const BUSY_BEFORE_WATCH: Duration = Duration::from_millis(5);

/// Runs the executor on this thread until it is told to stop, the
/// connection ends, or the driver falls silent.
fn serve(
    runtime: &tokio::runtime::Runtime,
    config: ProcessConfig,
    secret: Secret,
    ring: Option<Arc<RingFile>>,
) -> Result<(), String> {
    let (block_listener, block_address, reader, writer, ring) = runtime.block_on(register(&config, &secret, ring))?;
    // From here idle task threads read the driver's messages themselves.
    let (reader, writer) = ember_rpc::detach_with_ring(reader, writer, ring.map(|r| (r, Side::Executor)))
        .map_err(|e| format!("cannot take over the driver connection: {e}"))?;
    let out = SharedWriter::start(writer);
    let results: Arc<Mutex<HashMap<TaskId, Vec<u8>>>> = Arc::default();
    let clients = Arc::new(BlockClients::new(runtime.handle().clone(), secret.clone(), config.max_frame));
    let (stop_tx, stop_rx) = crossbeam_channel::unbounded();
    let control = Arc::new(Control {
        reader: Mutex::new(Reading { reader, stage_hashes: HashMap::new() }),
        executor: OnceLock::new(),
        out: out.clone(),
        stop: stop_tx,
        ended: AtomicBool::new(false),
        epoch: Instant::now(),
        heard_ms: AtomicU64::new(0),
    });
    let executor = Arc::new(
        Executor::new(
            ExecutorConfig {
                id: ExecutorId::from(config.executor_id.as_str()),
                cores: config.cores,
                dir: config.dir.clone(),
                memory_budget: config.memory_budget,
                compress: config.compress,
                block_size: config.block_size,
                block_address: block_address.clone(),
                spin_wait: config.spin_wait,
            },
            DriverLink::start(out.clone(), results.clone(), config.max_direct_result),
            Some(Arc::new(ShuffleFetcher { clients })),
            Some(control.clone()),
        )
        .map_err(|e| e.to_string())?,
    );
    let _ = control.executor.set(Arc::downgrade(&executor));
    runtime.spawn(serve_blocks(block_listener, secret, executor.clone(), results, config.max_frame));
    let heartbeat_out = out.clone();
    let id = config.executor_id.clone();
    let interval = config.heartbeat;
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            if !heartbeat_out.send(&ToDriver::Heartbeat { executor_id: id.clone() }) {
                return;
            }
        }
    });

    let timeout = config.network_timeout;
    let reason = loop {
        match stop_rx.recv_timeout(WATCH_TICK) {
            Ok(reason) => break reason,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break "the connection reader is gone".into(),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        // Any message from the driver proves it is alive; heartbeats are acknowledged.
        if control.silence() > timeout {
            break format!("no word from the driver within ember.network.timeout ({timeout:?})");
        }
        while executor.all_busy_for(BUSY_BEFORE_WATCH) && !control.ended.load(Ordering::Acquire) {
            control.read(Some((Duration::from_millis(2), &|| false)));
            // A task thread that went idle meanwhile found this thread
            // reading and sleeps on the queue: it reads from here on.
            executor.wake_idle_reader();
            if control.silence() > timeout {
                break;
            }
        }
    };
    tracing::info!(%reason, "executor exiting");
    executor.stop();
    Ok(())
}

/// The driver's connection as the task threads' [`Inbox`]: whichever
/// thread is idle reads it and handles what it brings.
struct Control {
    reader: Mutex<Reading>,
    /// Set once the executor exists; nothing is read before.
    executor: OnceLock<Weak<Executor>>,
    out: Arc<SharedWriter>,
    /// Why the process must end (`StopExecutor`, the connection's end).
    stop: crossbeam_channel::Sender<String>,
    ended: AtomicBool,
    epoch: Instant,
    /// When the driver was last heard from, in ms since `epoch`.
    heard_ms: AtomicU64,
}

/// What the reading thread holds.
struct Reading {
    reader: BlockingReader,
    /// The payload hash of each stage attempt this executor has received:
    /// a `LaunchTask` after the attempt's first names the attempt only.
    stage_hashes: HashMap<(StageId, u32), [u8; 32]>,
}

impl Control {
    /// Reads and handles every message that has arrived, after sleeping on
    /// the socket for up to `wait`'s duration if given (and its check finds
    /// no task queued). False if another thread is reading, or (without
    /// `wait`) nothing had arrived.
    fn read(&self, wait: Option<(Duration, &dyn Fn() -> bool)>) -> bool {
        if self.ended.load(Ordering::Acquire) {
            return false;
        }
        let Some(executor) = self.executor.get().and_then(Weak::upgrade) else {
            // Task threads start before the executor is in place: those
            // that would sleep look again soon rather than sleep long.
            if let Some((t, _)) = wait {
                std::thread::sleep(t.min(Duration::from_millis(1)));
                return true;
            }
            return false;
        };
        let Some(mut reading) = self.reader.try_lock() else { return false };
        let Reading { reader, stage_hashes } = &mut *reading;
        // Never sleep on the socket while a task waits in the queue.
        if let Some((t, _)) = wait.filter(|(_, work_queued)| !work_queued()) {
            if let Err(e) = reader.wait(t) {
                self.end(format!("cannot wait on the driver connection: {e}"));
                return true;
            }
        }
        let mut heard = false;
        loop {
            match reader.try_recv::<ToExecutor>() {
                Ok(Some(msg)) => {
                    heard = true;
                    if !self.handle(&executor, stage_hashes, msg) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.end(format!("driver connection ended: {e}"));
                    break;
                }
            }
        }
        if heard {
            self.heard_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        heard || wait.is_some()
    }

    /// False when the process must stop.
    fn handle(
        &self,
        executor: &Executor,
        stage_hashes: &mut HashMap<(StageId, u32), [u8; 32]>,
        msg: ToExecutor,
    ) -> bool {
        match msg {
            ToExecutor::LaunchTask { task, stage } => {
                let attempt = (task.stage_id, task.stage_attempt);
                // An attempt never received gets no hash, and the task fails
                // to find its stage, as it would with a wrong hash.
                let hash = match &stage {
                    Some(s) => *stage_hashes.entry(attempt).insert_entry(s.hash).get(),
                    None => stage_hashes.get(&attempt).copied().unwrap_or_default(),
                };
                let payload = stage.and_then(|s| s.bytes.map(|bytes| Arc::new(StagePayload { hash: s.hash, bytes })));
                executor.launch_task(task.describe(hash), payload);
            }
            ToExecutor::KillTask { task_id, reason } => executor.kill_task(task_id, &reason),
            ToExecutor::ReleaseStage { payload_hash } => {
                stage_hashes.retain(|_, h| *h != payload_hash);
                executor.release_stage(&payload_hash);
            }
            ToExecutor::UnpersistRdd { rdd_id } => {
                executor.env().blocks().remove_rdd(rdd_id);
            }
            ToExecutor::ReportMemory => {
                self.out.send(&ToDriver::MemoryReport { used: executor.env().memory_pool().used() as u64 });
            }
            ToExecutor::StopExecutor | ToExecutor::Shutdown => {
                self.end("told to stop".into());
                return false;
            }
            ToExecutor::RegisteredExecutor | ToExecutor::RegisterExecutorFailed { .. } | ToExecutor::HeartbeatAck => {}
        }
        true
    }

    fn end(&self, reason: String) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            tracing::info!(%reason, "driver connection done");
            let _ = self.stop.send(reason);
        }
    }

    /// How long since the driver was last heard from.
    fn silence(&self) -> Duration {
        let heard = Duration::from_millis(self.heard_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(heard)
    }
}

impl Inbox for Control {
    fn poll(&self) -> bool {
        self.read(None)
    }

    fn wait(&self, timeout: Duration, work_queued: &dyn Fn() -> bool) -> bool {
        self.read(Some((timeout, work_queued)))
    }

    fn has_reader(&self) -> bool {
        // Once the connection has ended nobody reads: idle threads sleep.
        self.ended.load(Ordering::Acquire) || self.reader.is_locked()
    }
}

/// Serves shuffle segments and parked results to authenticated peers.
async fn serve_blocks(
    listener: TcpListener,
    secret: Secret,
    executor: Arc<Executor>,
    results: Arc<Mutex<HashMap<TaskId, Vec<u8>>>>,
    max_frame: usize,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { return };
        let (secret, executor, results) = (secret.clone(), executor.clone(), results.clone());
        tokio::spawn(async move {
            let (mut reader, writer) = match accept(stream, &secret, PROTOCOL_VERSION, max_frame).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "refused a block connection");
                    return;
                }
            };
            let (tx, rx) = mpsc::unbounded_channel::<(u64, BlockResponse)>();
            tokio::spawn(ember_rpc::pump(writer, rx));
            while let Ok((id, req)) = reader.recv::<(u64, BlockRequest)>().await {
                let (executor, results, tx) = (executor.clone(), results.clone(), tx.clone());
                tokio::task::spawn_blocking(move || {
                    let resp = match req {
                        BlockRequest::ShuffleSegment { shuffle_id, map_index, reduce_id } => {
                            let path = executor.env().map_output_path(shuffle_id, map_index);
                            match ember_shuffle::read_segment(&path, reduce_id) {
                                Ok(b) => BlockResponse::Bytes(b),
                                Err(e) => BlockResponse::Missing(e.to_string()),
                            }
                        }
                        BlockRequest::TaskResult { task_id } => match results.lock().remove(&task_id) {
                            Some(b) => BlockResponse::Bytes(b),
                            None => BlockResponse::Missing(format!("no stored result for {task_id}")),
                        },
                        BlockRequest::CachedBlock { rdd_id, partition } => {
                            match executor.env().blocks().encoded(rdd_id, partition) {
                                Ok(b) => BlockResponse::Bytes(b),
                                Err(e) => BlockResponse::Missing(e),
                            }
                        }
                    };
                    let _ = tx.send((id, resp));
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_core::metrics::TaskMetricsSnapshot;

    /// A `DriverLink` over loopback and the driver's end of it.
    async fn link() -> (Arc<DriverLink>, ember_rpc::ConnReader) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let secret = Secret::generate();
        let s2 = secret.clone();
        let driver = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            accept(stream, &s2, PROTOCOL_VERSION, 1 << 20).await.unwrap()
        });
        let (_r, w) = connect(tokio::net::TcpStream::connect(addr).await.unwrap(), &secret, PROTOCOL_VERSION, 1 << 20)
            .await
            .unwrap();
        let (driver_reader, _driver_writer) = driver.await.unwrap();
        (DriverLink::start(SharedWriter::start(w), Arc::default(), 1 << 20), driver_reader)
    }

    async fn next(r: &mut ember_rpc::ConnReader) -> (u64, bool) {
        match tokio::time::timeout(Duration::from_secs(10), r.recv::<ToDriver>()).await.unwrap().unwrap() {
            ToDriver::StatusUpdate { task_id, state } => (task_id.0, matches!(state, TaskState::Running)),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn finished() -> TaskState {
        TaskState::Finished { output: TaskOutput::Result(vec![1]), metrics: TaskMetricsSnapshot::default() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn running_is_sent_unless_the_task_ends_before_the_next_flush() {
        let (link, mut driver) = link().await;
        // Ends before any flush: its end stands for Running.
        link.status_update(TaskId(1), TaskState::Running);
        link.status_update(TaskId(1), finished());
        // Still running at the flush: Running goes out, then its end.
        link.status_update(TaskId(2), TaskState::Running);
        link.flush();
        link.status_update(TaskId(2), finished());
        link.flush();
        assert_eq!(next(&mut driver).await, (1, false));
        assert_eq!(next(&mut driver).await, (2, true));
        assert_eq!(next(&mut driver).await, (2, false));
        // A long task's Running leaves on its own, without a flush.
        link.status_update(TaskId(3), TaskState::Running);
        link.flush_soon();
        assert_eq!(next(&mut driver).await, (3, true));
    }
}
