//! A fixed-size pool of task threads. Threads get large stacks because a
//! task's iterator pipeline nests one frame per narrow transformation, and
//! lineage can be thousands of transformations deep.

use crossbeam_channel::{unbounded, Sender};
use std::thread::JoinHandle;

/// Stack reserved for each task thread (virtual memory; touched pages only).
pub const TASK_STACK_SIZE: usize = 256 << 20;

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct TaskPool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl TaskPool {
    /// `spin_wait`: how long an idle thread polls for its next task before
    /// it sleeps (see `ember_common::spin`).
    pub fn new(name: &str, threads: usize, spin_wait: std::time::Duration) -> std::io::Result<Self> {
        let (tx, rx) = unbounded::<Job>();
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            handles.push(
                std::thread::Builder::new().name(format!("{name}-task-{i}")).stack_size(TASK_STACK_SIZE).spawn(
                    move || loop {
                        let next = ember_common::spin::spin_for(spin_wait, || rx.try_recv().ok());
                        match next.map_or_else(|| rx.recv(), Ok) {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    },
                )?,
            );
        }
        Ok(TaskPool { tx: Some(tx), threads: handles })
    }

    pub fn execute(&self, job: impl FnOnce() + Send + 'static) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Box::new(job));
        }
    }

    /// Lets queued jobs finish, then joins every thread.
    pub fn shutdown(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
