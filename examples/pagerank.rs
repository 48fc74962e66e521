//! PageRank, as `WORKLOADS.md` defines it: a deterministic random graph,
//! `links = edges.distinct().group_by_key().persist()`, then 10 iterations of
//! `contribs = links.join(ranks).values().flat_map(...)`,
//! `ranks = contribs.reduce_by_key(+).map_values(0.15 + 0.85 * _)`.
//!
//! ```text
//! cargo run --release --example pagerank -- [--master URL] [--edges N] [--vertices N] [--iterations N]
//! ```

use clap::Parser;
use ember::prelude::*;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "local[*]")]
    master: String,
    #[arg(long, default_value_t = 200_000)]
    edges: i64,
    #[arg(long, default_value_t = 20_000)]
    vertices: u64,
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    #[arg(long, default_value_t = 16)]
    partitions: usize,
}

/// SplitMix64, the generator `WORKLOADS.md` names `mix64`.
fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key_of(x: u64, m: u64) -> u64 {
    (mix64(x) >> 1) % m
}

fn main() -> Result<()> {
    let args = Args::parse();
    let p = args.partitions;
    let sc = Context::builder().master(&args.master).app_name("pagerank").build()?;
    let edges = sc
        .range(0, args.edges, 1, p)?
        .map_with(args.vertices, |m, e| (key_of(2 * e as u64, *m), key_of(2 * e as u64 + 1, *m)));
    let links = edges.distinct(p).group_by_key(p).persist();
    let sources = links.count()?;
    let mut ranks = links.map_values(|_| 1.0f64).persist();
    for _ in 0..args.iterations {
        let contribs = links.join(&ranks, p).values().flat_map(|(urls, rank): (Vec<u64>, f64)| {
            let share = rank / urls.len() as f64;
            urls.into_iter().map(move |u| (u, share)).collect::<Vec<_>>()
        });
        let next = contribs.reduce_by_key(|a, b| a + b, p).map_values(|r| 0.15 + 0.85 * r).persist();
        next.count()?;
        ranks.unpersist();
        ranks = next;
    }
    let ranked = ranks.count()?;
    let sum = ranks.values().reduce(|a, b| a + b)?;
    let top = ranks.top_by(5, |(v, r)| (ordered(*r), std::cmp::Reverse(*v)))?;
    println!("{sources} source vertices, {ranked} ranked vertices, sum of ranks {sum:.6}");
    for (v, r) in top {
        println!("{v}\t{r:.6}");
    }
    Ok(())
}

/// Orders finite f64 ranks (total order on the bit pattern of non-negative floats).
fn ordered(r: f64) -> u64 {
    r.to_bits()
}
