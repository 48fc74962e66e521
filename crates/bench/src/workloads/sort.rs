//! Workload 2, sort: a terasort-like range-partitioned shuffle of 1 GB of
//! 100-byte records — input scan, range-partitioner sampling job, shuffle
//! write/read of `(Vec<u8>, Vec<u8>)` pairs, the reduce-side sort and the
//! output write.
//!
//! `binary_records(records.bin, 100)` (30 splits) `.map(r => (r[0..10),
//! r[10..100))).sort_by_key(true, 32)`, then each output partition's task
//! writes `out/sort/part-NNNNN` and returns its statistics. `sort_total`
//! times all of it. Valid when every partition is ordered, partitions are
//! ordered among themselves, the count and the wrapping sum of per-record
//! FNV-1a-64 equal `records.bin.expected`.

use super::{Env, NATIVE_THREADS};
use crate::gen::{fnv1a64_update, read_expected, FNV_OFFSET};
use crate::harness::{ms_since, Measurement};
use ember::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

const REC: usize = 100;
const KEY: usize = 10;
/// Output partitions of `sort_by_key`.
pub const OUT_PARTITIONS: usize = 32;

/// What one output partition's task saw: (partition, records, first key,
/// last key, ordered within the partition, wrapping FNV-1a-64 sum).
pub type PartStats = (usize, u64, Option<Vec<u8>>, Option<Vec<u8>>, bool, u64);

/// Writes records to `dir/part-NNNNN` and computes its [`PartStats`].
fn write_part<'a>(
    dir: &Path,
    partition: usize,
    records: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> std::io::Result<PartStats> {
    let path = dir.join(format!("part-{partition:05}"));
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    let (mut n, mut ok, mut sum) = (0u64, true, 0u64);
    let mut first: Option<Vec<u8>> = None;
    let mut prev: Option<&[u8]> = None;
    for (k, v) in records {
        if prev.is_some_and(|p| p > k) {
            ok = false;
        }
        if first.is_none() {
            first = Some(k.to_vec());
        }
        prev = Some(k);
        out.write_all(k)?;
        out.write_all(v)?;
        sum = sum.wrapping_add(fnv1a64_update(fnv1a64_update(FNV_OFFSET, k), v));
        n += 1;
    }
    out.flush()?;
    Ok((partition, n, first, prev.map(<[u8]>::to_vec), ok, sum))
}

/// The shared validation: per-partition order, order across non-empty
/// partitions, count and checksum against the oracle.
pub fn validate(data: &Path, in_partitions: usize, mut stats: Vec<PartStats>) -> anyhow::Result<String> {
    let exp = read_expected(&data.join("records.bin.expected"))?;
    let get = |k: &str| -> anyhow::Result<u64> {
        Ok(exp
            .iter()
            .find(|(n, _)| n == k)
            .ok_or_else(|| anyhow::anyhow!("no {k} in records.bin.expected"))?
            .1
            .parse()?)
    };
    let (exp_n, exp_sum) = (get("records")?, get("checksum_fnv1a64_sum")?);
    stats.sort_by_key(|s| s.0);
    let mut ok = stats.iter().all(|s| s.4);
    let non_empty: Vec<&PartStats> = stats.iter().filter(|s| s.1 > 0).collect();
    for w in non_empty.windows(2) {
        if w[0].3 > w[1].2 {
            ok = false;
        }
    }
    let total: u64 = stats.iter().map(|s| s.1).sum();
    let sum = stats.iter().fold(0u64, |a, s| a.wrapping_add(s.5));
    let valid = ok && total == exp_n && sum == exp_sum;
    Ok(format!(
        "in_partitions={in_partitions} out_partitions={} records={total} checksum={sum} valid={valid}",
        stats.len()
    ))
}

fn fresh_out_dir(env: &Env) -> anyhow::Result<PathBuf> {
    let dir = env.out.join("sort");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The engine version.
pub fn ember(sc: &Context, env: &Env) -> anyhow::Result<Vec<Measurement>> {
    let dir = fresh_out_dir(env)?;
    let path = env.data.join("records.bin");
    let t0 = Instant::now();
    // min_partitions 2 (Spark's default): 32 MiB splits rounded down to whole records.
    let recs = sc.binary_records(&path, REC, 2)?;
    let in_partitions = recs.num_partitions();
    let sorted = recs.map(|r: Vec<u8>| (r[..KEY].to_vec(), r[KEY..].to_vec())).sort_by_key(true, OUT_PARTITIONS)?;
    let stats: Vec<PartStats> = sc.run_job(
        &sorted,
        (0..sorted.num_partitions()).collect(),
        dir.to_string_lossy().into_owned(),
        |dir: &String, ctx: &TaskContext, it: BoxIter<(Vec<u8>, Vec<u8>)>| {
            let path = Path::new(dir).join(format!("part-{:05}", ctx.partition_id()));
            let file = std::fs::File::create(&path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let (mut n, mut ok, mut sum) = (0u64, true, 0u64);
            let (mut first, mut prev): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
            for (k, v) in it {
                if prev.as_ref().is_some_and(|p| *p > k) {
                    ok = false;
                }
                if first.is_none() {
                    first = Some(k.clone());
                }
                out.write_all(&k).and_then(|_| out.write_all(&v)).map_err(|e| Error::io("writing sort output", e))?;
                sum = sum.wrapping_add(fnv1a64_update(fnv1a64_update(FNV_OFFSET, &k), &v));
                n += 1;
                prev = Some(k);
            }
            out.flush().map_err(|e| Error::io("writing sort output", e))?;
            let stats: PartStats = (ctx.partition_id(), n, first, prev, ok, sum);
            Ok(stats)
        },
    )?;
    let elapsed = ms_since(t0);
    let info = validate(&env.data, in_partitions, stats)?;
    Ok(vec![Measurement::new("sort_total", elapsed, "ms", info)])
}

/// Packs a 10-byte key into a `u128` whose order is the unsigned
/// lexicographic order of the bytes.
#[inline]
fn packed_key(rec: &[u8]) -> u128 {
    let mut k = [0u8; 16];
    k[..KEY].copy_from_slice(&rec[..KEY]);
    u128::from_be_bytes(k)
}

/// The native version: read the file, sort (key, index) pairs of each half
/// on its own thread, merge, split into 32 equal ranges and write them from
/// 2 threads.
pub fn native(env: &Env) -> anyhow::Result<Vec<Measurement>> {
    let dir = fresh_out_dir(env)?;
    let path = env.data.join("records.bin");
    let t0 = Instant::now();
    let buf = std::fs::read(&path)?;
    anyhow::ensure!(buf.len() % REC == 0, "records.bin is not whole records");
    let n = buf.len() / REC;
    let halves = super::slices(n as u64, NATIVE_THREADS);
    let runs: Vec<Vec<(u128, u32)>> = std::thread::scope(|s| {
        let hs: Vec<_> = halves
            .iter()
            .map(|r| {
                let buf = &buf;
                let r = r.clone();
                s.spawn(move || {
                    let mut v: Vec<(u128, u32)> =
                        (r.start as usize..r.end as usize).map(|i| (packed_key(&buf[i * REC..]), i as u32)).collect();
                    v.sort_unstable();
                    v
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("sorting thread panicked")).collect()
    });
    // k-way merge of the sorted runs (k = NATIVE_THREADS).
    let mut order: Vec<u32> = Vec::with_capacity(n);
    let mut pos = vec![0usize; runs.len()];
    loop {
        let mut best: Option<(usize, (u128, u32))> = None;
        for (r, run) in runs.iter().enumerate() {
            if let Some(&e) = run.get(pos[r]) {
                if best.is_none_or(|(_, b)| e < b) {
                    best = Some((r, e));
                }
            }
        }
        match best {
            Some((r, e)) => {
                order.push(e.1);
                pos[r] += 1;
            }
            None => break,
        }
    }
    drop(runs);
    let parts = super::slices(n as u64, OUT_PARTITIONS);
    let stats: Vec<PartStats> = std::thread::scope(|s| -> std::io::Result<Vec<PartStats>> {
        let hs: Vec<_> = (0..NATIVE_THREADS)
            .map(|t| {
                let (buf, order, parts, dir) = (&buf, &order, &parts, &dir);
                s.spawn(move || -> std::io::Result<Vec<PartStats>> {
                    let mut out = Vec::new();
                    for (p, range) in parts.iter().enumerate().filter(|(p, _)| p % NATIVE_THREADS == t) {
                        let recs = order[range.start as usize..range.end as usize].iter().map(|&i| {
                            let r = &buf[i as usize * REC..(i as usize + 1) * REC];
                            (&r[..KEY], &r[KEY..])
                        });
                        out.push(write_part(dir, p, recs)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in hs {
            all.extend(h.join().expect("writing thread panicked")?);
        }
        Ok(all)
    })?;
    let elapsed = ms_since(t0);
    let info = validate(&env.data, NATIVE_THREADS, stats)?;
    Ok(vec![Measurement::new("sort_total", elapsed, "ms", info)])
}
