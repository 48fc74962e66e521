//! The shared test harness: every RDD test runs once per master URL in
//! [`MASTERS`], so adding the multi-process master runs the whole suite there.
#![allow(dead_code)]

use ember::prelude::*;

/// Masters the RDD suites run on.
pub const MASTERS: &[&str] = &["local[2]", "local-cluster[2,1,1024]"];

/// Runs `f` against a fresh context for every master.
pub fn each_master(f: impl Fn(&Context)) {
    for master in MASTERS {
        let sc = Context::builder()
            .master(master)
            .set("ember.ui.showConsoleProgress", "false")
            .build()
            .unwrap_or_else(|e| panic!("cannot start {master}: {e}"));
        f(&sc);
        sc.stop();
    }
}

/// A context whose executor may hold only `budget` bytes before spilling.
pub fn tight_context(master: &str, budget: &str) -> Context {
    Context::builder()
        .master(master)
        .set("ember.memory.budget", budget)
        .set("ember.ui.showConsoleProgress", "false")
        .build()
        .expect("context")
}

pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

use ember::ListenerEvent;
use std::sync::{Arc, Mutex};

/// A listener that records every event, for assertions.
#[derive(Default)]
pub struct EventLog(pub Mutex<Vec<ListenerEvent>>);

impl ember::Listener for EventLog {
    fn on_event(&self, e: &ListenerEvent) {
        self.0.lock().unwrap().push(e.clone());
    }
}

impl EventLog {
    pub fn attach(sc: &Context) -> Arc<EventLog> {
        let log = Arc::new(EventLog::default());
        sc.add_listener(log.clone());
        log
    }

    /// Events delivered so far (waits for the bus to drain first).
    pub fn events(&self, sc: &Context) -> Vec<ListenerEvent> {
        assert!(sc.wait_for_listeners(), "listener bus did not drain");
        self.0.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Fault injection for tests on real processes: kill or freeze executors at
/// chosen points, damage shuffle files. Every wait is a condition with a
/// deadline, never a fixed sleep.
pub mod faults {
    use ember::prelude::*;
    use ember::ListenerEvent;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    pub fn signal(pid: u32, sig: &str) -> bool {
        Command::new("kill").args([sig, &pid.to_string()]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    pub fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs an executor process when its `nth` task (counting from 1) starts.
    pub struct KillAfterTasks {
        pub executor: String,
        pub pid: u32,
        pub nth: usize,
        seen: Mutex<usize>,
        pub killed: Mutex<bool>,
    }

    impl KillAfterTasks {
        pub fn attach(sc: &Context, executor_index: usize, nth: usize) -> std::sync::Arc<Self> {
            let (executor, pid) = sc.executor_processes()[executor_index].clone();
            let k = std::sync::Arc::new(KillAfterTasks {
                executor,
                pid,
                nth,
                seen: Mutex::new(0),
                killed: Mutex::new(false),
            });
            sc.add_listener(k.clone());
            k
        }
    }

    impl ember::Listener for KillAfterTasks {
        fn on_event(&self, e: &ListenerEvent) {
            if let ListenerEvent::TaskStart { executor, .. } = e {
                if executor.as_str() == self.executor {
                    let mut seen = self.seen.lock().unwrap();
                    *seen += 1;
                    if *seen == self.nth {
                        *self.killed.lock().unwrap() = signal(self.pid, "-KILL");
                    }
                }
            }
        }
    }

    /// Every shuffle data file under the application's directory, sorted.
    pub fn shuffle_data_files(sc: &Context) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![sc.local_dir().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "data") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// Flips bytes in the middle of a file.
    pub fn corrupt(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        let mid = bytes.len() / 2;
        let end = (mid + 8).min(bytes.len());
        for b in &mut bytes[mid..end] {
            *b ^= 0xA5;
        }
        std::fs::write(path, bytes).unwrap();
    }
}
