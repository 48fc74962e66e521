//! [`Context`]: the entry point (Spark's `SparkContext`). It owns the
//! configuration, the driver's scheduler event loop and listener bus, the
//! application's local directory and, in `local` mode, the in-process
//! executor. Every action goes through [`Context::run_job`].

use crate::local_backend::{LocalBackend, LoopForwarder};
use crate::master::MasterUrl;
use crate::progress::ConsoleProgressBar;
use crate::rdd::Rdd;
use ember_common::{Clock, Conf, Error, ExecutorId, RddId, Result, ShuffleId, SystemClock};
use ember_core::codec::ShippableFn;
use ember_core::rdd::{EmptyRdd, ParallelCollectionRdd, RangeRdd, TextFileRdd, UnionRdd};
use ember_core::sinks::ResultSink;
use ember_core::{BoxIter, Data, TaskContext};
use ember_deploy::local_cluster::LocalClusterConfig;
use ember_deploy::LocalCluster;
use ember_executor::{Executor, ExecutorConfig};
use ember_scheduler::event_loop::{LoopConfig, LoopMsg};
use ember_scheduler::{DriverHandle, JobMsg, Listener, ListenerBus};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`Context`]: master URL, application name, `ember.*` settings.
pub struct ContextBuilder {
    master: Option<String>,
    conf: Conf,
}

impl ContextBuilder {
    pub fn master(mut self, url: &str) -> Self {
        self.master = Some(url.to_string());
        self
    }

    pub fn app_name(mut self, name: &str) -> Self {
        self.conf.set("ember.app.name", name);
        self
    }

    /// Sets any `ember.*` key (see `ember_common::KNOWN_KEYS`).
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.conf.set(key, value.to_string());
        self
    }

    pub fn build(self) -> Result<Context> {
        let master =
            self.master.or_else(|| std::env::var("EMBER_MASTER").ok()).unwrap_or_else(|| "local[*]".to_string());
        Context::start(&master, self.conf)
    }
}

thread_local! {
    /// The job group of jobs submitted from this thread.
    static JOB_GROUP: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Where executors live.
enum Deployment {
    /// One executor inside this process.
    Local(Arc<Executor>),
    /// Executor processes started by this driver.
    Cluster(Arc<LocalCluster>),
}

pub(crate) struct ContextInner {
    conf: Conf,
    master: MasterUrl,
    default_parallelism: usize,
    next_rdd_id: AtomicU64,
    next_shuffle_id: AtomicU64,
    next_broadcast_id: AtomicU64,
    driver: DriverHandle,
    bus: Arc<ListenerBus>,
    deployment: Deployment,
    app_dir: PathBuf,
    max_result_size: u64,
    /// How long `run_job` polls for its job's next message before it sleeps.
    spin_wait: Duration,
    scale_up_factor: usize,
    progress: Option<ConsoleProgressBar>,
    stopped: AtomicBool,
}

/// The handle users hold. Cheap to clone; the application stops when the last
/// clone (including those inside RDDs) is dropped, or on [`Context::stop`].
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<ContextInner>,
}

impl Context {
    /// A context on `master` with default settings (overlaid by `EMBER_CONF`).
    pub fn new(master: &str) -> Result<Context> {
        Context::builder().master(master).build()
    }

    pub fn builder() -> ContextBuilder {
        ContextBuilder { master: None, conf: Conf::new() }
    }

    fn start(master_url: &str, explicit: Conf) -> Result<Context> {
        let master = MasterUrl::parse(master_url)?;
        let mut conf = Conf::from_env()?;
        for (k, v) in explicit.iter() {
            conf.set(k, v);
        }
        if ember_executor::process::is_executor_process() {
            return Err(Error::Stopped(
                "this process was started as an Ember executor, but executor mode was not entered before main; \
                 call ember::init() as the first line of main"
                    .into(),
            ));
        }
        let url_failures = match &master {
            MasterUrl::Local { max_failures, .. } => *max_failures,
            MasterUrl::LocalCluster { .. } => None,
        };
        let slots = master.total_cores();
        let max_task_failures = match url_failures {
            Some(f) => f,
            None => conf.get_u64("ember.task.maxFailures")?.unwrap_or(4) as u32,
        };
        let default_parallelism =
            conf.get_u64("ember.default.parallelism")?.map(|n| n as usize).unwrap_or(slots).max(1);
        let base_dir = conf.get_string("ember.local.dir").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let app_dir = tempfile::Builder::new()
            .prefix("ember-app-")
            .tempdir_in(&base_dir)
            .map_err(|e| Error::io(format!("cannot create a directory in ember.local.dir {}", base_dir.display()), e))?
            .keep();
        let bus = ListenerBus::start();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let (tx, rx) = ember_scheduler::loop_channel()
            .map_err(|e| Error::io("cannot create the scheduler's doorbell (an eventfd)", e))?;
        let compress = conf.get_bool("ember.shuffle.compress")?.unwrap_or(true);
        let block_size = conf.get_bytes("ember.shuffle.blockSize")?.unwrap_or(64 << 10) as usize;
        let max_result_size = conf.get_bytes("ember.driver.maxResultSize")?.unwrap_or(1 << 30);
        let spin_wait = conf.get_duration("ember.spinWait")?.unwrap_or(ember_common::spin::DEFAULT_SPIN_WAIT);
        let loop_config = LoopConfig {
            max_task_failures,
            max_consecutive_stage_attempts: conf.get_u64("ember.stage.maxConsecutiveAttempts")?.unwrap_or(4) as u32,
            short_task_queue: conf.get_u64("ember.scheduler.shortTaskQueueDepth")?.unwrap_or(256) as usize,
            tiny_task: conf
                .get_duration("ember.scheduler.tinyTaskThreshold")?
                .unwrap_or(Duration::from_micros(ember_scheduler::task_scheduler::DEFAULT_TINY_TASK_US)),
            locality_wait: conf.get_duration("ember.locality.wait")?.unwrap_or(Duration::from_secs(3)),
            spin_wait,
        };
        let (deployment, backend): (Deployment, Box<dyn ember_scheduler::SchedulerBackend>) = match &master {
            MasterUrl::Local { threads, .. } => {
                let executor = Arc::new(Executor::new(
                    ExecutorConfig {
                        id: ExecutorId::from("driver"),
                        cores: *threads,
                        dir: app_dir.join("executor-driver"),
                        memory_budget: conf.get_bytes("ember.memory.budget")?.unwrap_or(4 << 30) as usize,
                        compress,
                        block_size,
                        block_address: String::new(),
                        spin_wait,
                    },
                    Arc::new(LoopForwarder(tx.clone())),
                    None,
                    None,
                )?);
                let _ = tx.send(LoopMsg::ExecutorAdded {
                    executor: ExecutorId::from("driver"),
                    cores: *threads,
                    block_address: String::new(),
                });
                (Deployment::Local(executor.clone()), Box::new(LocalBackend { executor }))
            }
            MasterUrl::LocalCluster { executors, cores, memory_mib } => {
                let cluster = Arc::new(LocalCluster::start(
                    LocalClusterConfig {
                        executors: *executors,
                        cores: *cores,
                        // An explicit ember.memory.budget wins over the URL's M.
                        memory_bytes: match conf.get("ember.memory.budget") {
                            Some(_) => conf.get_bytes("ember.memory.budget")?.unwrap_or(0) as usize,
                            None => memory_mib << 20,
                        },
                        app_dir: app_dir.clone(),
                        compress,
                        block_size,
                        max_direct_result: conf.get_bytes("ember.task.maxDirectResultSize")?.unwrap_or(1 << 20)
                            as usize,
                        max_result_size,
                        heartbeat: conf
                            .get_duration("ember.executor.heartbeatInterval")?
                            .unwrap_or(Duration::from_secs(10)),
                        network_timeout: conf
                            .get_duration("ember.network.timeout")?
                            .unwrap_or(Duration::from_secs(120)),
                        max_frame: conf.get_bytes("ember.rpc.maxFrameSize")?.unwrap_or(512 << 20) as usize,
                        register_timeout: Duration::from_secs(60),
                        spin_wait,
                        unix_socket: conf.get_bool("ember.rpc.unixSocket")?.unwrap_or(true),
                        shared_memory: conf.get_bool("ember.rpc.sharedMemory")?.unwrap_or(true),
                    },
                    tx.clone(),
                )?);
                let backend = cluster.endpoint().backend();
                (Deployment::Cluster(cluster), Box::new(backend))
            }
        };
        let driver = DriverHandle::start(loop_config, backend, bus.clone(), clock, (tx, rx));
        let show_progress = conf.get_bool("ember.ui.showConsoleProgress")?.unwrap_or(true);
        let progress = ConsoleProgressBar::start_if_terminal(show_progress, &bus);
        Ok(Context {
            inner: Arc::new(ContextInner {
                max_result_size,
                spin_wait,
                scale_up_factor: conf.get_u64("ember.rdd.limit.scaleUpFactor")?.unwrap_or(4).max(2) as usize,
                conf,
                master,
                default_parallelism,
                next_rdd_id: AtomicU64::new(0),
                next_shuffle_id: AtomicU64::new(0),
                next_broadcast_id: AtomicU64::new(0),
                driver,
                bus,
                deployment,
                app_dir,
                progress,
                stopped: AtomicBool::new(false),
            }),
        })
    }

    pub fn conf(&self) -> &Conf {
        &self.inner.conf
    }

    pub fn master(&self) -> &MasterUrl {
        &self.inner.master
    }

    /// Partitions used when an operation is not told how many (Spark's `defaultParallelism`).
    pub fn default_parallelism(&self) -> usize {
        self.inner.default_parallelism
    }

    pub(crate) fn scale_up_factor(&self) -> usize {
        self.inner.scale_up_factor
    }

    pub(crate) fn new_rdd_id(&self) -> RddId {
        RddId(self.inner.next_rdd_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn new_shuffle_id(&self) -> ShuffleId {
        ShuffleId(self.inner.next_shuffle_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Distributes a local collection over `num_slices` partitions.
    pub fn parallelize<T: Data>(&self, data: Vec<T>, num_slices: usize) -> Rdd<T> {
        let node = ParallelCollectionRdd::new(self.new_rdd_id(), data, num_slices.max(1));
        Rdd::from_node(self, Arc::new(node))
    }

    /// `start, start+step, ...` up to (not including) `end`, in `num_slices` partitions.
    pub fn range(&self, start: i64, end: i64, step: i64, num_slices: usize) -> Result<Rdd<i64>> {
        let node = RangeRdd::new(self.new_rdd_id(), start, end, step, num_slices.max(1))?;
        Ok(Rdd::from_node(self, Arc::new(node)))
    }

    /// The lines of a text file, or of every visible file in a directory,
    /// in at least `min_partitions` byte-range splits (Hadoop's rules).
    pub fn text_file(&self, path: impl AsRef<Path>, min_partitions: usize) -> Result<Rdd<String>> {
        let node = TextFileRdd::new(self.new_rdd_id(), path.as_ref(), min_partitions)?;
        Ok(Rdd::from_node(self, Arc::new(node)))
    }

    /// Fixed-length binary records (`record_len` bytes each) of a file or
    /// directory, in at least `min_partitions` splits of whole records.
    pub fn binary_records(
        &self,
        path: impl AsRef<Path>,
        record_len: usize,
        min_partitions: usize,
    ) -> Result<Rdd<Vec<u8>>> {
        let node =
            ember_core::rdd::BinaryRecordsRdd::new(self.new_rdd_id(), path.as_ref(), record_len, min_partitions)?;
        Ok(Rdd::from_node(self, Arc::new(node)))
    }

    /// An RDD with no partitions and no elements.
    pub fn empty<T: Data>(&self) -> Rdd<T> {
        Rdd::from_node(self, Arc::new(EmptyRdd::<T>::new(self.new_rdd_id())))
    }

    /// The partitions of all `rdds`, in order.
    pub fn union<T: Data>(&self, rdds: &[Rdd<T>]) -> Rdd<T> {
        let parents = rdds.iter().map(|r| r.node.clone()).collect();
        Rdd::from_node(self, Arc::new(UnionRdd::new(self.new_rdd_id(), parents)))
    }

    /// Wraps a read-only value for use by closures on every executor.
    pub fn broadcast<T>(&self, value: T) -> crate::broadcast::Broadcast<T> {
        crate::broadcast::Broadcast::new(self.inner.next_broadcast_id.fetch_add(1, Ordering::Relaxed), value)
    }

    /// Registers a listener for job, stage, task and executor events.
    pub fn add_listener(&self, listener: Arc<dyn Listener>) {
        self.inner.bus.add_listener(listener);
    }

    /// Waits until every listener event posted so far has been delivered.
    pub fn wait_for_listeners(&self) -> bool {
        self.inner.bus.wait_until_empty(std::time::Duration::from_secs(30))
    }

    /// Tags jobs submitted from this thread with `group` (Spark's `setJobGroup`),
    /// so [`cancel_job_group`](Self::cancel_job_group) can cancel them.
    pub fn set_job_group(&self, group: &str) {
        JOB_GROUP.with(|g| *g.borrow_mut() = Some(group.to_string()));
    }

    /// Stops tagging this thread's jobs with a group.
    pub fn clear_job_group(&self) {
        JOB_GROUP.with(|g| *g.borrow_mut() = None);
    }

    /// Cancels the running jobs of `group`: their tasks are killed and each
    /// job returns a cancellation error.
    pub fn cancel_job_group(&self, group: &str) {
        self.inner.driver.cancel_group(group, &format!("part of cancelled job group {group}"));
    }

    /// Cancels one job (its id is in the listener's `JobStart` event).
    pub fn cancel_job(&self, job_id: ember_common::JobId) {
        self.inner.driver.cancel_job(job_id, "cancelled by cancel_job");
    }

    /// Cancels every running job; each returns a cancellation error.
    pub fn cancel_all_jobs(&self) {
        self.inner.driver.cancel_all("cancelled by cancel_all_jobs");
    }

    /// Bytes currently reserved in the in-process executor's memory pool
    /// (0 when no task is running; tests use it to check nothing leaks).
    pub fn executor_memory_used(&self) -> usize {
        use ember_core::TaskEnv;
        match &self.inner.deployment {
            Deployment::Local(e) => e.env().memory_pool().used(),
            Deployment::Cluster(c) => c.endpoint().memory_used(Duration::from_secs(10)).unwrap_or(u64::MAX) as usize,
        }
    }

    /// Executor ids and process ids of executor processes (empty in `local` mode).
    pub fn executor_processes(&self) -> Vec<(String, u32)> {
        match &self.inner.deployment {
            Deployment::Local(_) => Vec::new(),
            Deployment::Cluster(c) => {
                c.executor_pids().into_iter().map(|(id, pid)| (id.as_str().to_string(), pid)).collect()
            }
        }
    }

    /// Executors currently registered with the driver.
    pub fn registered_executors(&self) -> usize {
        match &self.inner.deployment {
            Deployment::Local(_) => 1,
            Deployment::Cluster(c) => c.endpoint().registered().len(),
        }
    }

    /// Process ids of executor processes (empty in `local` mode).
    pub fn executor_pids(&self) -> Vec<u32> {
        match &self.inner.deployment {
            Deployment::Local(_) => Vec::new(),
            Deployment::Cluster(c) => c.executor_pids().into_iter().map(|(_, pid)| pid).collect(),
        }
    }

    /// This application's scratch directory (shuffle files live below it).
    pub fn local_dir(&self) -> &Path {
        &self.inner.app_dir
    }

    pub(crate) fn unpersist_rdd(&self, rdd: RddId) {
        self.inner.driver.rdd_unpersisted(rdd.0);
        match &self.inner.deployment {
            Deployment::Local(e) => {
                e.env().blocks().remove_rdd(rdd.0);
            }
            Deployment::Cluster(c) => c.endpoint().broadcast(|| ember_rpc::ToExecutor::UnpersistRdd { rdd_id: rdd.0 }),
        }
    }

    /// Runs `f(state, task context, partition)` on each of `partitions` and
    /// returns the results in partition order: the path of every action.
    pub fn run_job<T, R, S, F>(&self, rdd: &Rdd<T>, partitions: Vec<usize>, state: S, f: F) -> Result<Vec<R>>
    where
        T: Data,
        R: Serialize + DeserializeOwned + 'static,
        S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn(&S, &TaskContext, BoxIter<T>) -> Result<R> + ShippableFn,
    {
        if self.inner.stopped.load(Ordering::Acquire) {
            return Err(Error::Stopped("cannot run a job on a stopped context".into()));
        }
        let n = rdd.num_partitions();
        if let Some(bad) = partitions.iter().find(|p| **p >= n) {
            return Err(Error::InvalidArgument(format!(
                "Attempting to access a non-existent partition: {bad}. Total number of partitions: {n}"
            )));
        }
        let sink = Arc::new(ResultSink::new(rdd.node.clone(), state, f));
        let count = partitions.len();
        let group = JOB_GROUP.with(|g| g.borrow().clone());
        // This thread polls (running the event loop's turns itself) only
        // while the job is young: a tiny job ends within the budget, and a
        // long one's stream of results would otherwise keep this thread
        // polling beside the threads doing work.
        let (job_id, mut waiter) =
            self.inner.driver.submit_job(rdd.base(), sink, partitions, group, self.inner.spin_wait)?;
        let mut results: Vec<Option<R>> = (0..count).map(|_| None).collect();
        let mut total_bytes: u64 = 0;
        let limit = self.inner.max_result_size;
        loop {
            match waiter.recv() {
                Ok(JobMsg::TaskResults(batch)) => {
                    for (output_index, bytes) in batch {
                        total_bytes += bytes.len() as u64;
                        if limit > 0 && total_bytes > limit {
                            self.inner.driver.cancel_job(job_id, "result size limit exceeded");
                            return Err(Error::JobAborted {
                                reason: format!(
                                    "Total size of serialized results of {} tasks ({total_bytes} bytes) is bigger \
                                     than ember.driver.maxResultSize ({limit} bytes)",
                                    results.iter().filter(|r| r.is_some()).count() + 1
                                ),
                            });
                        }
                        let value = postcard::from_bytes(&bytes)
                            .map_err(|e| Error::Codec(format!("decoding a task result: {e}")))?;
                        results[output_index] = Some(value);
                    }
                }
                Ok(JobMsg::Done(Ok(()))) => break,
                Ok(JobMsg::Done(Err(e))) => return Err(e),
                Err(_) => return Err(Error::Stopped("the scheduler stopped during the job".into())),
            }
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::Stopped("a job finished with a missing result".into())))
            .collect()
    }

    /// Stops the scheduler and executor and removes the application's files.
    /// Running jobs fail with a "stopped" error. Idempotent.
    pub fn stop(&self) {
        self.inner.stop();
    }
}

impl ContextInner {
    fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.driver.stop();
        match &self.deployment {
            Deployment::Local(e) => e.stop(),
            Deployment::Cluster(c) => c.stop(),
        }
        if let Some(p) = &self.progress {
            p.stop();
        }
        self.bus.stop();
        let _ = std::fs::remove_dir_all(&self.app_dir);
    }
}

impl Drop for ContextInner {
    fn drop(&mut self) {
        self.stop();
    }
}
