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
//!
//! Until a listener is registered, posting drops events at once: a driver
//! nobody listens to moves no events between threads.
//!
//! The queue's memory is reused: the bus thread hands each delivered batch
//! back, emptied, as the next queue. A job of 10,000 tasks queues megabytes
//! of events every few milliseconds; freshly allocated each time, that
//! memory came from the OS as huge pages the event loop had to zero, which
//! made the first job after a heavy one several times slower.

use ember_common::{ExecutorId, JobId, StageId, TaskId};
use ember_core::metrics::TaskMetricsSnapshot;
use parking_lot::{Condvar, Mutex, RwLock};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The last delivered batch, emptied: the next queue once this one goes.
    spare: Vec<ListenerEvent>,
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
/// A delivered batch keeps its memory for reuse up to this many events
/// (a few MB); a larger one, from an unusual burst, is freed.
const KEEP_CAPACITY: usize = 1 << 16;

/// Delivers events to listeners on its own thread.
pub struct ListenerBus {
    shared: Arc<Shared>,
    listeners: Arc<RwLock<Vec<Arc<dyn Listener>>>>,
    /// Some listener is registered.
    listening: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ListenerBus {
    pub fn start() -> Arc<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(BusState {
                queue: Vec::new(),
                spare: Vec::new(),
                posted: 0,
                processed: 0,
                idle: false,
                stopping: false,
            }),
            work: Condvar::new(),
            drained: Condvar::new(),
        });
        let listeners: Arc<RwLock<Vec<Arc<dyn Listener>>>> = Arc::default();
        let (l2, s2) = (listeners.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("ember-listener-bus".into())
            .spawn(move || deliver(&s2, &l2))
            .expect("spawn listener bus");
        Arc::new(ListenerBus { shared, listeners, listening: AtomicBool::new(false), thread: Mutex::new(Some(thread)) })
    }

    /// Registers a listener; it hears events posted from now on.
    pub fn add_listener(&self, l: Arc<dyn Listener>) {
        self.listeners.write().push(l);
        self.listening.store(true, Ordering::Release);
    }

    /// Whether some listener is registered (events posted now are delivered).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    pub fn post(&self, event: ListenerEvent) {
        self.post_all(&mut vec![event]);
    }

    /// Posts events in order; they reach listeners within about
    /// 5 ms (`DELIVERY_INTERVAL`). Leaves `events` empty, with its capacity.
    pub fn post_all(&self, events: &mut Vec<ListenerEvent>) {
        if events.is_empty() || !self.is_listening() {
            events.clear();
            return;
        }
        let mut st = self.shared.state.lock();
        if st.stopping {
            events.clear();
            return;
        }
        st.posted += events.len() as u64;
        st.queue.append(events);
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
        let spare = std::mem::take(&mut st.spare);
        let mut batch = std::mem::replace(&mut st.queue, spare);
        drop(st);
        {
            let listeners = listeners.read();
            for event in &batch {
                for l in listeners.iter() {
                    l.on_event(event);
                }
            }
        }
        let delivered = batch.len() as u64;
        batch.clear();
        st = shared.state.lock();
        st.processed += delivered;
        if batch.capacity() <= KEEP_CAPACITY {
            st.spare = batch;
        }
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
        bus.post_all(&mut (1..=100).map(added).collect());
        bus.post_all(&mut Vec::new());
        bus.post(added(101));
        assert!(bus.wait_until_empty(Duration::from_secs(30)));
        assert_eq!(*record.0.lock(), (0..=101).collect::<Vec<_>>());
        bus.stop();
    }

    #[test]
    fn without_listeners_posts_queue_nothing() {
        let bus = ListenerBus::start();
        let mut events: Vec<ListenerEvent> = (0..10).map(added).collect();
        bus.post_all(&mut events);
        assert!(events.is_empty());
        assert_eq!(bus.shared.state.lock().posted, 0);
        let record = Arc::new(Record(Mutex::new(Vec::new())));
        bus.add_listener(record.clone());
        bus.post(added(7));
        assert!(bus.wait_until_empty(Duration::from_secs(30)));
        assert_eq!(*record.0.lock(), vec![7], "a listener hears what is posted after it registers");
        bus.stop();
    }

    #[test]
    fn delivered_batches_lend_their_memory_to_the_next_queue_unless_huge() {
        let (bus, _record) = recording_bus();
        let kept = |bus: &ListenerBus| {
            let st = bus.shared.state.lock();
            st.queue.capacity().max(st.spare.capacity())
        };
        let mut events: Vec<ListenerEvent> = (0..1000).map(added).collect();
        bus.post_all(&mut events);
        assert!(events.is_empty() && events.capacity() >= 1000, "the caller keeps its buffer");
        assert!(bus.wait_until_empty(Duration::from_secs(30)));
        assert!(kept(&bus) >= 1000, "the delivered batch is kept for reuse");
        bus.post_all(&mut (0..KEEP_CAPACITY + 1).map(added).collect());
        assert!(bus.wait_until_empty(Duration::from_secs(30)));
        assert!(kept(&bus) <= KEEP_CAPACITY, "a huge batch is freed");
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
        bus.post_all(&mut (3..=50).map(added).collect());
        bus.stop();
        assert_eq!(*record.0.lock(), (1..=50).collect::<Vec<_>>());
    }
}
