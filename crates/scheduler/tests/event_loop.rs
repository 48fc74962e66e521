//! The event loop run by real threads against a fake backend: who runs the
//! loop while callers wait for their jobs, and that the loop keeps running
//! when they stop waiting.

use ember_common::{ExecutorId, RddId, SystemClock, TaskId};
use ember_core::metrics::TaskMetricsSnapshot;
use ember_core::rdd::{ParallelCollectionRdd, RddNode};
use ember_core::task::{TaskOutput, TaskState};
use ember_core::RddBase;
use ember_scheduler::event_loop::{JobMsg, LoopConfig};
use ember_scheduler::task_scheduler::Launch;
use ember_scheduler::{loop_channel, DriverHandle, ListenerBus, LoopMsg, LoopSender, SchedulerBackend};
use parking_lot::Mutex;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// What the fake executor does with a task.
#[derive(Clone, Copy)]
enum Finish {
    /// Reports it finished from inside `launch`.
    AtOnce,
    /// Reports it finished from another thread after this long.
    After(Duration),
    /// Never reports.
    Never,
    /// Panics in `launch`.
    Panic,
}

/// Which thread launched a task.
#[derive(Clone, Debug, PartialEq)]
struct Launcher {
    id: ThreadId,
    name: Option<String>,
}

impl Launcher {
    fn current() -> Self {
        let t = std::thread::current();
        Launcher { id: t.id(), name: t.name().map(str::to_string) }
    }
    fn is_loop_thread(&self) -> bool {
        self.name.as_deref() == Some("ember-dag-scheduler")
    }
}

/// A backend whose one executor answers every task with its partition
/// number, and which records the thread each launch happened on.
struct FakeBackend {
    tx: LoopSender,
    finish: Finish,
    launched_on: Arc<Mutex<Vec<Launcher>>>,
}

fn finished(partition: usize) -> TaskState {
    TaskState::Finished {
        output: TaskOutput::Result(postcard::to_allocvec(&(partition as u64)).unwrap()),
        metrics: TaskMetricsSnapshot::default(),
    }
}

impl SchedulerBackend for FakeBackend {
    fn launch(&mut self, launch: Launch) {
        self.launched_on.lock().push(Launcher::current());
        let (task_id, partition) = (launch.task.task_id, launch.task.partition);
        let update = LoopMsg::StatusUpdate { task_id, state: finished(partition) };
        match self.finish {
            Finish::AtOnce => {
                let _ = self.tx.send(update);
            }
            Finish::After(wait) => {
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(wait);
                    let _ = tx.send(update);
                });
            }
            Finish::Never => {}
            Finish::Panic => panic!("the fake backend cannot launch"),
        }
    }
    fn kill(&mut self, _executor: &ExecutorId, _task_id: TaskId, _reason: &str) {}
    fn release(&mut self, _executor: &ExecutorId, _payload_hash: [u8; 32]) {}
    fn stop(&mut self) {}
}

/// A driver whose loop polls for `spin_wait` before it sleeps, with one
/// four-core fake executor.
fn driver(finish: Finish, spin_wait: Duration) -> (Arc<DriverHandle>, Arc<Mutex<Vec<Launcher>>>) {
    let (tx, rx) = loop_channel().unwrap();
    let launched_on = Arc::new(Mutex::new(Vec::new()));
    let backend = FakeBackend { tx: tx.clone(), finish, launched_on: launched_on.clone() };
    let config = LoopConfig {
        max_task_failures: 4,
        max_consecutive_stage_attempts: 4,
        short_task_queue: 0,
        tiny_task: Duration::ZERO,
        locality_wait: Duration::ZERO,
        spin_wait,
    };
    let driver = DriverHandle::start(
        config,
        Box::new(backend),
        ListenerBus::start(),
        Arc::new(SystemClock::new()),
        (tx.clone(), rx),
    );
    tx.send(LoopMsg::ExecutorAdded { executor: ExecutorId::from("fake"), cores: 4, block_address: String::new() })
        .unwrap();
    (Arc::new(driver), launched_on)
}

/// Runs a two-partition job and returns its results, in partition order.
fn run_job(driver: &DriverHandle, rdd_id: u64, lead_for: Duration) -> Result<Vec<u64>, String> {
    run_wide_job(driver, rdd_id, 2, lead_for)
}

/// Runs a job of `partitions` tasks and returns its results, in partition
/// order. Its data is empty, so the job is quick to encode however wide.
fn run_wide_job(driver: &DriverHandle, rdd_id: u64, partitions: usize, lead_for: Duration) -> Result<Vec<u64>, String> {
    let rdd: Arc<dyn RddBase> = Arc::new(ParallelCollectionRdd::new(RddId(rdd_id), Vec::<u32>::new(), partitions));
    let sink = Arc::new(RddNode(rdd.clone()));
    let all = (0..partitions).collect();
    let (_, mut waiter) = driver.submit_job(rdd, sink, all, None, lead_for).map_err(|e| e.to_string())?;
    let mut results = vec![None; partitions];
    loop {
        match waiter.recv().map_err(|e| e.to_string())? {
            JobMsg::TaskResults(batch) => {
                for (index, bytes) in batch {
                    results[index] = Some(postcard::from_bytes::<u64>(&bytes).unwrap());
                }
            }
            JobMsg::Done(Ok(())) => break,
            JobMsg::Done(Err(e)) => return Err(e.to_string()),
        }
    }
    Ok(results.into_iter().map(|r| r.expect("every partition has a result")).collect())
}

/// Runs `f` on another thread and fails (rather than hang) if it takes
/// longer than a minute.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("hung")
}

#[test]
fn a_waiting_caller_runs_the_loop_itself() {
    within_a_minute(|| {
        let (driver, launched_on) = driver(Finish::AtOnce, Duration::from_millis(1));
        for job in 0..20 {
            assert_eq!(run_job(&driver, job, Duration::from_secs(30)).unwrap(), vec![0, 1]);
        }
        let me = std::thread::current().id();
        let launches = launched_on.lock().clone();
        assert_eq!(launches.len(), 40);
        // The loop thread steps aside once a caller waits; it may take the
        // odd job before it notices.
        let mine = launches.iter().filter(|t| t.id == me).count();
        assert!(mine >= 30, "only {mine} of 40 tasks were launched by the waiting caller");
        driver.stop();
    });
}

#[test]
fn a_caller_that_does_not_lead_leaves_the_loop_to_its_thread() {
    within_a_minute(|| {
        let (driver, launched_on) = driver(Finish::AtOnce, Duration::from_millis(1));
        for job in 0..5 {
            assert_eq!(run_job(&driver, job, Duration::ZERO).unwrap(), vec![0, 1]);
        }
        let me = std::thread::current().id();
        assert!(launched_on.lock().iter().all(|t| t.id != me && t.is_loop_thread()));
        driver.stop();
    });
}

#[test]
fn a_caller_that_stops_leading_leaves_the_loop_running() {
    within_a_minute(|| {
        // The tasks end long after the caller's 1 ms of leading: the loop
        // thread must take over to hear of them.
        let (driver, _) = driver(Finish::After(Duration::from_millis(50)), Duration::ZERO);
        for job in 0..3 {
            assert_eq!(run_job(&driver, job, Duration::from_millis(1)).unwrap(), vec![0, 1]);
        }
        driver.stop();
    });
}

#[test]
fn a_caller_leads_only_for_its_budget_even_while_results_stream_in() {
    within_a_minute(|| {
        // 40,000 tasks that end as soon as they are launched: the caller
        // hears of results all the time, but after its 5 ms the loop thread
        // does the launching.
        let (driver, launched_on) = driver(Finish::AtOnce, Duration::from_millis(1));
        // Tiny jobs first, so that the loop thread has stepped aside.
        for job in 1..=3 {
            assert_eq!(run_job(&driver, job, Duration::from_millis(5)).unwrap(), vec![0, 1]);
        }
        launched_on.lock().clear();
        let n = 40_000;
        let results = run_wide_job(&driver, 0, n, Duration::from_millis(5)).unwrap();
        assert_eq!(results, (0..n as u64).collect::<Vec<_>>());
        let launches = launched_on.lock().clone();
        assert_eq!(launches.len(), n);
        let by_loop_thread = launches.iter().filter(|t| t.is_loop_thread()).count();
        assert!(by_loop_thread > n / 2, "the loop thread launched only {by_loop_thread} of {n} tasks");
        driver.stop();
    });
}

#[test]
fn a_panic_in_a_turn_fails_the_jobs_instead_of_hanging_them() {
    for lead_for in [Duration::from_secs(30), Duration::ZERO] {
        within_a_minute(move || {
            let (driver, _) = driver(Finish::Panic, Duration::from_millis(1));
            let err = run_job(&driver, 0, lead_for).unwrap_err();
            assert!(err.contains("panic"), "{err}");
            // The loop is gone: later jobs fail at once rather than wait.
            let started = Instant::now();
            assert!(run_job(&driver, 1, Duration::from_secs(30)).is_err());
            assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
            driver.stop();
        });
    }
}

#[test]
fn concurrent_callers_share_the_loop() {
    within_a_minute(|| {
        let (driver, launched_on) = driver(Finish::AtOnce, Duration::from_millis(1));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let driver = driver.clone();
                std::thread::spawn(move || {
                    for job in 0..50 {
                        assert_eq!(run_job(&driver, t * 1000 + job, Duration::from_secs(30)).unwrap(), vec![0, 1]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(launched_on.lock().len(), 400);
        driver.stop();
    });
}

#[test]
fn stopping_while_a_caller_runs_the_loop_fails_its_job() {
    within_a_minute(|| {
        let (driver, _) = driver(Finish::Never, Duration::from_millis(1));
        let stopper = {
            let driver = driver.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                driver.stop();
            })
        };
        let started = Instant::now();
        let err = run_job(&driver, 0, Duration::from_secs(30)).unwrap_err();
        assert!(err.contains("stopped"), "{err}");
        // Well within the caller's 30 s of leading.
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        stopper.join().unwrap();
        // And a job after the stop fails at once.
        let started = Instant::now();
        assert!(run_job(&driver, 1, Duration::from_secs(30)).is_err());
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    });
}
