//! Workload 4, join: a shuffled hash join (cogroup) of 10 million left rows
//! against 1 million right rows on 1,000,000 keys — two shuffles, cogroup
//! buffering and per-key output expansion.
//!
//! `left = range(0, 10_000_000, P).map(i => (keyOf(i, 1_000_000), i))`,
//! `right = range(0, 1_000_000, P).map(j => (j, j))`,
//! `left.join(right, P).count()` (`join`). Valid when the count is 10,000,000.

use super::{FastMap, NATIVE_THREADS, P};
use crate::gen::key_of;
use crate::harness::{ms_since, Measurement};
use ember::Context;
use std::time::Instant;

pub const LEFT: u64 = 10_000_000;
pub const KEYS: u64 = 1_000_000;

fn result(elapsed: f64, rows: u64) -> Vec<Measurement> {
    vec![Measurement::new("join", elapsed, "ms", format!("rows={rows} valid={}", rows == LEFT))]
}

/// The engine version.
pub fn ember(sc: &Context) -> anyhow::Result<Vec<Measurement>> {
    let left = sc.range(0, LEFT as i64, 1, P)?.map(|i: i64| (key_of(i as u64, KEYS), i));
    let right = sc.range(0, KEYS as i64, 1, P)?.map(|j: i64| (j as u64, j));
    let t0 = Instant::now();
    let rows = left.join(&right, P).count()?;
    Ok(result(ms_since(t0), rows))
}

/// The native version: thread `t` builds the hash table of the right rows
/// with `key % threads == t`; then each thread generates its slice of the
/// left side and probes, producing every `(k, (v, w))` row.
pub fn native() -> anyhow::Result<Vec<Measurement>> {
    let t = NATIVE_THREADS;
    let t0 = Instant::now();
    let tables: Vec<FastMap<u64, Vec<i64>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..t)
            .map(|part| {
                s.spawn(move || {
                    let mut m: FastMap<u64, Vec<i64>> = FastMap::default();
                    for j in (0..KEYS).filter(|j| (j % t as u64) as usize == part) {
                        m.entry(j).or_default().push(j as i64);
                    }
                    m
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("build thread panicked")).collect()
    });
    let rows: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = super::slices(LEFT, t)
            .into_iter()
            .map(|r| {
                let tables = &tables;
                s.spawn(move || {
                    let (mut rows, mut acc) = (0u64, 0i64);
                    for i in r {
                        let k = key_of(i, KEYS);
                        if let Some(ws) = tables[(k % t as u64) as usize].get(&k) {
                            for &w in ws {
                                let row = (k, (i as i64, w));
                                acc = acc.wrapping_add(std::hint::black_box(row).1 .1);
                                rows += 1;
                            }
                        }
                    }
                    std::hint::black_box(acc);
                    rows
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("probe thread panicked")).sum()
    });
    Ok(result(ms_since(t0), rows))
}
