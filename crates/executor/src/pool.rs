//! A fixed-size pool of task threads. Threads get large stacks because a
//! task's iterator pipeline nests one frame per narrow transformation, and
//! lineage can be thousands of transformations deep.
//!
//! In an executor process the idle threads also read the driver's
//! connection (an [`Inbox`]): the thread that reads a `LaunchTask` queues
//! it and, being idle, takes it itself, so no hand-off to another thread
//! sits between the socket and the task, and no I/O thread polls beside
//! the task threads. One idle thread at a time reads; the others sleep on
//! the queue, woken by the tasks the reader queues beyond the one it runs,
//! or nudged to read in its place when it leaves to run a task.

use crossbeam_channel::{unbounded, Receiver, Sender, TryRecvError};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Stack reserved for each task thread (virtual memory; touched pages only).
pub const TASK_STACK_SIZE: usize = 256 << 20;

/// How long a parked thread sleeps before it looks again, at most (so a
/// pool being shut down never waits long for a thread asleep on a socket).
const PARK_SLICE: Duration = Duration::from_millis(50);

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Work that arrives other than through [`TaskPool::execute`]: the driver's
/// messages, read by idle task threads. Handling a message may queue tasks.
pub trait Inbox: Send + Sync {
    /// Handles the messages that have arrived, without blocking. False if
    /// another thread is reading or there was nothing.
    fn poll(&self) -> bool;
    /// Sleeps until messages arrive or `timeout` passes, and handles them.
    /// False at once if another thread is reading. Once this thread is the
    /// reader it does not sleep if `work_queued` says a task waits.
    fn wait(&self, timeout: Duration, work_queued: &dyn Fn() -> bool) -> bool;
    /// True while some thread holds the reader's place (or no thread may
    /// read any more): then an idle thread sleeps on the queue instead.
    fn has_reader(&self) -> bool;
}

pub struct TaskPool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    busy: Arc<BusyClock>,
    sleepers: Arc<Sleepers>,
}

/// Threads asleep on the task queue, and how to wake one of them to read
/// the inbox when its reader leaves to run a task.
struct Sleepers {
    count: AtomicUsize,
    nudge_tx: Sender<()>,
    nudge_rx: Receiver<()>,
}

impl Sleepers {
    /// Called by a reader that stops reading (it has released its place):
    /// wakes one thread asleep on the queue to read instead. Paired with
    /// the re-check in [`park`]: a thread counts itself asleep and then
    /// looks for a reader, a reader leaves and then counts sleepers, so
    /// one of the two always sees the other.
    fn wake_one(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.count.load(Ordering::SeqCst) > 0 && self.nudge_rx.is_empty() {
            let _ = self.nudge_tx.send(());
        }
    }
}

/// When each thread started its current job (milliseconds since `epoch`,
/// plus one; 0 while idle).
struct BusyClock {
    epoch: Instant,
    since: Vec<AtomicU64>,
}

impl BusyClock {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

impl TaskPool {
    /// `spin_wait`: how long an idle thread polls for its next task before
    /// it sleeps (see `ember_common::spin`). `inbox`: what idle threads read.
    pub fn new(
        name: &str,
        threads: usize,
        spin_wait: Duration,
        inbox: Option<Arc<dyn Inbox>>,
    ) -> std::io::Result<Self> {
        Self::with_park_slice(name, threads, spin_wait, inbox, PARK_SLICE)
    }

    fn with_park_slice(
        name: &str,
        threads: usize,
        spin_wait: Duration,
        inbox: Option<Arc<dyn Inbox>>,
        slice: Duration,
    ) -> std::io::Result<Self> {
        let (tx, rx) = unbounded::<Job>();
        let threads = threads.max(1);
        let busy =
            Arc::new(BusyClock { epoch: Instant::now(), since: (0..threads).map(|_| AtomicU64::new(0)).collect() });
        let (nudge_tx, nudge_rx) = unbounded();
        let sleepers = Arc::new(Sleepers { count: AtomicUsize::new(0), nudge_tx, nudge_rx });
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let (rx, inbox, busy, sleepers) = (rx.clone(), inbox.clone(), busy.clone(), sleepers.clone());
            handles.push(
                std::thread::Builder::new().name(format!("{name}-task-{i}")).stack_size(TASK_STACK_SIZE).spawn(
                    move || {
                        while let Some(job) = next_job(&rx, inbox.as_deref(), &sleepers, spin_wait, slice) {
                            busy.since[i].store(busy.now(), Ordering::Relaxed);
                            job();
                            busy.since[i].store(0, Ordering::Relaxed);
                        }
                    },
                )?,
            );
        }
        Ok(TaskPool { tx: Some(tx), threads: handles, busy, sleepers })
    }

    /// For a reader outside the pool (an executor's main thread, which
    /// reads while every task thread is busy): wakes a thread that went to
    /// sleep on the queue meanwhile, so that it reads once this one stops.
    pub fn wake_a_sleeper(&self) {
        self.sleepers.wake_one();
    }

    pub fn execute(&self, job: impl FnOnce() + Send + 'static) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Box::new(job));
        }
    }

    /// True when every thread has been running the same job for at least
    /// `d`: then no thread is free to read the inbox.
    pub fn all_busy_for(&self, d: Duration) -> bool {
        let now = self.busy.now();
        let d = d.as_millis() as u64;
        self.busy.since.iter().all(|s| {
            let since = s.load(Ordering::Relaxed);
            since != 0 && now.saturating_sub(since) >= d
        })
    }

    /// Lets queued jobs finish, then joins every thread.
    pub fn shutdown(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The next job for an idle thread: queued work, or work the inbox
/// brings. Polls for `spin_wait`, then sleeps — on the inbox if no other
/// thread does, else on the queue. None once the pool shuts down.
fn next_job(
    rx: &Receiver<Job>,
    inbox: Option<&dyn Inbox>,
    sleepers: &Sleepers,
    spin_wait: Duration,
    slice: Duration,
) -> Option<Job> {
    let Some(inbox) = inbox else {
        let spun = ember_common::spin::spin_for(spin_wait, || rx.try_recv().ok());
        return spun.or_else(|| rx.recv().ok());
    };
    loop {
        let mut closed = false;
        let mut read = false;
        let mut take = || match rx.try_recv() {
            Ok(job) => Some(Some(job)),
            Err(TryRecvError::Disconnected) => {
                closed = true;
                Some(None)
            }
            Err(TryRecvError::Empty) => None,
        };
        let spun = ember_common::spin::spin_for(spin_wait, || {
            take().or_else(|| {
                read |= inbox.poll();
                read.then(&mut take).flatten()
            })
        });
        let next = match spun {
            Some(next) => Some(next),
            None if closed => return None,
            None => park(rx, inbox, sleepers, &mut read, slice),
        };
        match next {
            Some(Some(job)) => {
                // This thread read the inbox and leaves to run a task: if
                // others sleep on the queue, one of them reads meanwhile.
                if read {
                    sleepers.wake_one();
                }
                return Some(job);
            }
            Some(None) => return None,
            None => continue,
        }
    }
}

/// Sleeps until there is a job: on the socket if no other thread does
/// (handling what arrives), else on the queue. `Some(None)` once the pool
/// shuts down; `None` when nudged to take over reading, which the caller
/// starts by polling.
fn park(
    rx: &Receiver<Job>,
    inbox: &dyn Inbox,
    sleepers: &Sleepers,
    read: &mut bool,
    slice: Duration,
) -> Option<Option<Job>> {
    loop {
        if inbox.wait(slice, &|| !rx.is_empty()) {
            *read = true;
            match rx.try_recv() {
                Ok(job) => return Some(Some(job)),
                Err(TryRecvError::Disconnected) => return Some(None),
                // Nothing to run yet: keep sleeping on the socket.
                Err(TryRecvError::Empty) => continue,
            }
        }
        sleepers.count.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if !inbox.has_reader() {
            // The reader left between this thread's try and its count:
            // it may not have seen the count, so read instead of sleeping
            // (a launch would otherwise wait out the whole slice).
            sleepers.count.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let woke = crossbeam_channel::select! {
            recv(rx) -> job => Some(Some(job.ok())),
            recv(sleepers.nudge_rx) -> _ => Some(None),
            default(slice) => None,
        };
        sleepers.count.fetch_sub(1, Ordering::SeqCst);
        match woke {
            Some(Some(job)) => return Some(job),
            Some(None) => return None,
            None => {}
        }
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// An inbox fed by a channel: each message is a number of jobs to queue.
    struct TestInbox {
        messages: Mutex<Receiver<usize>>,
        pool: Mutex<Option<Sender<Job>>>,
        ran: Arc<AtomicUsize>,
        readers: AtomicUsize,
        most_readers: AtomicUsize,
        /// Run once, by the first `wait` that finds another thread reading,
        /// before it reports so.
        on_busy_wait: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    /// Lets the pool's threads see the queue close even if an assertion fails.
    struct Unhook(Arc<TestInbox>);

    impl Drop for Unhook {
        fn drop(&mut self) {
            self.0.pool.lock().take();
        }
    }

    impl TestInbox {
        /// An inbox reading `messages`, and the count of jobs its messages ran.
        fn new(messages: Receiver<usize>) -> (Arc<TestInbox>, Arc<AtomicUsize>) {
            let ran = Arc::new(AtomicUsize::new(0));
            let inbox = Arc::new(TestInbox {
                messages: Mutex::new(messages),
                pool: Mutex::new(None),
                ran: ran.clone(),
                readers: AtomicUsize::new(0),
                most_readers: AtomicUsize::new(0),
                on_busy_wait: Mutex::new(None),
            });
            (inbox, ran)
        }

        fn handle(&self, n: usize) {
            for _ in 0..n {
                let ran = self.ran.clone();
                let _ = self.pool.lock().as_ref().unwrap().send(Box::new(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                }));
            }
        }

        fn read(&self, wait: Option<Duration>) -> bool {
            let Some(rx) = self.messages.try_lock() else { return false };
            let now = self.readers.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_readers.fetch_max(now, Ordering::SeqCst);
            let first = match wait {
                None => rx.try_recv().ok(),
                Some(t) => rx.recv_timeout(t).ok(),
            };
            let got = first.is_some();
            for n in first.into_iter().chain(rx.try_iter()) {
                self.handle(n);
            }
            self.readers.fetch_sub(1, Ordering::SeqCst);
            got || wait.is_some()
        }
    }

    impl Inbox for TestInbox {
        fn poll(&self) -> bool {
            self.read(None)
        }
        fn wait(&self, timeout: Duration, work_queued: &dyn Fn() -> bool) -> bool {
            let read = self.read(Some(if work_queued() { Duration::ZERO } else { timeout }));
            if !read {
                if let Some(hook) = self.on_busy_wait.lock().take() {
                    hook();
                }
            }
            read
        }
        fn has_reader(&self) -> bool {
            self.messages.is_locked()
        }
    }

    #[test]
    fn idle_threads_read_the_inbox_one_at_a_time_and_run_what_it_brings() {
        for spin in [Duration::ZERO, Duration::from_millis(1)] {
            let (msg_tx, msg_rx) = unbounded::<usize>();
            let (inbox, ran) = TestInbox::new(msg_rx);
            let mut pool = TaskPool::new("t", 3, spin, Some(inbox.clone())).unwrap();
            *inbox.pool.lock() = pool.tx.clone();
            let mut sent = 0;
            for round in 0..50usize {
                let n = round % 7;
                msg_tx.send(n).unwrap();
                sent += n;
                if round % 10 == 0 {
                    // Let every thread go to sleep, on the inbox or the queue.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while ran.load(Ordering::SeqCst) < sent {
                assert!(Instant::now() < deadline, "ran {} of {sent}", ran.load(Ordering::SeqCst));
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(inbox.most_readers.load(Ordering::SeqCst), 1, "one reader at a time");
            inbox.pool.lock().take();
            let start = Instant::now();
            pool.shutdown();
            assert!(start.elapsed() < Duration::from_secs(5), "threads asleep on the inbox still stop");
            assert_eq!(ran.load(Ordering::SeqCst), sent);
        }
    }

    #[test]
    fn a_thread_asleep_on_the_queue_reads_once_an_outside_reader_stops() {
        let (msg_tx, msg_rx) = unbounded::<usize>();
        let (inbox, ran) = TestInbox::new(msg_rx);
        // Parked threads look again only after an hour: a launch must not
        // depend on that.
        let slice = Duration::from_secs(3600);
        // Another thread (an executor's main thread) holds the reader's
        // place, so the idle pool thread sleeps on the queue. Taken before
        // the pool starts: a pool thread that took it first would sleep an
        // hour holding it.
        let outside = inbox.messages.lock();
        let mut pool = TaskPool::with_park_slice("t", 1, Duration::ZERO, Some(inbox.clone()), slice).unwrap();
        *inbox.pool.lock() = pool.tx.clone();
        let _unhook = Unhook(inbox.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.sleepers.count.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the pool thread never slept on the queue");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A message arrives after the outside reader's last look; it stops.
        msg_tx.send(1).unwrap();
        drop(outside);
        pool.wake_a_sleeper();
        while ran.load(Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline, "the message waited for the park slice");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(msg_tx);
        inbox.pool.lock().take();
        pool.shutdown();
    }

    #[test]
    fn a_thread_that_finds_the_reader_gone_after_counting_itself_reads_instead_of_sleeping() {
        let (msg_tx, msg_rx) = unbounded::<usize>();
        let (inbox, ran) = TestInbox::new(msg_rx);
        let slice = Duration::from_secs(3600);
        // Another thread (an executor's main thread) holds the reader's place.
        let (hold_tx, hold_rx) = unbounded::<()>();
        let (release_tx, release_rx) = unbounded::<()>();
        let (released_tx, released_rx) = unbounded::<()>();
        let reader_side = inbox.clone();
        let outside = std::thread::spawn(move || {
            let guard = reader_side.messages.lock();
            hold_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(guard);
            released_tx.send(()).unwrap();
        });
        hold_rx.recv().unwrap();
        let pool_slot: Arc<Mutex<Option<Arc<Sleepers>>>> = Arc::default();
        // It stops, and looks for sleepers, in the window after the pool
        // thread found it reading and before the pool thread counts itself
        // asleep: its wake-up finds nobody to wake.
        let (slot, tx) = (pool_slot.clone(), msg_tx.clone());
        *inbox.on_busy_wait.lock() = Some(Box::new(move || {
            tx.send(1).unwrap();
            release_tx.send(()).unwrap();
            released_rx.recv().unwrap();
            slot.lock().as_ref().expect("pool built").wake_one();
        }));
        let mut pool = TaskPool::with_park_slice("t", 1, Duration::ZERO, Some(inbox.clone()), slice).unwrap();
        *pool_slot.lock() = Some(pool.sleepers.clone());
        *inbox.pool.lock() = pool.tx.clone();
        let _unhook = Unhook(inbox.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        while ran.load(Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline, "the thread slept though nobody was reading");
            std::thread::sleep(Duration::from_millis(1));
        }
        outside.join().unwrap();
        drop(msg_tx);
        inbox.pool.lock().take();
        pool.shutdown();
    }

    #[test]
    fn all_busy_for_needs_every_thread_on_one_job_that_long() {
        let pool = TaskPool::new("t", 2, Duration::ZERO, None).unwrap();
        assert!(!pool.all_busy_for(Duration::ZERO));
        let (release_tx, release_rx) = unbounded::<()>();
        let (started_tx, started_rx) = unbounded::<()>();
        for _ in 0..2 {
            let (r, s) = (release_rx.clone(), started_tx.clone());
            pool.execute(move || {
                s.send(()).unwrap();
                let _ = r.recv();
            });
        }
        started_rx.recv().unwrap();
        started_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(pool.all_busy_for(Duration::from_millis(20)));
        assert!(!pool.all_busy_for(Duration::from_secs(60)));
        drop(release_tx);
    }
}
