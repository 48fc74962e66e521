//! Workload 6, pagerank: an iterative job — a persisted adjacency RDD joined
//! with the current ranks in each of 10 iterations, so it measures
//! persisted-block reads, cogroup/join, a combining shuffle per iteration
//! and the per-job overhead of 11 jobs with growing lineages.
//!
//! Edges `range(0, 1_000_000, P).map(e => (keyOf(2e, 100_000), keyOf(2e+1, 100_000)))`;
//! `links = edges.distinct(P).group_by_key(P).persist()`, `links.count()`
//! (`pagerank_build_links`); `ranks = links.map_values(_ => 1.0)`; 10 times:
//! `contribs = links.join(ranks).values().flat_map(...)`,
//! `ranks = contribs.reduce_by_key(+, P).map_values(0.15 + 0.85 * _).persist()`,
//! `ranks.count()`, unpersist the previous ranks (`pagerank_iter_mean`).
//! `pagerank_total` = build + iterations. Valid when there are 99,999
//! sources, 99,997 ranked vertices, the rank sum is 99993.353291 and the top
//! vertex is 28798 with rank 2.699678 (6 decimals).

use super::{NATIVE_THREADS, P};
use crate::gen::key_of;
use crate::harness::{ms_between, Measurement};
use ember::Context;
use std::cmp::Reverse;
use std::time::Instant;

pub const EDGES: u64 = 1_000_000;
pub const VERTICES: u64 = 100_000;
pub const ITERATIONS: usize = 10;

/// What the validation looks at.
pub struct Outcome {
    pub sources: u64,
    pub ranked: u64,
    pub sum: f64,
    pub top: (u64, f64),
}

impl Outcome {
    pub fn valid(&self) -> bool {
        self.sources == 99_999
            && self.ranked == 99_997
            && format!("{:.6}", self.sum) == "99993.353291"
            && self.top.0 == 28798
            && format!("{:.6}", self.top.1) == "2.699678"
    }
}

fn results(t0: Instant, t1: Instant, t2: Instant, iters: &[f64], o: &Outcome) -> Vec<Measurement> {
    let ok = o.valid();
    let mut sorted = iters.to_vec();
    sorted.sort_by(f64::total_cmp);
    let all: Vec<String> = iters.iter().map(|x| format!("{x:.0}")).collect();
    vec![
        Measurement::new(
            "pagerank_total",
            ms_between(t0, t2),
            "ms",
            format!(
                "srcVertices={} ranked={} sumRanks={:.6} top={}:{:.6} valid={ok}",
                o.sources, o.ranked, o.sum, o.top.0, o.top.1
            ),
        ),
        Measurement::new("pagerank_build_links", ms_between(t0, t1), "ms", format!("valid={ok}")),
        Measurement::new(
            "pagerank_iter_mean",
            iters.iter().sum::<f64>() / iters.len() as f64,
            "ms",
            format!("min={:.1} max={:.1} all={} valid={ok}", sorted[0], sorted[sorted.len() - 1], all.join(",")),
        ),
    ]
}

/// The engine version (the logic of `examples/pagerank.rs`, timed as Spark's).
pub fn ember(sc: &Context) -> anyhow::Result<Vec<Measurement>> {
    let t0 = Instant::now();
    let edges = sc
        .range(0, EDGES as i64, 1, P)?
        .map_with(VERTICES, |m, e| (key_of(2 * e as u64, *m), key_of(2 * e as u64 + 1, *m)));
    let links = edges.distinct(P).group_by_key(P).persist();
    let sources = links.count()?;
    let t1 = Instant::now();
    let mut ranks = links.map_values(|_| 1.0f64);
    let mut iters = Vec::with_capacity(ITERATIONS);
    for i in 1..=ITERATIONS {
        let ti = Instant::now();
        let contribs = links.join(&ranks, P).values().flat_map(|(urls, rank): (Vec<u64>, f64)| {
            let share = rank / urls.len() as f64;
            urls.into_iter().map(move |u| (u, share)).collect::<Vec<_>>()
        });
        let next = contribs.reduce_by_key(|a, b| a + b, P).map_values(|r| 0.15 + 0.85 * r).persist();
        next.count()?;
        if i > 1 {
            ranks.unpersist();
        }
        ranks = next;
        iters.push(ti.elapsed().as_secs_f64() * 1e3);
    }
    let t2 = Instant::now();
    let ranked = ranks.count()?;
    let sum = ranks.values().reduce(|a, b| a + b)?;
    let top = ranks
        .top_by(1, |(v, r)| (r.to_bits(), Reverse(*v)))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no ranks"))?;
    ranks.unpersist();
    links.unpersist();
    let outcome = Outcome { sources, ranked, sum, top };
    Ok(results(t0, t1, t2, &iters, &outcome))
}

/// The native version: dense vertex-indexed arrays. Distinct edges by sort
/// + dedup, adjacency in CSR form; each iteration splits the sources over
///   the threads, each accumulating contributions into its own array.
pub fn native() -> anyhow::Result<Vec<Measurement>> {
    let nv = VERTICES as usize;
    let t = NATIVE_THREADS;
    let t0 = Instant::now();
    let mut edges: Vec<(u32, u32)> = std::thread::scope(|s| {
        let hs: Vec<_> = super::slices(EDGES, t)
            .into_iter()
            .map(|r| {
                s.spawn(move || {
                    let mut v: Vec<(u32, u32)> =
                        r.map(|e| (key_of(2 * e, VERTICES) as u32, key_of(2 * e + 1, VERTICES) as u32)).collect();
                    v.sort_unstable();
                    v
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().expect("edge thread panicked")).collect()
    });
    edges.sort_unstable();
    edges.dedup();
    // CSR adjacency.
    let mut offsets = vec![0u32; nv + 1];
    for &(s, _) in &edges {
        offsets[s as usize + 1] += 1;
    }
    for i in 0..nv {
        offsets[i + 1] += offsets[i];
    }
    let targets: Vec<u32> = edges.iter().map(|&(_, d)| d).collect();
    drop(edges);
    let sources: Vec<u32> = (0..nv as u32).filter(|&v| offsets[v as usize + 1] > offsets[v as usize]).collect();
    let t1 = Instant::now();
    // ranks[v] = Some(rank) when v is in the ranks "RDD".
    let mut ranks: Vec<Option<f64>> = vec![None; nv];
    for &s in &sources {
        ranks[s as usize] = Some(1.0);
    }
    let mut iters = Vec::with_capacity(ITERATIONS);
    let chunk = sources.len().div_ceil(t).max(1);
    for _ in 0..ITERATIONS {
        let ti = Instant::now();
        let partials: Vec<(Vec<f64>, Vec<bool>)> = std::thread::scope(|s| {
            let hs: Vec<_> = sources
                .chunks(chunk)
                .map(|srcs| {
                    let (ranks, offsets, targets) = (&ranks, &offsets, &targets);
                    s.spawn(move || {
                        let mut acc = vec![0.0f64; nv];
                        let mut hit = vec![false; nv];
                        for &src in srcs {
                            if let Some(r) = ranks[src as usize] {
                                let urls = &targets[offsets[src as usize] as usize..offsets[src as usize + 1] as usize];
                                let share = r / urls.len() as f64;
                                for &u in urls {
                                    acc[u as usize] += share;
                                    hit[u as usize] = true;
                                }
                            }
                        }
                        (acc, hit)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("iteration thread panicked")).collect()
        });
        for (v, slot) in ranks.iter_mut().enumerate() {
            let mut sum = 0.0;
            let mut any = false;
            for (acc, hit) in &partials {
                if hit[v] {
                    sum += acc[v];
                    any = true;
                }
            }
            *slot = any.then_some(0.15 + 0.85 * sum);
        }
        iters.push(ti.elapsed().as_secs_f64() * 1e3);
    }
    let t2 = Instant::now();
    let ranked = ranks.iter().filter(|r| r.is_some()).count() as u64;
    let sum: f64 = ranks.iter().flatten().sum();
    let top = ranks
        .iter()
        .enumerate()
        .filter_map(|(v, r)| r.map(|r| (v as u64, r)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .ok_or_else(|| anyhow::anyhow!("no ranks"))?;
    let outcome = Outcome { sources: sources.len() as u64, ranked, sum, top };
    Ok(results(t0, t1, t2, &iters, &outcome))
}
