//! Chaos: a mixed workload (word count, join, sort) run again and again on
//! executor processes while executors are SIGKILLed at random points. Every
//! answer must be exact. Small enough for CI; `EMBER_CHAOS_ROUNDS=100` for a
//! longer manual run.

mod common;

use common::faults::{signal, wait_until, KillAfterTasks};
use ember::prelude::*;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;

fn words() -> Vec<String> {
    (0..3000).map(|i| format!("w{} w{} w{}", i % 13, i % 101, i % 7)).collect()
}

fn expected_counts() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in words() {
        for w in line.split_whitespace() {
            *m.entry(w.to_string()).or_insert(0) += 1;
        }
    }
    m
}

fn run_round(sc: &Context, round: usize) {
    match round % 3 {
        0 => {
            let counts: BTreeMap<String, u64> = sc
                .parallelize(words(), 6)
                .flat_map(|l: String| l.split_whitespace().map(String::from).collect::<Vec<_>>())
                .map(|w| (w, 1u64))
                .reduce_by_key(|a, b| a + b, 4)
                .collect()
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(counts, expected_counts(), "wordcount in round {round}");
        }
        1 => {
            let left = sc.parallelize((0..2000u64).map(|i| (i % 500, i)).collect::<Vec<_>>(), 5);
            let right = sc.parallelize((0..500u64).map(|i| (i, i * 10)).collect::<Vec<_>>(), 3);
            let joined = left.join(&right, 4);
            assert_eq!(joined.count().unwrap(), 2000, "join count in round {round}");
            let sum = joined.map(|(k, (_, w))| w - k * 10).reduce(|a, b| a + b).unwrap();
            assert_eq!(sum, 0, "join pairs in round {round}");
        }
        _ => {
            let data: Vec<u64> = (0..5000u64).map(|i| (i * 2654435761) % 100_003).collect();
            let sorted = sc
                .parallelize(data.clone(), 5)
                .map(|x| (x, ()))
                .sort_by_key(true, 4)
                .unwrap()
                .keys()
                .collect()
                .unwrap();
            let mut expected = data;
            expected.sort();
            assert_eq!(sorted, expected, "sort in round {round}");
        }
    }
}

#[test]
fn mixed_workload_survives_random_executor_kills() {
    let rounds: usize = std::env::var("EMBER_CHAOS_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(6);
    let sc = Context::builder()
        .master("local-cluster[3,1,256]")
        .set("ember.ui.showConsoleProgress", "false")
        .build()
        .unwrap();
    let log = common::EventLog::attach(&sc);
    let mut rng = rand_pcg::Pcg64::seed_from_u64(0xC4A05);
    for round in 0..rounds {
        wait_until("three executors are registered", Duration::from_secs(30), || sc.registered_executors() == 3);
        let victim = rng.random_range(0..3);
        let nth = rng.random_range(1..4);
        let killer = KillAfterTasks::attach(&sc, victim, nth);
        // A watchdog: a hang fails the test with the recent scheduling history.
        let worker = {
            let sc = sc.clone();
            std::thread::spawn(move || run_round(&sc, round))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !worker.is_finished() {
            if std::time::Instant::now() > deadline {
                let events = log.0.lock().unwrap().clone();
                for e in events.iter().rev().take(60).rev() {
                    eprintln!("{e:?}");
                }
                panic!("round {round} did not finish within 120 s (victim {victim}, nth {nth})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        worker.join().unwrap();
        // If the victim never ran its nth task, kill it now so every round loses an executor.
        if !*killer.killed.lock().unwrap() {
            signal(killer.pid, "-KILL");
        }
    }
    wait_until("capacity recovers", Duration::from_secs(30), || sc.registered_executors() == 3);
    run_round(&sc, 0);
    sc.stop();
}
