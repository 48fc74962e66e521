//! The listener bus: job, stage, task and executor events delivered, in
//! order, to registered listeners on a dedicated thread, so a slow listener
//! never stalls scheduling. [`ListenerBus::wait_until_empty`] lets tests
//! observe events deterministically.
//!
//! Events travel in batches ([`ListenerBus::post_all`]): the event loop
//! posts what one turn produced at once. Posting does not wake the bus
//! thread while it is active: it delivers every few milliseconds, so
//! neither a burst of short tasks nor a stream of tiny jobs pays a thread
//! wake-up per event or per turn, and the bus thread does not compete for
//! the CPU with the threads on a job's path.

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

struct BusState {
    queue: Vec<ListenerEvent>,
    posted: u64,
    processed: u64,
    /// The bus thread found nothing for a while and sleeps until notified.
    idle: bool,
    stopping: bool,
}

struct Shared {
    state: Mutex<BusState>,
    /// Wakes the bus thread.
    work: Condvar,
    /// Tells waiters that more events were delivered.
    drained: Condvar,
}

/// How often a busy bus delivers what was posted. Posting never wakes the
/// bus thread while it polls at this pace: a thread wake-up costs the poster
/// 10-30 µs on a virtual machine, and the event loop posts every turn.
const DELIVERY_INTERVAL: Duration = Duration::from_millis(5);
/// Empty polls after which the bus sleeps until the next post wakes it.
const IDLE_POLLS: u32 = 20;
/// Queued events that make a post wake the bus at once.
const WAKE_AT: usize = 4096;

/// Delivers events to listeners on its own thread.
pub struct ListenerBus {
    shared: Arc<Shared>,
    listeners: Arc<RwLock<Vec<Arc<dyn Listener>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ListenerBus {
    pub fn start() -> Arc<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(BusState { queue: Vec::new(), posted: 0, processed: 0, idle: false, stopping: false }),
            work: Condvar::new(),
            drained: Condvar::new(),
        });
        let listeners: Arc<RwLock<Vec<Arc<dyn Listener>>>> = Arc::default();
        let (l2, s2) = (listeners.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("ember-listener-bus".into())
            .spawn(move || deliver(&s2, &l2))
            .expect("spawn listener bus");
        Arc::new(ListenerBus { shared, listeners, thread: Mutex::new(Some(thread)) })
    }

    pub fn add_listener(&self, l: Arc<dyn Listener>) {
        self.listeners.write().push(l);
    }

    pub fn post(&self, event: ListenerEvent) {
        self.post_all(vec![event]);
    }

    /// Posts events in order; they reach listeners within about
    /// [`DELIVERY_INTERVAL`].
    pub fn post_all(&self, mut events: Vec<ListenerEvent>) {
        if events.is_empty() {
            return;
        }
        let mut st = self.shared.state.lock();
        if st.stopping {
            return;
        }
        st.posted += events.len() as u64;
        st.queue.append(&mut events);
        if st.idle || st.queue.len() >= WAKE_AT {
            st.idle = false;
            self.shared.work.notify_one();
        }
    }

    /// Waits until every event posted so far has been delivered.
    pub fn wait_until_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock();
        self.shared.work.notify_one();
        while st.processed < st.posted {
            if self.shared.drained.wait_until(&mut st, deadline).timed_out() {
                return st.processed >= st.posted;
            }
        }
        true
    }

    /// Delivers what is queued, then stops the bus thread.
    pub fn stop(&self) {
        {
            let mut st = self.shared.state.lock();
            st.stopping = true;
            self.shared.work.notify_one();
        }
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// The bus thread: delivers queued events every [`DELIVERY_INTERVAL`], or
/// sooner when asked, and sleeps until the next post once nothing came for
/// [`IDLE_POLLS`] intervals.
fn deliver(shared: &Shared, listeners: &RwLock<Vec<Arc<dyn Listener>>>) {
    let mut empty_polls = 0u32;
    let mut st = shared.state.lock();
    loop {
        if st.queue.is_empty() {
            if st.stopping {
                return;
            }
            if empty_polls >= IDLE_POLLS {
                st.idle = true;
                shared.work.wait(&mut st);
            } else {
                shared.work.wait_for(&mut st, DELIVERY_INTERVAL);
            }
            empty_polls = if st.queue.is_empty() { empty_polls + 1 } else { 0 };
            continue;
        }
        let batch = std::mem::take(&mut st.queue);
        drop(st);
        {
            let listeners = listeners.read();
            for event in &batch {
                for l in listeners.iter() {
                    l.on_event(event);
                }
            }
        }
        st = shared.state.lock();
        st.processed += batch.len() as u64;
        shared.drained.notify_all();
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

    fn recording_bus() -> (Arc<ListenerBus>, Arc<Record>) {
        let bus = ListenerBus::start();
        let record = Arc::new(Record(Mutex::new(Vec::new())));
        bus.add_listener(record.clone());
        (bus, record)
    }

    fn added(cores: usize) -> ListenerEvent {
        ListenerEvent::ExecutorAdded { executor: ExecutorId::from("e"), cores, time: 0 }
    }

    #[test]
    fn batches_and_single_events_arrive_in_order_and_are_waited_for() {
        let (bus, record) = recording_bus();
        bus.post(added(0));
        bus.post_all((1..=100).map(added).collect());
        bus.post_all(Vec::new());
        bus.post(added(101));
        assert!(bus.wait_until_empty(Duration::from_secs(30)));
        assert_eq!(*record.0.lock(), (0..=101).collect::<Vec<_>>());
        bus.stop();
    }

    fn delivered_within(record: &Record, n: usize, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while record.0.lock().len() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn events_arrive_without_being_waited_for_whether_the_bus_is_polling_or_asleep() {
        let (bus, record) = recording_bus();
        bus.post(added(1));
        assert!(delivered_within(&record, 1, Duration::from_secs(10)), "delivered by the polling bus");
        // With nothing posted, the bus stops polling and sleeps.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !bus.shared.state.lock().idle {
            assert!(Instant::now() < deadline, "the bus never went to sleep");
            std::thread::sleep(Duration::from_millis(5));
        }
        bus.post(added(2));
        assert!(delivered_within(&record, 2, Duration::from_secs(10)), "a post wakes a sleeping bus");
        // Stopping delivers what is still queued.
        bus.post_all((3..=50).map(added).collect());
        bus.stop();
        assert_eq!(*record.0.lock(), (1..=50).collect::<Vec<_>>());
    }
}
