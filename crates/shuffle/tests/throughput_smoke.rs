//! Rough throughput smoke test (ignored by default; run with `--ignored --nocapture`).

use std::convert::Infallible;
use std::time::Instant;

use ember_shuffle::{
    combine_by_key, key_hash, open_segment, sort_by_key, write_combined, write_plain, Aggregator, MemoryPool,
    WriteConfig,
};

struct Sum;
impl Aggregator<u64, u64, u64> for Sum {
    fn create_combiner(&self, v: u64) -> u64 {
        v
    }
    fn merge_value(&self, c: u64, v: u64) -> u64 {
        c + v
    }
    fn merge_combiners(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

#[test]
#[ignore]
fn throughput_smoke() {
    let n_rec = 2_000_000u64;
    let parts = 16usize;
    let dir = tempfile::tempdir().unwrap();
    let cfg = WriteConfig::new(dir.path().join("spill"));
    let pf = move |k: &u64| (key_hash(k) % parts as u64) as usize;
    let records = || (0..n_rec).map(|i| Ok::<_, Infallible>((i.wrapping_mul(2654435761) % 100_000, i)));
    for (label, limit) in [("big mem", 1usize << 30), ("8 MiB", 8 << 20), ("1 MiB", 1 << 20)] {
        let pool = MemoryPool::new(limit);
        let mut mem = pool.reservation();
        let t = Instant::now();
        let info = write_plain(records(), parts, pf, &mut mem, &cfg, &dir.path().join("p.data")).unwrap();
        eprintln!("plain    {label}: {:?} spills={} bytes={}", t.elapsed(), info.spill_count, info.bytes_written);
        let t = Instant::now();
        let info = write_combined(records(), parts, pf, &Sum, &mut mem, &cfg, &dir.path().join("c.data")).unwrap();
        eprintln!("combined {label}: {:?} spills={} recs={}", t.elapsed(), info.spill_count, info.records_written);
        let t = Instant::now();
        let mut total = 0usize;
        for p in 0..parts {
            let it = open_segment::<u64, u64>(dir.path().join("p.data"), p).unwrap();
            let agg = combine_by_key(it, Sum, &mut mem, &cfg.spill_dir, &cfg).unwrap();
            total += agg.count();
        }
        eprintln!("reduce combine {label}: {:?} keys={total}", t.elapsed());
        let t = Instant::now();
        let it = sort_by_key(records(), true, &mut mem, &cfg.spill_dir, &cfg).unwrap();
        let spills = it.spill_count();
        eprintln!("sort {label}: {:?} spills={spills} n={}", t.elapsed(), it.count());
    }
}
