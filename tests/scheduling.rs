//! Scheduling behaviour: retries and their limits, listener events, concurrent
//! jobs, shuffle-output reuse, recovery from a corrupt shuffle file, deep
//! lineage, the driver's result-size limit.

mod common;

use common::{each_master, sorted, EventLog, MASTERS};
use ember::prelude::*;
use ember::ListenerEvent;

fn task_ends(events: &[ListenerEvent], partition: usize) -> Vec<(u32, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            ListenerEvent::TaskEnd { partition: p, attempt, failure, .. } if *p == partition => {
                Some((*attempt, failure.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_task_that_panics_twice_runs_exactly_three_attempts() {
    each_master(|sc| {
        let log = EventLog::attach(sc);
        let rdd = sc.parallelize((0..10).collect::<Vec<u32>>(), 2);
        let counts = sc
            .run_job(&rdd, vec![0, 1], (), |_: &(), ctx: &TaskContext, it: BoxIter<u32>| {
                if ctx.partition_id() == 1 && ctx.attempt_number() < 2 {
                    panic!("flaky attempt {}", ctx.attempt_number());
                }
                Ok(it.count() as u64)
            })
            .unwrap();
        assert_eq!(counts, vec![5, 5]);
        let ends = task_ends(&log.events(sc), 1);
        assert_eq!(ends.len(), 3, "{ends:?}");
        assert_eq!(ends.iter().map(|e| e.0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(ends[0].1.as_deref().unwrap().contains("flaky attempt 0"));
        assert!(ends[1].1.as_deref().unwrap().contains("flaky attempt 1"));
        assert!(ends[2].1.is_none());
        assert_eq!(task_ends(&log.events(sc), 0).len(), 1);
    });
}

#[test]
fn a_task_that_always_fails_aborts_after_max_failures_with_its_message() {
    for (master, expected) in [("local[2]", 4usize), ("local[2,2]", 2)] {
        let sc = Context::builder().master(master).set("ember.ui.showConsoleProgress", "false").build().unwrap();
        let log = EventLog::attach(&sc);
        let rdd = sc.parallelize(vec![1, 2, 3], 3);
        let err = rdd
            .map(|x: i32| if x == 2 { panic!("always broken on {x}") } else { x })
            .collect()
            .unwrap_err()
            .to_string();
        assert!(err.contains("always broken on 2"), "{err}");
        assert!(err.contains(&format!("failed {expected} times")), "{err}");
        assert_eq!(task_ends(&log.events(&sc), 1).len(), expected, "{master}");
        // The context stays usable.
        assert_eq!(rdd.count().unwrap(), 3);
        sc.stop();
    }
}

#[test]
fn task_errors_are_reported_too() {
    each_master(|sc| {
        let rdd = sc.parallelize(vec![1], 1);
        let err = sc
            .run_job(&rdd, vec![0], (), |_: &(), _: &TaskContext, _: BoxIter<i32>| -> Result<u8> {
                Err(Error::InvalidArgument("bad record 42".into()))
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad record 42"), "{err}");
    });
}

#[test]
fn listener_sees_the_job_lifecycle_in_order() {
    each_master(|sc| {
        let log = EventLog::attach(sc);
        let n =
            sc.parallelize((0..20).map(|i| (i % 3, i)).collect::<Vec<_>>(), 4).reduce_by_key(|a, b| a + b, 2).count();
        assert_eq!(n.unwrap(), 3);
        let events = log.events(sc);
        let kind = |e: &ListenerEvent| match e {
            ListenerEvent::JobStart { .. } => "JobStart",
            ListenerEvent::JobEnd { .. } => "JobEnd",
            ListenerEvent::StageSubmitted { .. } => "StageSubmitted",
            ListenerEvent::StageCompleted { .. } => "StageCompleted",
            ListenerEvent::TaskStart { .. } => "TaskStart",
            ListenerEvent::TaskEnd { .. } => "TaskEnd",
            _ => "other",
        };
        let kinds: Vec<&str> = events.iter().map(kind).filter(|k| *k != "other").collect();
        assert_eq!(kinds.first(), Some(&"JobStart"));
        assert_eq!(kinds.last(), Some(&"JobEnd"));
        assert_eq!(kinds.iter().filter(|k| **k == "StageSubmitted").count(), 2);
        assert_eq!(kinds.iter().filter(|k| **k == "TaskEnd").count(), 4 + 2);
        // Map-side metrics are reported.
        let written: u64 = events
            .iter()
            .filter_map(|e| match e {
                ListenerEvent::TaskEnd { metrics, .. } => Some(metrics.shuffle_records_written),
                _ => None,
            })
            .sum();
        assert!(written > 0 && written <= 12, "{written}");
    });
}

#[test]
fn jobs_from_several_threads_run_concurrently_and_correctly() {
    each_master(|sc| {
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let sc = sc.clone();
                s.spawn(move || {
                    for j in 0..10u64 {
                        let n = 100 + t * 10 + j;
                        let rdd = sc.parallelize((0..n).collect::<Vec<u64>>(), 3);
                        assert_eq!(rdd.map(|x| x * 2).reduce(|a, b| a + b).unwrap(), n * (n - 1));
                        let grouped = rdd.map(|x| (x % 7, x)).group_by_key(2).count().unwrap();
                        assert_eq!(grouped, 7);
                    }
                });
            }
        });
    });
}

#[test]
fn the_same_action_from_several_threads_at_once_runs_every_time() {
    // Concurrent runs of one action encode byte-identical stages: the
    // payload reaches an executor once, and every attempt must still find it.
    each_master(|sc| {
        let log = EventLog::attach(sc);
        let rdd = sc.parallelize((0..2000u64).collect::<Vec<u64>>(), 8).map(|x| x + 1);
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (rdd, start) = (rdd.clone(), &start);
                s.spawn(move || {
                    start.wait();
                    for _ in 0..15 {
                        assert_eq!(rdd.count().unwrap(), 2000);
                        assert_eq!(rdd.reduce(|a, b| a + b).unwrap(), 2001 * 1000);
                    }
                });
            }
        });
        // Not one attempt may fail (a retry would hide a missing stage).
        let failures: Vec<String> = log
            .events(sc)
            .iter()
            .filter_map(|e| match e {
                ListenerEvent::TaskEnd { failure: Some(f), .. } => Some(f.clone()),
                _ => None,
            })
            .collect();
        assert!(failures.is_empty(), "{} failed attempts, first: {:?}", failures.len(), failures.first());
    });
}

#[test]
fn a_second_action_reuses_shuffle_outputs() {
    each_master(|sc| {
        let log = EventLog::attach(sc);
        let reduced = sc
            .parallelize((0..100).map(|i| (i % 10, 1)).collect::<Vec<(i32, i32)>>(), 4)
            .reduce_by_key(|a, b| a + b, 3);
        assert_eq!(reduced.count().unwrap(), 10);
        let submitted = |log: &EventLog| {
            log.events(sc).iter().filter(|e| matches!(e, ListenerEvent::StageSubmitted { .. })).count()
        };
        assert_eq!(submitted(&log), 2);
        log.clear();
        assert_eq!(sorted(reduced.collect().unwrap()), (0..10).map(|k| (k, 10)).collect::<Vec<_>>());
        assert_eq!(submitted(&log), 1, "the map stage is skipped");
    });
}

#[test]
fn a_corrupt_shuffle_file_is_detected_and_recomputed() {
    each_master(|sc| {
        let log = EventLog::attach(sc);
        let data: Vec<(u32, u64)> = (0..5000).map(|i| (i % 50, i as u64)).collect();
        let expected: u64 = data.iter().map(|(_, v)| v).sum();
        let reduced = sc.parallelize(data, 4).reduce_by_key(|a, b| a + b, 2);
        assert_eq!(reduced.count().unwrap(), 50);
        corrupt_a_map_output(sc);
        log.clear();
        let total: u64 = reduced.values().reduce(|a, b| a + b).unwrap();
        assert_eq!(total, expected, "the answer is right after recomputation");
        assert_a_fetch_failed(&log.events(sc));
    });
}

/// The same for a sort of byte-like records, which reads segments without
/// decoding them first (`ember_shuffle::sort_segments_by_key`).
#[test]
fn a_corrupt_shuffle_file_under_a_byte_sort_is_detected_and_recomputed() {
    each_master(|sc| {
        let log = EventLog::attach(sc);
        let data: Vec<(String, String)> =
            (0..5000u32).map(|i| (format!("key-{:08}", (i * 7919) % 5000), format!("value {i}"))).collect();
        let mut expected: Vec<String> = data.iter().map(|(k, _)| k.clone()).collect();
        expected.sort();
        let sorted_rdd = sc.parallelize(data, 4).sort_by_key(true, 3).unwrap();
        assert_eq!(sorted_rdd.keys().collect().unwrap(), expected);
        corrupt_a_map_output(sc);
        log.clear();
        assert_eq!(sorted_rdd.keys().collect().unwrap(), expected, "the answer is right after recomputation");
        assert_a_fetch_failed(&log.events(sc));
    });
}

/// Flips bytes inside one map output's data file.
fn corrupt_a_map_output(sc: &Context) {
    let mut files: Vec<_> =
        walk(sc.local_dir()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "data")).collect();
    files.sort();
    assert!(!files.is_empty(), "no shuffle files under {}", sc.local_dir().display());
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0xA5;
    }
    std::fs::write(&files[0], bytes).unwrap();
}

fn assert_a_fetch_failed(events: &[ListenerEvent]) {
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ListenerEvent::TaskEnd { failure: Some(f), .. } if f.contains("fetch failed"))),
        "the corruption was detected as a fetch failure"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn ten_thousand_chained_maps_do_not_overflow_the_stack() {
    // Building and dropping a 10,000-deep lineage happens on this thread; the
    // stage is encoded and decoded iteratively, and tasks run on big-stack threads.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            for master in MASTERS {
                let sc = Context::new(master).unwrap();
                let mut rdd = sc.parallelize(vec![0u64, 1, 2], 2);
                for _ in 0..10_000 {
                    rdd = rdd.map(|x| x + 1);
                }
                assert_eq!(rdd.collect().unwrap(), vec![10_000, 10_001, 10_002]);
                assert_eq!(rdd.map(|x| (x % 2, x)).reduce_by_key(|a, b| a + b, 2).count().unwrap(), 2);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn results_over_max_result_size_fail_the_job_clearly() {
    for master in MASTERS {
        let sc = Context::builder()
            .master(master)
            .set("ember.driver.maxResultSize", "1k")
            .set("ember.ui.showConsoleProgress", "false")
            .build()
            .unwrap();
        let big = sc.parallelize((0..10_000u64).collect::<Vec<_>>(), 4);
        let err = big.collect().unwrap_err().to_string();
        assert!(err.contains("ember.driver.maxResultSize"), "{err}");
        // Small results still work.
        assert_eq!(big.count().unwrap(), 10_000);
    }
}

#[test]
fn stopped_contexts_refuse_jobs() {
    let sc = Context::new("local[2]").unwrap();
    let rdd = sc.parallelize(vec![1, 2, 3], 2);
    let dir = sc.local_dir().to_path_buf();
    assert!(dir.exists());
    sc.stop();
    assert!(!dir.exists(), "the application directory is removed");
    assert!(matches!(rdd.count(), Err(Error::Stopped(_))));
}

#[test]
fn bad_master_urls_are_clear_errors() {
    let err = Context::new("local[zero]").err().unwrap().to_string();
    assert!(err.contains("local[zero]"), "{err}");
    let err = Context::new("mesos://x").err().unwrap().to_string();
    assert!(err.contains("supported masters"), "{err}");
}

#[test]
fn take_scans_partitions_incrementally() {
    each_master(|sc| {
        let log = EventLog::attach(sc);
        let rdd = sc.parallelize((0..1000).collect::<Vec<u32>>(), 20);
        assert_eq!(rdd.take(3).unwrap(), vec![0, 1, 2]);
        let tasks =
            |log: &EventLog| log.events(sc).iter().filter(|e| matches!(e, ListenerEvent::TaskStart { .. })).count();
        assert_eq!(tasks(&log), 1, "the first partition had enough");
        log.clear();
        // Data only in the last partitions: 1 partition, then 4x more, then the rest.
        let sparse = sc.parallelize((0..20).collect::<Vec<u32>>(), 20).filter(|x| *x >= 18);
        assert_eq!(sparse.take(1).unwrap(), vec![18]);
        let jobs: Vec<usize> = log
            .events(sc)
            .iter()
            .filter_map(|e| match e {
                ListenerEvent::StageSubmitted { num_tasks, .. } => Some(*num_tasks),
                _ => None,
            })
            .collect();
        assert_eq!(jobs, vec![1, 4, 15], "partitions scanned per round");
    });
}

#[test]
fn cancelling_a_job_group_kills_its_tasks_promptly() {
    each_master(|sc| {
        let log = EventLog::attach(sc);
        let job = {
            let sc = sc.clone();
            std::thread::spawn(move || {
                sc.set_job_group("slow-group");
                let t0 = std::time::Instant::now();
                // 4 partitions x 10,000 records x 1 ms: minutes if not cancelled.
                let r = sc
                    .parallelize((0..40_000u32).collect::<Vec<_>>(), 4)
                    .map(|x| {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        x
                    })
                    .count();
                (r, t0.elapsed())
            })
        };
        wait_for_event(sc, &log, "a task starts", |e| matches!(e, ListenerEvent::TaskStart { .. }).then_some(()));
        sc.cancel_job_group("slow-group");
        let (result, took) = job.join().unwrap();
        assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
        assert!(took < std::time::Duration::from_secs(20), "cancellation took {took:?}");
        // Running tasks were killed, not left to finish.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let killed = log
                .events(sc)
                .iter()
                .filter(|e| matches!(e, ListenerEvent::TaskEnd { failure: Some(f), .. } if f.contains("killed")))
                .count();
            if killed >= 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no task reported as killed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Other groups and the executors are unaffected.
        assert_eq!(sc.parallelize((0..100u32).collect::<Vec<_>>(), 4).count().unwrap(), 100);
    });
}

#[test]
fn cancel_all_jobs_stops_running_jobs() {
    each_master(|sc| {
        let log = EventLog::attach(sc);
        let job = spawn_slow_job(sc, 20_000, 2);
        wait_for_event(sc, &log, "a task starts", |e| matches!(e, ListenerEvent::TaskStart { .. }).then_some(()));
        sc.cancel_all_jobs();
        assert!(matches!(job.join().unwrap(), Err(Error::Cancelled { .. })));
        assert_eq!(sc.parallelize(vec![1, 2, 3], 3).count().unwrap(), 3);
    });
}

#[test]
fn cancel_job_by_id_from_a_listener_event() {
    each_master(|sc| {
        let log = EventLog::attach(sc);
        let job = spawn_slow_job(sc, 20_000, 2);
        let job_id = wait_for_event(sc, &log, "the job starts", |e| match e {
            ListenerEvent::JobStart { job_id, .. } => Some(*job_id),
            _ => None,
        });
        sc.cancel_job(job_id);
        let err = job.join().unwrap().unwrap_err().to_string();
        assert!(err.contains("cancel"), "{err}");
        assert_eq!(sc.parallelize(vec![1, 2], 2).count().unwrap(), 2);
    });
}

/// Starts, on another thread, a job that needs about 1 ms per record: long
/// enough to be cancelled while its tasks run. Returns its count.
fn spawn_slow_job(sc: &Context, records: u32, partitions: usize) -> std::thread::JoinHandle<Result<u64>> {
    let sc = sc.clone();
    std::thread::spawn(move || {
        sc.parallelize((0..records).collect::<Vec<_>>(), partitions)
            .map(|x| {
                std::thread::sleep(std::time::Duration::from_millis(1));
                x
            })
            .count()
    })
}

/// Waits (with a deadline) until the log holds an event `pick` accepts.
fn wait_for_event<T>(sc: &Context, log: &EventLog, what: &str, pick: impl Fn(&ListenerEvent) -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(found) = log.events(sc).iter().find_map(&pick) {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Short tasks queue on executors (`ember.scheduler.shortTaskQueueDepth`):
/// many of them in flight at once must still give exact answers, and a
/// cancelled job's queued tasks must not hold up the next job.
#[test]
fn queued_short_tasks_give_exact_answers_and_cancel_cleanly() {
    each_master(|sc| {
        let n = 4_000usize;
        let data: Vec<u64> = (0..n as u64 * 3).collect();
        let sum = sc.parallelize(data.clone(), n).map(|x| x * 2).reduce(|a, b| a + b).unwrap();
        assert_eq!(sum, data.iter().map(|x| x * 2).sum::<u64>());
        let collected = sc.parallelize(data.clone(), n).map(|x| x + 1).collect().unwrap();
        assert_eq!(collected, data.iter().map(|x| x + 1).collect::<Vec<_>>(), "order kept across queued tasks");

        let log = EventLog::attach(sc);
        let job = {
            let sc = sc.clone();
            std::thread::spawn(move || {
                sc.set_job_group("many-short");
                sc.parallelize((0..2_000_000u64).collect::<Vec<_>>(), 200_000).count()
            })
        };
        // The job's stage: the only one with 200,000 tasks.
        let stage = wait_for_event(sc, &log, "the job's stage is submitted", |e| match e {
            ListenerEvent::StageSubmitted { stage_id, num_tasks: 200_000, .. } => Some(*stage_id),
            _ => None,
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let ended = |sc: &Context| {
            log.events(sc)
                .iter()
                .filter(|e| matches!(e, ListenerEvent::TaskEnd { stage_id, .. } if *stage_id == stage))
                .count()
        };
        while ended(sc) < 100 {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for the job's 100th task");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        sc.cancel_job_group("many-short");
        let result = job.join().unwrap();
        assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
        let t0 = std::time::Instant::now();
        assert_eq!(sc.parallelize((0..1000u32).collect::<Vec<_>>(), 50).count().unwrap(), 1000);
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the next job waited {:?}", t0.elapsed());
    });
}
