//! Word count, the classic first Ember job.
//!
//! ```text
//! cargo run --release --example wordcount -- [--master URL] [--top N] [--output DIR] [INPUT]
//! ```
//! Counts whitespace-separated words in INPUT (a file or a directory) and
//! prints the top N as `word<TAB>count`, by count descending then word
//! ascending. With no INPUT it first writes a sample text (about 8 MiB) to a
//! temporary directory. With `--output DIR` it also saves every
//! `word<TAB>count` there with `save_as_text_file`.

use clap::Parser;
use ember::prelude::*;
use std::cmp::Reverse;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Master URL: local, local[N], local[*], local[N,F].
    #[arg(long, default_value = "local[*]")]
    master: String,
    /// How many of the most frequent words to print.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Also save all counts to this (new) directory.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Input file or directory; a sample is generated when omitted.
    input: Option<PathBuf>,
}

/// Writes `words` words drawn from a Zipf-like distribution over a small vocabulary.
fn write_sample(path: &std::path::Path, words: usize) -> std::io::Result<()> {
    const VOCAB: &[&str] = &[
        "the",
        "ember",
        "spark",
        "rust",
        "data",
        "engine",
        "stage",
        "task",
        "shuffle",
        "executor",
        "driver",
        "partition",
        "lineage",
        "closure",
        "memory",
        "disk",
        "network",
        "result",
        "job",
        "scheduler",
    ];
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 42;
    for i in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Roughly Zipf: index ~ 1/u.
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        let idx = ((1.0 / (u + 0.05)) as usize).min(VOCAB.len() - 1);
        out.write_all(VOCAB[idx].as_bytes())?;
        out.write_all(if i % 12 == 11 { b"\n" } else { b" " })?;
    }
    out.flush()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let _sample_dir;
    let input = match args.input {
        Some(p) => p,
        None => {
            let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create a temporary directory", e))?;
            let path = dir.path().join("sample.txt");
            write_sample(&path, 1_500_000).map_err(|e| Error::io("cannot write the sample input", e))?;
            eprintln!("no INPUT given: generated {}", path.display());
            _sample_dir = dir;
            path
        }
    };
    let sc = Context::builder().master(&args.master).app_name("wordcount").build()?;
    let partitions = sc.default_parallelism().max(2);
    let counts = sc
        .text_file(&input, partitions)?
        .flat_map(|line: String| line.split_whitespace().map(String::from).collect::<Vec<_>>())
        .map(|w| (w, 1u64))
        .reduce_by_key(|a, b| a + b, partitions);
    let top = counts.top_by(args.top, |(w, c)| (*c, Reverse(w.clone())))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (word, count) in top {
        let _ = writeln!(out, "{word}\t{count}");
    }
    if let Some(dir) = args.output {
        counts.map(|(w, c)| format!("{w}\t{c}")).save_as_text_file(dir)?;
    }
    Ok(())
}
