//! The console progress bar, drawn on stderr like Spark's
//! `[Stage 3:=====>          (12 + 2) / 40]`: one bar per active stage
//! (at most three), only for stages running longer than 500 ms, only when
//! stderr is a terminal and `ember.ui.showConsoleProgress` is true.
//! State comes from the listener bus; rendering is a pure function so it can
//! be tested without a terminal.

use ember_common::StageId;
use ember_scheduler::{Listener, ListenerBus, ListenerEvent};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SHOW_AFTER: Duration = Duration::from_millis(500);
const WIDTH: usize = 80;

#[derive(Clone, Debug)]
pub struct StageProgress {
    pub started: Instant,
    pub total: usize,
    pub running: usize,
    pub done: usize,
}

/// Tracks active stages from listener events.
#[derive(Default)]
pub struct ProgressState {
    stages: Mutex<BTreeMap<(StageId, u32), StageProgress>>,
}

impl Listener for ProgressState {
    fn on_event(&self, event: &ListenerEvent) {
        let mut stages = self.stages.lock();
        match event {
            ListenerEvent::StageSubmitted { stage_id, attempt, num_tasks, .. } => {
                stages.insert(
                    (*stage_id, *attempt),
                    StageProgress { started: Instant::now(), total: *num_tasks, running: 0, done: 0 },
                );
            }
            ListenerEvent::StageCompleted { stage_id, attempt, .. } => {
                stages.remove(&(*stage_id, *attempt));
            }
            ListenerEvent::TaskStart { stage_id, stage_attempt, .. } => {
                if let Some(s) = stages.get_mut(&(*stage_id, *stage_attempt)) {
                    s.running += 1;
                }
            }
            ListenerEvent::TaskEnd { stage_id, stage_attempt, failure, .. } => {
                if let Some(s) = stages.get_mut(&(*stage_id, *stage_attempt)) {
                    s.running = s.running.saturating_sub(1);
                    if failure.is_none() {
                        s.done += 1;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Renders the bar line for the stages that have run long enough, or `None`.
pub fn render(stages: &BTreeMap<(StageId, u32), StageProgress>, now: Instant) -> Option<String> {
    let shown: Vec<_> = stages.iter().filter(|(_, s)| now.duration_since(s.started) >= SHOW_AFTER).take(3).collect();
    if shown.is_empty() {
        return None;
    }
    let width = WIDTH / shown.len();
    let mut line = String::new();
    for ((id, _), s) in shown {
        let header = format!("[Stage {}:", id.0);
        let tailer = format!("({} + {}) / {}]", s.done, s.running, s.total);
        let w = width.saturating_sub(header.len() + tailer.len());
        let bar = if w > 0 && s.total > 0 {
            let percent = w * s.done / s.total;
            let mut b = "=".repeat(percent);
            if percent < w {
                b.push('>');
                b.push_str(&" ".repeat(w - percent - 1));
            }
            b
        } else {
            String::new()
        };
        line.push_str(&header);
        line.push_str(&bar);
        line.push_str(&tailer);
    }
    Some(line)
}

/// The bar's drawing thread.
pub struct ConsoleProgressBar {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ConsoleProgressBar {
    /// Starts drawing if enabled and stderr is a terminal.
    pub fn start_if_terminal(enabled: bool, bus: &ListenerBus) -> Option<Self> {
        if !enabled || !std::io::stderr().is_terminal() {
            return None;
        }
        let state = Arc::new(ProgressState::default());
        bus.add_listener(state.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ember-progress".into())
            .spawn(move || {
                let mut last_len = 0;
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    let line = render(&state.stages.lock(), Instant::now());
                    let mut err = std::io::stderr().lock();
                    match line {
                        Some(l) => {
                            let _ = write!(err, "\r{l}");
                            last_len = l.len();
                        }
                        None if last_len > 0 => {
                            let _ = write!(err, "\r{}\r", " ".repeat(last_len));
                            last_len = 0;
                        }
                        None => {}
                    }
                    let _ = err.flush();
                }
                if last_len > 0 {
                    let _ = write!(std::io::stderr(), "\r{}\r", " ".repeat(last_len));
                }
            })
            .ok()?;
        Some(ConsoleProgressBar { stop, thread: Mutex::new(Some(thread)) })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_spark_after_half_a_second() {
        let now = Instant::now();
        let mut stages = BTreeMap::new();
        stages.insert((StageId(3), 0), StageProgress { started: now, total: 40, running: 2, done: 12 });
        assert_eq!(render(&stages, now), None, "too young to show");
        let later = now + Duration::from_secs(1);
        let line = render(&stages, later).unwrap();
        assert!(line.starts_with("[Stage 3:"), "{line}");
        assert!(line.ends_with("(12 + 2) / 40]"), "{line}");
        assert!(line.contains("=>"), "{line}");
        assert_eq!(line.len(), WIDTH);
    }

    #[test]
    fn tracks_tasks_from_events() {
        let p = ProgressState::default();
        p.on_event(&ListenerEvent::StageSubmitted {
            stage_id: StageId(1),
            attempt: 0,
            name: "map".into(),
            num_tasks: 4,
            time: 0,
        });
        let task = |t| ListenerEvent::TaskStart {
            task_id: ember_common::TaskId(t),
            stage_id: StageId(1),
            stage_attempt: 0,
            partition: t as usize,
            attempt: 0,
            executor: "driver".into(),
            time: 0,
        };
        p.on_event(&task(0));
        p.on_event(&task(1));
        p.on_event(&ListenerEvent::TaskEnd {
            task_id: ember_common::TaskId(0),
            stage_id: StageId(1),
            stage_attempt: 0,
            partition: 0,
            attempt: 0,
            executor: "driver".into(),
            failure: None,
            metrics: Default::default(),
            time: 0,
        });
        let s = p.stages.lock()[&(StageId(1), 0)].clone();
        assert_eq!((s.done, s.running, s.total), (1, 1, 4));
        p.on_event(&ListenerEvent::StageCompleted { stage_id: StageId(1), attempt: 0, failure: None, time: 0 });
        assert!(p.stages.lock().is_empty());
    }
}
