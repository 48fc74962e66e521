//! The seven workloads of `WORKLOADS.md`, one module each. Every module has
//! an `ember` function (the engine, through its public RDD API), a `native`
//! function (a hand-written single-process Rust version on 2 std threads, no
//! engine) and the validation both share; each returns the measurements of
//! one run.

pub mod agg;
pub mod join;
pub mod pagerank;
pub mod sched;
pub mod sort;
pub mod tiny;
pub mod wordcount;

use crate::harness::Measurement;
use ember::Context;
use std::path::PathBuf;

/// Partition count `P` of agg, join and pagerank.
pub const P: usize = 16;
/// Threads of the native versions (the engine runs on `local[2]`).
pub const NATIVE_THREADS: usize = 2;

/// Where a run reads and writes.
#[derive(Debug, Clone)]
pub struct Env {
    /// Directory with `words.txt`, `records.bin` and their `.expected` files.
    pub data: PathBuf,
    /// Scratch output directory (sort writes `out/sort/part-NNNNN`).
    pub out: PathBuf,
}

/// All workload names, in `WORKLOADS.md` order.
pub const ALL: [&str; 7] = ["wordcount", "sort", "agg", "join", "sched", "tiny", "pagerank"];

/// One run of `name` on the engine.
pub fn run_ember(name: &str, sc: &Context, env: &Env) -> anyhow::Result<Vec<Measurement>> {
    match name {
        "wordcount" => wordcount::ember(sc, env),
        "sort" => sort::ember(sc, env),
        "agg" => agg::ember(sc),
        "join" => join::ember(sc),
        "sched" => sched::ember(sc),
        "tiny" => tiny::ember(sc),
        "pagerank" => pagerank::ember(sc),
        other => anyhow::bail!("unknown workload {other}"),
    }
}

/// One run of `name` without the engine. `pool` is the long-lived worker
/// pool the scheduler workloads dispatch to (the native "runtime").
pub fn run_native(name: &str, env: &Env, pool: &sched::Pool) -> anyhow::Result<Vec<Measurement>> {
    match name {
        "wordcount" => wordcount::native(env),
        "sort" => sort::native(env),
        "agg" => agg::native(),
        "join" => join::native(),
        "sched" => sched::native(pool),
        "tiny" => tiny::native(pool),
        "pagerank" => pagerank::native(),
        other => anyhow::bail!("unknown workload {other}"),
    }
}

/// A fast, deterministic hasher for the native versions' hash maps
/// (multiply-rotate over 8-byte words; not DoS-resistant, not needed here).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        crate::gen::mix64(self.0)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            let w = u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// `BuildHasher` for [`FastHasher`].
pub type FastBuild = std::hash::BuildHasherDefault<FastHasher>;
/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuild>;

/// Contiguous equal slices of `[0, n)` for `parts` workers (like `range(0, n, parts)`).
pub fn slices(n: u64, parts: usize) -> Vec<std::ops::Range<u64>> {
    (0..parts as u64).map(|i| (i * n / parts as u64)..((i + 1) * n / parts as u64)).collect()
}
