//! `local-cluster[E,C,M]`: E executor processes of the driver's own
//! executable on this host, C task threads and M MiB of shuffle memory each
//! — the form Spark's distributed tests use. Real processes, real RPC, real
//! shuffle fetches over loopback.
//!
//! The application secret goes to each child on its stdin; its settings in
//! `EMBER_*` environment variables. Children exit when their connection to
//! the driver ends, so they never outlive the driver, however it ends.

use crate::cluster_backend::{ClusterSettings, DriverEndpoint};
use crossbeam_channel::Sender;
use ember_common::{Error, ExecutorId, Result};
use ember_rpc::launch::ProcessConfig;
use ember_rpc::{Secret, ToExecutor};
use ember_scheduler::event_loop::LoopMsg;
use parking_lot::Mutex;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
}

pub struct LocalCluster {
    runtime: tokio::runtime::Runtime,
    endpoint: DriverEndpoint,
    children: Mutex<Vec<(ExecutorId, Child)>>,
    config: LocalClusterConfig,
    secret: Secret,
    next_id: Mutex<usize>,
}

impl LocalCluster {
    /// Starts the driver endpoint and E executor processes, and waits until all have registered.
    pub fn start(config: LocalClusterConfig, loop_tx: Sender<LoopMsg>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ember-driver-io")
            .thread_stack_size(16 << 20)
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the driver's network runtime", e))?;
        let secret = Secret::generate();
        let endpoint = DriverEndpoint::start(
            &runtime,
            secret.clone(),
            ClusterSettings {
                max_frame: config.max_frame,
                network_timeout: config.network_timeout,
                max_result_size: config.max_result_size,
            },
            loop_tx,
        )
        .map_err(|e| Error::io("cannot open the driver endpoint", e))?;
        let cluster = LocalCluster {
            runtime,
            endpoint,
            children: Mutex::new(Vec::new()),
            config,
            secret,
            next_id: Mutex::new(0),
        };
        for _ in 0..cluster.config.executors {
            cluster.launch_executor()?;
        }
        cluster.wait_for_executors(cluster.config.executors)?;
        Ok(cluster)
    }

    pub fn endpoint(&self) -> &DriverEndpoint {
        &self.endpoint
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// Process ids of the live executor processes.
    pub fn executor_pids(&self) -> Vec<(ExecutorId, u32)> {
        self.children.lock().iter().map(|(id, c)| (id.clone(), c.id())).collect()
    }

    /// Starts one more executor process (used at startup and to replace lost ones).
    pub fn launch_executor(&self) -> Result<ExecutorId> {
        let n = {
            let mut next = self.next_id.lock();
            *next += 1;
            *next - 1
        };
        let id = ExecutorId(n.to_string());
        let process_config = ember_executor_env(&self.config, &id, self.endpoint.address());
        let exe = std::env::current_exe().map_err(|e| Error::io("cannot locate the running executable", e))?;
        let mut child = Command::new(exe)
            .envs(process_config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::io("cannot start an executor process", e))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(format!("{}\n", self.secret.to_hex()).as_bytes())
            .map_err(|e| Error::io("cannot hand the secret to an executor", e))?;
        drop(stdin);
        self.children.lock().push((id.clone(), child));
        Ok(id)
    }

    fn wait_for_executors(&self, n: usize) -> Result<()> {
        let deadline = Instant::now() + self.config.register_timeout;
        while self.endpoint.registered().len() < n {
            for (id, child) in self.children.lock().iter_mut() {
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
                    self.config.register_timeout
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Asks every executor to stop, waits briefly, then kills what is left.
    pub fn stop(&self) {
        self.endpoint.broadcast(|| ToExecutor::StopExecutor);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut children = self.children.lock();
        for (_, child) in children.iter_mut() {
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
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ember_executor_env(config: &LocalClusterConfig, id: &ExecutorId, driver: &str) -> Vec<(String, String)> {
    ProcessConfig {
        executor_id: id.0.clone(),
        driver_address: driver.to_string(),
        cores: config.cores,
        dir: config.app_dir.join(format!("executor-{}", id.0)),
        memory_budget: config.memory_bytes,
        compress: config.compress,
        block_size: config.block_size,
        max_direct_result: config.max_direct_result,
        heartbeat: config.heartbeat,
        max_frame: config.max_frame,
    }
    .to_env()
}
