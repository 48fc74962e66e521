//! Workload 5a, sched: scheduler throughput — one stage of 10,000 trivial
//! tasks (`parallelize(1..=10000, 10000).count()`), so the time is almost
//! all per-task overhead: task creation, encoding/shipping, launch, status
//! updates and result delivery. `sched_tasks_per_sec = 10000 / seconds` of
//! the action. Valid when the count is 10,000.
//!
//! The native version dispatches the same 10,000 slice-counting closures to
//! a long-lived 2-thread [`Pool`] over std channels.

use crate::harness::{ms_since, Measurement};
use ember::Context;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const TASKS: usize = 10_000;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of worker threads fed by one shared channel: the native
/// stand-in for an engine's task slots.
pub struct Pool {
    tx: Option<mpsc::Sender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    pub fn new(threads: usize) -> Pool {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
            })
            .collect();
        Pool { tx: Some(tx), workers }
    }

    /// Runs `f(i)` for `i in 0..n` on the pool and returns the results in order.
    pub fn run<R: Send + 'static>(&self, n: usize, f: impl Fn(usize) -> R + Send + Sync + 'static) -> Vec<R> {
        let f = Arc::new(f);
        let (rtx, rrx) = mpsc::channel::<(usize, R)>();
        let tx = self.tx.as_ref().expect("pool is running");
        for i in 0..n {
            let (f, rtx) = (f.clone(), rtx.clone());
            tx.send(Box::new(move || {
                let _ = rtx.send((i, f(i)));
            }))
            .expect("pool workers alive");
        }
        drop(rtx);
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        for (i, r) in rrx {
            out[i] = Some(r);
        }
        out.into_iter().map(|r| r.expect("every task reported")).collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Counts `data` in `slices` slices on the pool, like `parallelize(data, slices).count()`.
pub fn pool_count(pool: &Pool, data: Vec<i32>, slices: usize) -> u64 {
    let data = Arc::new(data);
    let len = data.len();
    pool.run(slices, move |i| data[i * len / slices..(i + 1) * len / slices].len() as u64).into_iter().sum()
}

fn results(elapsed_ms: f64, count: u64) -> Vec<Measurement> {
    let ok = count == TASKS as u64;
    vec![
        Measurement::new("sched_10k_tasks_time", elapsed_ms, "ms", format!("count={count} valid={ok}")),
        Measurement::new(
            "sched_tasks_per_sec",
            TASKS as f64 / (elapsed_ms / 1e3),
            "tasks/s",
            format!("count={count} valid={ok}"),
        ),
    ]
}

/// The engine version.
pub fn ember(sc: &Context) -> anyhow::Result<Vec<Measurement>> {
    let t0 = Instant::now();
    let count = sc.parallelize((1..=TASKS as i32).collect::<Vec<i32>>(), TASKS).count()?;
    Ok(results(ms_since(t0), count))
}

/// The native version.
pub fn native(pool: &Pool) -> anyhow::Result<Vec<Measurement>> {
    let t0 = Instant::now();
    let count = pool_count(pool, (1..=TASKS as i32).collect(), TASKS);
    Ok(results(ms_since(t0), count))
}
