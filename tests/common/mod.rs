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
