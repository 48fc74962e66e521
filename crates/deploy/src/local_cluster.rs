//! `local-cluster[E,C,M]`: E executor processes of the driver's own
//! executable on this host, C task threads and M MiB of shuffle memory each
//! — the form Spark's distributed tests use. Real processes, real RPC, real
//! shuffle fetches over loopback.
//!
//! The application secret goes to each child on its stdin; its settings in
//! `EMBER_*` environment variables. Children exit when their connection to
//! the driver ends, so they never outlive the driver, however it ends.

use crate::cluster_backend::{ClusterSettings, DriverEndpoint, RingOffers};
use ember_common::{Error, ExecutorId, Result};
use ember_rpc::launch::ProcessConfig;
use ember_rpc::ring::RingFile;
use ember_rpc::{Secret, ToExecutor};
use ember_scheduler::LoopSender;
use parking_lot::Mutex;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every executor of the cluster is started with.
#[derive(Clone, Debug)]
pub struct LocalClusterConfig {
    pub executors: usize,
    pub cores: usize,
    /// Shuffle and aggregation memory per executor, in bytes.
    pub memory_bytes: usize,
    pub app_dir: PathBuf,
    pub compress: bool,
    pub block_size: usize,
    pub max_direct_result: usize,
    pub max_result_size: u64,
    pub heartbeat: Duration,
    pub network_timeout: Duration,
    pub max_frame: usize,
    pub register_timeout: Duration,
    /// `ember.spinWait`, for the driver's readers and the executors.
    pub spin_wait: Duration,
    /// `ember.rpc.unixSocket`: executors reach the driver over a Unix socket
    /// in `app_dir` rather than loopback TCP.
    pub unix_socket: bool,
    /// Whether each executor also shares a ring file with the driver for
    /// control frames (with `unix_socket` only: the ring is found through
    /// the Unix socket's peer credentials).
    pub shared_memory: bool,
}

pub struct LocalCluster {
    runtime: tokio::runtime::Runtime,
    endpoint: DriverEndpoint,
    launcher: Arc<Launcher>,
}

/// Starts executor processes and keeps their handles.
struct Launcher {
    children: Mutex<Vec<(ExecutorId, Child)>>,
    config: LocalClusterConfig,
    secret: Secret,
    driver_address: String,
    next_id: Mutex<usize>,
    stopping: AtomicBool,
    rings: RingOffers,
}

impl LocalCluster {
    /// Starts the driver endpoint and E executor processes, and waits until all have registered.
    /// Lost executors are replaced for as long as the cluster runs.
    pub fn start(config: LocalClusterConfig, loop_tx: LoopSender) -> Result<Self> {
        let runtime = ember_rpc::io_runtime("ember-driver-io", 16 << 20)
            .map_err(|e| Error::io("cannot start the driver's network runtime", e))?;
        let secret = Secret::generate();
        let endpoint = DriverEndpoint::start(
            &runtime,
            secret.clone(),
            ClusterSettings {
                max_frame: config.max_frame,
                network_timeout: config.network_timeout,
                max_result_size: config.max_result_size,
                unix_socket: config.unix_socket.then(|| config.app_dir.join("driver.sock")),
            },
            loop_tx,
        )
        .map_err(|e| Error::io("cannot open the driver endpoint", e))?;
        let launcher = Arc::new(Launcher {
            children: Mutex::new(Vec::new()),
            config,
            secret,
            driver_address: endpoint.unix_address().unwrap_or(endpoint.address()).to_string(),
            next_id: Mutex::new(0),
            stopping: AtomicBool::new(false),
            rings: endpoint.ring_offers(),
        });
        let (lost_tx, lost_rx) = crossbeam_channel::unbounded::<ExecutorId>();
        endpoint.watch_lost(lost_tx);
        let cluster = LocalCluster { runtime, endpoint, launcher: launcher.clone() };
        for _ in 0..launcher.config.executors {
            launcher.launch()?;
        }
        cluster.wait_for_executors(launcher.config.executors)?;
        // Replaces lost executors; ends when the endpoint (and its watcher channel) goes away.
        std::thread::Builder::new()
            .name("ember-executor-replacer".into())
            .spawn(move || {
                for lost in lost_rx {
                    if launcher.stopping.load(Ordering::Acquire) {
                        break;
                    }
                    launcher.reap(&lost);
                    if let Err(e) = launcher.launch() {
                        tracing::warn!(error = %e, "cannot start a replacement executor");
                    }
                }
            })
            .map_err(|e| Error::io("cannot start the executor replacer", e))?;
        Ok(cluster)
    }

    pub fn endpoint(&self) -> &DriverEndpoint {
        &self.endpoint
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// Executor ids and process ids of the executor processes started so far and still tracked.
    pub fn executor_pids(&self) -> Vec<(ExecutorId, u32)> {
        self.launcher.children.lock().iter().map(|(id, c)| (id.clone(), c.id())).collect()
    }

    fn wait_for_executors(&self, n: usize) -> Result<()> {
        let deadline = Instant::now() + self.launcher.config.register_timeout;
        while self.endpoint.registered().len() < n {
            for (id, child) in self.launcher.children.lock().iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Stopped(format!(
                        "executor {} exited during startup ({status}); refusals: {:?}",
                        id.0,
                        self.endpoint.refusals()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Stopped(format!(
                    "only {} of {n} executors registered within {:?}",
                    self.endpoint.registered().len(),
                    self.launcher.config.register_timeout
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Asks every executor to stop, waits briefly, then kills what is left.
    /// An executor that is not registered (still starting, or lost) cannot
    /// be asked and holds no work: it is killed at once, not waited for.
    pub fn stop(&self) {
        self.launcher.stopping.store(true, Ordering::Release);
        let registered: std::collections::HashSet<ExecutorId> = self.endpoint.registered().into_iter().collect();
        self.endpoint.broadcast(|| ToExecutor::StopExecutor);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut children = self.launcher.children.lock();
        for (id, child) in children.iter_mut() {
            if !registered.contains(id) {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        children.clear();
        self.launcher.rings.clear();
    }
}

impl Launcher {
    /// Starts one executor process.
    fn launch(&self) -> Result<ExecutorId> {
        let n = {
            let mut next = self.next_id.lock();
            *next += 1;
            *next - 1
        };
        let id = ExecutorId::from(n.to_string());
        let process_config = ember_executor_env(&self.config, &id, &self.driver_address);
        let exe = std::env::current_exe().map_err(|e| Error::io("cannot locate the running executable", e))?;
        let mut command = Command::new(exe);
        command.envs(process_config).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::inherit());
        let ring = self.ring_for(&mut command);
        let mut child = command.spawn().map_err(|e| Error::io("cannot start an executor process", e))?;
        if let Some(ring) = ring {
            self.rings.offer(child.id(), ring);
        }
        let mut stdin = child.stdin.take().expect("piped stdin");
        if let Err(e) = stdin.write_all(format!("{}\n", self.secret.to_hex()).as_bytes()) {
            self.rings.withdraw(child.id());
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::io("cannot hand the secret to an executor", e));
        }
        drop(stdin);
        self.children.lock().push((id.clone(), child));
        Ok(id)
    }

    /// A ring file for the next executor, handed to it as an inherited
    /// descriptor, when the configuration asks for one and one can be made.
    fn ring_for(&self, command: &mut Command) -> Option<Arc<RingFile>> {
        if !(self.config.shared_memory && self.config.unix_socket) {
            return None;
        }
        let ring = match RingFile::create(ember_rpc::ring::DEFAULT_CAPACITY) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "no shared-memory ring for an executor; its control frames use the socket");
                return None;
            }
        };
        let fd = ring.raw_fd();
        command.env(ember_rpc::ring::RING_FD_ENV, fd.to_string());
        // SAFETY: between fork and exec the child only clears the descriptor's
        // close-on-exec flag, one async-signal-safe system call; `ring`, which
        // owns the descriptor, outlives `spawn`.
        unsafe {
            command.pre_exec(move || {
                rustix::io::fcntl_setfd(std::os::fd::BorrowedFd::borrow_raw(fd), rustix::io::FdFlags::empty())
                    .map_err(std::io::Error::from)
            });
        }
        Some(ring)
    }

    /// Makes sure a lost executor's process is gone (it may be frozen, not dead).
    fn reap(&self, id: &ExecutorId) {
        let mut children = self.children.lock();
        if let Some(pos) = children.iter().position(|(c, _)| c == id) {
            let (_, mut child) = children.remove(pos);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ember_executor_env(config: &LocalClusterConfig, id: &ExecutorId, driver: &str) -> Vec<(String, String)> {
    ProcessConfig {
        executor_id: id.as_str().to_string(),
        driver_address: driver.to_string(),
        cores: config.cores,
        dir: config.app_dir.join(format!("executor-{}", id.0)),
        memory_budget: config.memory_bytes,
        compress: config.compress,
        block_size: config.block_size,
        max_direct_result: config.max_direct_result,
        heartbeat: config.heartbeat,
        network_timeout: config.network_timeout,
        max_frame: config.max_frame,
        spin_wait: config.spin_wait,
    }
    .to_env()
}
