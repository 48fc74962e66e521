//! Workload 3, agg: hash aggregation of 50 million generated `(u64, i64)`
//! pairs over 1,000,000 keys — narrow generation, map-side combining
//! (`reduce_by_key`) versus a full shuffle of every record
//! (`group_by_key`, never combined map-side).
//!
//! `data = range(0, 50_000_000, P).map(i => (keyOf(i, 1_000_000), i))`;
//! (a) `data.reduce_by_key(+, P).count()` (`agg_reduceByKey`),
//! (b) `data.group_by_key(P).count()` on the same uncached RDD
//! (`agg_groupByKey`), each timed separately. Valid when both counts are
//! 1,000,000.

use super::{FastMap, NATIVE_THREADS, P};
use crate::gen::key_of;
use crate::harness::{ms_between, Measurement};
use ember::Context;
use std::time::Instant;

pub const N: u64 = 50_000_000;
pub const KEYS: u64 = 1_000_000;

fn results(t0: Instant, t1: Instant, t2: Instant, c1: u64, c2: u64) -> Vec<Measurement> {
    vec![
        Measurement::new("agg_reduceByKey", ms_between(t0, t1), "ms", format!("distinct={c1} valid={}", c1 == KEYS)),
        Measurement::new("agg_groupByKey", ms_between(t1, t2), "ms", format!("groups={c2} valid={}", c2 == KEYS)),
    ]
}

/// The engine version.
pub fn ember(sc: &Context) -> anyhow::Result<Vec<Measurement>> {
    let data = sc.range(0, N as i64, 1, P)?.map(|i: i64| (key_of(i as u64, KEYS), i));
    let t0 = Instant::now();
    let c1 = data.reduce_by_key(|a, b| a + b, P).count()?;
    let t1 = Instant::now();
    let c2 = data.group_by_key(P).count()?;
    let t2 = Instant::now();
    Ok(results(t0, t1, t2, c1, c2))
}

/// Two-phase parallel aggregation: each thread folds its slice of the input
/// into a private map (`seq`), then thread `t` merges the keys with
/// `key % threads == t` from every private map (`comb`). Returns the number
/// of keys.
fn two_phase<C: Send + Sync>(seq: fn(&mut FastMap<u64, C>, u64, i64), comb: fn(&mut C, &C), clone: fn(&C) -> C) -> u64 {
    let t = NATIVE_THREADS;
    let locals: Vec<FastMap<u64, C>> = std::thread::scope(|s| {
        let hs: Vec<_> = super::slices(N, t)
            .into_iter()
            .map(|r| {
                s.spawn(move || {
                    let mut m: FastMap<u64, C> = FastMap::default();
                    for i in r {
                        seq(&mut m, key_of(i, KEYS), i as i64);
                    }
                    m
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("aggregation thread panicked")).collect()
    });
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..t)
            .map(|part| {
                let locals = &locals;
                s.spawn(move || {
                    let mut merged: FastMap<u64, C> = FastMap::default();
                    for m in locals {
                        for (k, c) in m.iter().filter(|(k, _)| (**k % t as u64) as usize == part) {
                            match merged.get_mut(k) {
                                Some(acc) => comb(acc, c),
                                None => {
                                    merged.insert(*k, clone(c));
                                }
                            }
                        }
                    }
                    merged.len() as u64
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("merge thread panicked")).sum()
    })
}

/// The native version: the same two aggregations, sum and group-into-vectors.
pub fn native() -> anyhow::Result<Vec<Measurement>> {
    let t0 = Instant::now();
    let c1 = two_phase::<i64>(|m, k, v| *m.entry(k).or_insert(0) += v, |a, b| *a += *b, |c| *c);
    let t1 = Instant::now();
    let c2 =
        two_phase::<Vec<i64>>(|m, k, v| m.entry(k).or_default().push(v), |a, b| a.extend_from_slice(b), |c| c.clone());
    let t2 = Instant::now();
    Ok(results(t0, t1, t2, c1, c2))
}
