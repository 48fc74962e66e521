//! The listener bus: job, stage, task and executor events delivered, in
//! order, to registered listeners on a dedicated thread, so a slow listener
//! never stalls scheduling. [`ListenerBus::wait_until_empty`] lets tests
//! observe events deterministically.
//!
//! Events travel in batches ([`ListenerBus::post_all`]): the event loop
//! posts what one turn produced at once, so a burst of short tasks wakes the
//! bus thread once, not twice per task.

use crossbeam_channel::{unbounded, Sender};
use ember_common::{ExecutorId, JobId, StageId, TaskId};
use ember_core::metrics::TaskMetricsSnapshot;
use parking_lot::{Condvar, Mutex, RwLock};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub enum ListenerEvent {
    JobStart {
        job_id: JobId,
        stage_ids: Vec<StageId>,
        time: u64,
    },
    JobEnd {
        job_id: JobId,
        succeeded: bool,
        error: Option<String>,
        time: u64,
    },
    StageSubmitted {
        stage_id: StageId,
        attempt: u32,
        name: String,
        num_tasks: usize,
        time: u64,
    },
    StageCompleted {
        stage_id: StageId,
        attempt: u32,
        failure: Option<String>,
        time: u64,
    },
    TaskStart {
        task_id: TaskId,
        stage_id: StageId,
        stage_attempt: u32,
        partition: usize,
        attempt: u32,
        executor: ExecutorId,
        time: u64,
    },
    TaskEnd {
        task_id: TaskId,
        stage_id: StageId,
        stage_attempt: u32,
        partition: usize,
        attempt: u32,
        executor: ExecutorId,
        /// `None` on success, else the failure.
        failure: Option<String>,
        metrics: TaskMetricsSnapshot,
        time: u64,
    },
    ExecutorAdded {
        executor: ExecutorId,
        cores: usize,
        time: u64,
    },
    ExecutorRemoved {
        executor: ExecutorId,
        reason: String,
        time: u64,
    },
}

/// Receives events on the bus thread.
pub trait Listener: Send + Sync {
    fn on_event(&self, event: &ListenerEvent);
}

struct Counters {
    posted: u64,
    processed: u64,
}

/// Delivers events to listeners on its own thread.
pub struct ListenerBus {
    tx: Mutex<Option<Sender<Vec<ListenerEvent>>>>,
    listeners: Arc<RwLock<Vec<Arc<dyn Listener>>>>,
    counters: Arc<(Mutex<Counters>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ListenerBus {
    pub fn start() -> Arc<Self> {
        let (tx, rx) = unbounded::<Vec<ListenerEvent>>();
        let listeners: Arc<RwLock<Vec<Arc<dyn Listener>>>> = Arc::default();
        let counters = Arc::new((Mutex::new(Counters { posted: 0, processed: 0 }), Condvar::new()));
        let (l2, c2) = (listeners.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("ember-listener-bus".into())
            .spawn(move || {
                for batch in rx {
                    {
                        let listeners = l2.read();
                        for event in &batch {
                            for l in listeners.iter() {
                                l.on_event(event);
                            }
                        }
                    }
                    let (m, cv) = &*c2;
                    m.lock().processed += batch.len() as u64;
                    cv.notify_all();
                }
            })
            .expect("spawn listener bus");
        Arc::new(ListenerBus { tx: Mutex::new(Some(tx)), listeners, counters, thread: Mutex::new(Some(thread)) })
    }

    pub fn add_listener(&self, l: Arc<dyn Listener>) {
        self.listeners.write().push(l);
    }

    pub fn post(&self, event: ListenerEvent) {
        self.post_all(vec![event]);
    }

    /// Posts events in order, as one delivery to the bus thread.
    pub fn post_all(&self, events: Vec<ListenerEvent>) {
        if events.is_empty() {
            return;
        }
        if let Some(tx) = &*self.tx.lock() {
            let n = events.len() as u64;
            self.counters.0.lock().posted += n;
            if tx.send(events).is_err() {
                self.counters.0.lock().posted -= n;
            }
        }
    }

    /// Waits until every event posted so far has been delivered.
    pub fn wait_until_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.counters;
        let mut c = m.lock();
        while c.processed < c.posted {
            if cv.wait_until(&mut c, deadline).timed_out() {
                return c.processed >= c.posted;
            }
        }
        true
    }

    /// Delivers what is queued, then stops the bus thread.
    pub fn stop(&self) {
        self.tx.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Record(Mutex<Vec<usize>>);

    impl Listener for Record {
        fn on_event(&self, event: &ListenerEvent) {
            if let ListenerEvent::ExecutorAdded { cores, .. } = event {
                self.0.lock().push(*cores);
            }
        }
    }

    fn added(cores: usize) -> ListenerEvent {
        ListenerEvent::ExecutorAdded { executor: ExecutorId::from("e"), cores, time: 0 }
    }

    #[test]
    fn batches_and_single_events_arrive_in_order_and_are_waited_for() {
        let bus = ListenerBus::start();
        let record = Arc::new(Record(Mutex::new(Vec::new())));
        bus.add_listener(record.clone());
        bus.post(added(0));
        bus.post_all((1..=100).map(added).collect());
        bus.post_all(Vec::new());
        bus.post(added(101));
        assert!(bus.wait_until_empty(Duration::from_secs(30)));
        assert_eq!(*record.0.lock(), (0..=101).collect::<Vec<_>>());
        bus.stop();
    }
}
