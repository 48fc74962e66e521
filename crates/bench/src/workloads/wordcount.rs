//! Workload 1, wordcount: text scanning, per-record closures over `String`s
//! and a combining hash shuffle with a 100,000-key, Zipf-skewed key space.
//!
//! `text_file(words.txt)` (32 splits of 32 MiB) `.flat_map(split on ' ')`
//! `.map((w, 1)).reduce_by_key(+, 32)`, then `.count()` and the top 10 by
//! count. `wordcount_total` times both actions from `text_file` on;
//! `wordcount_count_only` the first action. Valid when distinct = the oracle
//! and the top 10 equal `words.txt.expected`.

use super::{Env, FastMap, NATIVE_THREADS};
use crate::gen::read_expected;
use crate::harness::{ms_between, Measurement};
use ember::Context;
use std::cmp::Reverse;
use std::path::Path;
use std::time::Instant;

/// The oracle: distinct words and the top 10 as `"word count"` lines.
pub struct Expected {
    pub distinct: u64,
    pub top: Vec<String>,
}

impl Expected {
    pub fn load(data: &Path) -> anyhow::Result<Expected> {
        let lines = read_expected(&data.join("words.txt.expected"))?;
        let distinct = lines
            .iter()
            .find(|(k, _)| k == "distinct")
            .ok_or_else(|| anyhow::anyhow!("words.txt.expected has no distinct line"))?
            .1
            .parse()?;
        let top = lines.iter().filter(|(k, _)| k == "top").map(|(_, v)| v.clone()).collect();
        Ok(Expected { distinct, top })
    }

    /// Validation and the `info` string of a run.
    pub fn check(&self, partitions: usize, distinct: u64, top: &[(String, u64)]) -> (bool, String) {
        let got: Vec<String> = top.iter().map(|(w, c)| format!("{w} {c}")).collect();
        let ok = distinct == self.distinct && got == self.top;
        let top1 = got.first().map(|s| s.replace(' ', ":")).unwrap_or_default();
        (ok, format!("partitions={partitions} distinct={distinct} top1={top1} valid={ok}"))
    }
}

fn results(t0: Instant, t1: Instant, t2: Instant, info: String) -> Vec<Measurement> {
    let valid = info.ends_with("valid=true");
    vec![
        Measurement::new("wordcount_total", ms_between(t0, t2), "ms", info),
        Measurement::new("wordcount_count_only", ms_between(t0, t1), "ms", format!("valid={valid}")),
    ]
}

/// The engine version.
pub fn ember(sc: &Context, env: &Env) -> anyhow::Result<Vec<Measurement>> {
    let expected = Expected::load(&env.data)?;
    let path = env.data.join("words.txt");
    let t0 = Instant::now();
    // min_partitions 2 = Spark's default (min(defaultParallelism, 2)): 32 MiB splits.
    let lines = sc.text_file(&path, 2)?;
    let partitions = lines.num_partitions();
    let counts = lines
        .flat_map(|line: String| line.split(' ').map(String::from).collect::<Vec<_>>())
        .map(|w| (w, 1u64))
        .reduce_by_key(|a, b| a + b, partitions);
    let distinct = counts.count()?;
    let t1 = Instant::now();
    let top = counts.top_by(10, |(w, c)| (*c, Reverse(w.clone())))?;
    let t2 = Instant::now();
    let (_, info) = expected.check(partitions, distinct, &top);
    Ok(results(t0, t1, t2, info))
}

/// Counts the words of `chunk` (whole lines) into a map keyed by slices of it.
fn count_chunk(chunk: &[u8]) -> FastMap<&[u8], u64> {
    let mut map: FastMap<&[u8], u64> = FastMap::default();
    for line in chunk.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        for w in line.split(|&b| b == b' ') {
            *map.entry(w).or_insert(0) += 1;
        }
    }
    map
}

/// The native version: read the file, count each half on its own thread
/// with keys pointing into the buffer, merge, then take the top 10.
pub fn native(env: &Env) -> anyhow::Result<Vec<Measurement>> {
    let expected = Expected::load(&env.data)?;
    let path = env.data.join("words.txt");
    let t0 = Instant::now();
    let buf = std::fs::read(&path)?;
    // Cut at newlines into NATIVE_THREADS chunks of whole lines.
    let mut cuts = vec![0usize];
    for i in 1..NATIVE_THREADS {
        let guess = (buf.len() * i / NATIVE_THREADS).max(*cuts.last().expect("non-empty"));
        let at = memchr::memchr(b'\n', &buf[guess..]).map(|p| guess + p + 1).unwrap_or(buf.len());
        cuts.push(at);
    }
    cuts.push(buf.len());
    let maps: Vec<FastMap<&[u8], u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = cuts.windows(2).map(|w| s.spawn(|| count_chunk(&buf[w[0]..w[1]]))).collect();
        handles.into_iter().map(|h| h.join().expect("counting thread panicked")).collect()
    });
    let mut maps = maps.into_iter();
    let mut total = maps.next().unwrap_or_default();
    for m in maps {
        for (w, c) in m {
            *total.entry(w).or_insert(0) += c;
        }
    }
    let distinct = total.len() as u64;
    let t1 = Instant::now();
    let mut all: Vec<(&[u8], u64)> = total.into_iter().collect();
    let k = 10.min(all.len());
    let cmp = |a: &(&[u8], u64), b: &(&[u8], u64)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
    if k > 0 {
        all.select_nth_unstable_by(k - 1, cmp);
    }
    all.truncate(k);
    all.sort_by(cmp);
    let top: Vec<(String, u64)> = all.into_iter().map(|(w, c)| (String::from_utf8_lossy(w).into_owned(), c)).collect();
    let t2 = Instant::now();
    let (_, info) = expected.check(cuts.len() - 1, distinct, &top);
    drop(buf);
    Ok(results(t0, t1, t2, info))
}
