//! `ember-bench`: generate the benchmark data and run the workloads.
//!
//! ```text
//! ember-bench gen --data DIR [--words-bytes N] [--records N]
//! ember-bench run WORKLOAD|all --data DIR [--master URL] [--warmup N] [--runs N]
//!                 [--engine ember|native] [--out DIR]
//! ```
//!
//! `all` (or a comma-separated list) runs each workload in a process of its own.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use ember_bench::gen;
use ember_bench::harness::{
    fmt_value, load_average, peak_rss, peak_rss_of, reset_peak_rss, reset_peak_rss_of, Collector,
};
use ember_bench::workloads::{self, sched::Pool, Env, ALL, NATIVE_THREADS};

/// The benchmark binary, like any user program, picks its allocator: mimalloc
/// makes the per-record allocations of RDD code (a `String` per word) far
/// cheaper than glibc's. Both engines measured here (Ember and the native
/// baseline) run on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "ember-bench", about = "Ember's benchmark harness (WORKLOADS.md)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes words.txt and records.bin (+ .expected), byte-identical to gen_data.rs.
    Gen {
        #[arg(long)]
        data: PathBuf,
        /// Target size of words.txt in bytes.
        #[arg(long, default_value_t = gen::DEFAULT_WORDS_BYTES)]
        words_bytes: u64,
        /// Number of 100-byte records in records.bin.
        #[arg(long, default_value_t = gen::DEFAULT_RECORDS)]
        records: u64,
    },
    /// Runs one workload, a comma-separated list, or `all`; with more than
    /// one, each runs in its own process.
    Run {
        /// wordcount, sort, agg, join, sched, tiny, pagerank, or all.
        workload: String,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "local[2]")]
        master: String,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, value_enum, default_value_t = Engine::Ember)]
        engine: Engine,
        /// Scratch output directory (sort writes OUT/sort/part-NNNNN).
        #[arg(long, default_value = "out")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    Ember,
    Native,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Ember => "ember",
            Engine::Native => "native",
        }
    }
}

fn main() -> anyhow::Result<()> {
    ember_bench::allocator::retain_freed_memory();
    match Cli::parse().cmd {
        Cmd::Gen { data, words_bytes, records } => {
            std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
            let t0 = Instant::now();
            let w = gen::gen_words(
                &data.join("words.txt"),
                words_bytes,
                gen::DEFAULT_VOCAB,
                gen::DEFAULT_ZIPF_S,
                gen::DEFAULT_WORDS_SEED,
            )?;
            println!(
                "words: {} bytes, {} lines, {} words, {} distinct -> {} ({:.1} s)",
                w.bytes,
                w.lines,
                w.words,
                w.distinct,
                data.join("words.txt").display(),
                t0.elapsed().as_secs_f64()
            );
            let t1 = Instant::now();
            let r = gen::gen_records(&data.join("records.bin"), records, gen::DEFAULT_RECORDS_SEED)?;
            println!(
                "records: {} x 100 bytes, checksum {} -> {} ({:.1} s)",
                r.records,
                r.checksum,
                data.join("records.bin").display(),
                t1.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::Run { workload, data, master, warmup, runs, engine, out } => {
            let names: Vec<String> = if workload == "all" {
                ALL.iter().map(|s| s.to_string()).collect()
            } else {
                workload.split(',').map(str::to_string).collect()
            };
            for n in &names {
                anyhow::ensure!(ALL.contains(&n.as_str()), "unknown workload {n} (expected one of {ALL:?} or all)");
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            if names.len() > 1 {
                return run_each_in_own_process(&names, &data, &out, &master, warmup, runs, engine);
            }
            let env = Env { data, out };
            run(&names, &env, &master, warmup, runs, engine)
        }
    }
}

/// Runs each workload in a fresh process of this binary, as Spark's harness
/// gives each workload its own JVM (WORKLOADS.md). A workload then neither
/// inherits the memory an earlier one left resident, so its peak RSS is its
/// own, nor pays for the page faults an earlier one set off: after agg, a
/// local-cluster driver sharing the process grew its heap by about 27 MiB
/// in fresh huge pages during sched's timed runs (sched 14–46 ms in those
/// runs, 8–11 ms in a process of its own in the same half hour).
fn run_each_in_own_process(
    names: &[String],
    data: &std::path::Path,
    out: &std::path::Path,
    master: &str,
    warmup: usize,
    runs: usize,
    engine: Engine,
) -> anyhow::Result<()> {
    let t_start = Instant::now();
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut failures = Vec::new();
    for name in names {
        let status = std::process::Command::new(&exe)
            .arg("run")
            .arg(name)
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(out)
            .args(["--master", master, "--engine", engine.name()])
            .args(["--warmup", &warmup.to_string(), "--runs", &runs.to_string()])
            .status()
            .with_context(|| format!("starting the process for {name}"))?;
        if !status.success() {
            failures.push(format!("{name}: its process ended with {status}"));
        }
    }
    println!("INFO all workloads total_ms={:.0}", t_start.elapsed().as_secs_f64() * 1e3);
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} workload(s) failed: {}", failures.len(), failures.join("; "))
    }
}

/// Runs `names` one after another in this process, on one context.
fn run(names: &[String], env: &Env, master: &str, warmup: usize, runs: usize, engine: Engine) -> anyhow::Result<()> {
    let t_start = Instant::now();
    let sc = match engine {
        Engine::Ember => Some(
            ember::Context::builder()
                .master(master)
                .app_name("ember-bench")
                .set("ember.ui.showConsoleProgress", "false")
                .build()?,
        ),
        Engine::Native => None,
    };
    let pool = (engine == Engine::Native).then(|| Pool::new(NATIVE_THREADS));
    println!(
        "INFO engine={} master={} warmup={warmup} runs={runs} context_start_ms={:.1} pid={} mimalloc_purge_delay_ms={}",
        engine.name(),
        if engine == Engine::Ember { master } else { "native[2]" },
        t_start.elapsed().as_secs_f64() * 1e3,
        std::process::id(),
        ember_bench::allocator::purge_delay_ms()
    );
    let mut process_peak = peak_rss().unwrap_or(0);
    let mut failures = Vec::new();
    // Executor processes (local-cluster): their peaks are read and reset per
    // workload too; empty in local mode.
    let executor_pids = || sc.as_ref().map(|sc| sc.executor_pids()).unwrap_or_default();
    for name in names {
        let resettable = reset_peak_rss();
        for pid in executor_pids() {
            reset_peak_rss_of(pid);
        }
        println!("INFO workload {name} start loadavg={}", load_average());
        let tw = Instant::now();
        let one = |_: usize| match (&sc, &pool) {
            (Some(sc), _) => workloads::run_ember(name, sc, env),
            (None, Some(pool)) => workloads::run_native(name, env, pool),
            (None, None) => unreachable!("an engine is always chosen"),
        };
        let mut collector = Collector::new();
        let outcome = (|| -> anyhow::Result<()> {
            for k in 1..=warmup {
                for m in one(k)? {
                    println!("WARMUP {name} {} run={k} value={} {} {}", m.metric, fmt_value(m.value), m.unit, m.info);
                }
            }
            for k in 1..=runs {
                let ms = one(k)?;
                collector.record(name, k, &ms);
            }
            Ok(())
        })();
        collector.summarize(name);
        let peak = peak_rss().unwrap_or(0);
        process_peak = process_peak.max(peak);
        println!(
            "PEAK_RSS_WORKLOAD {name} {peak} ({}) wall_ms={:.0} loadavg={}",
            if resettable { "since workload start" } else { "since process start" },
            tw.elapsed().as_secs_f64() * 1e3,
            load_average()
        );
        let executor_peaks: Vec<u64> = executor_pids().into_iter().filter_map(peak_rss_of).collect();
        if !executor_peaks.is_empty() {
            let sum: u64 = executor_peaks.iter().sum();
            println!(
                "PEAK_RSS_EXECUTORS {name} sum={sum} max={} executors={} (sum of per-process peaks; with the driver's: {})",
                executor_peaks.iter().max().copied().unwrap_or(0),
                executor_peaks.len(),
                sum + peak
            );
        }
        match outcome {
            Ok(()) if collector.all_valid => {}
            Ok(()) => failures.push(format!("{name}: validation failed")),
            Err(e) => {
                println!("ERROR {name} {e:#}");
                failures.push(format!("{name}: {e:#}"));
            }
        }
    }
    println!("INFO total_ms={:.0}", t_start.elapsed().as_secs_f64() * 1e3);
    println!("PEAK_RSS {process_peak}");
    drop(sc);
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} workload(s) failed: {}", failures.len(), failures.join("; "))
    }
}
