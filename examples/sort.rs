//! Sort 100-byte records by their 10-byte key (the gensort/terasort layout).
//!
//! ```text
//! cargo run --release --example sort -- [--master URL] [--partitions N] [--records N] [INPUT] OUTPUT_DIR
//! ```
//! Reads INPUT (or generates `--records` random records when omitted), sorts
//! by key with a range-partitioned shuffle, writes one `part-NNNNN` file of
//! whole records per partition, and checks the output is globally ordered.

use clap::Parser;
use ember::prelude::*;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "local[*]")]
    master: String,
    #[arg(long, default_value_t = 8)]
    partitions: usize,
    /// Records to generate when no INPUT is given.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Input file of 100-byte records, then the output directory.
    paths: Vec<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (input, output, _tmp) = match args.paths.as_slice() {
        [input, output] => (input.clone(), output.clone(), None),
        [output] => {
            let tmp = tempfile::tempdir().map_err(|e| Error::io("cannot create a temporary directory", e))?;
            let path = tmp.path().join("records.bin");
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| Error::io("create", e))?);
            let mut x: u64 = 7;
            for _ in 0..args.records {
                let mut rec = [0u8; 100];
                for b in rec.iter_mut() {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    *b = (x >> 56) as u8;
                }
                out.write_all(&rec).map_err(|e| Error::io("write", e))?;
            }
            out.flush().map_err(|e| Error::io("write", e))?;
            (path, output.clone(), Some(tmp))
        }
        _ => return Err(Error::InvalidArgument("usage: sort [INPUT] OUTPUT_DIR".into())),
    };
    let sc = Context::builder().master(&args.master).app_name("sort").build()?;
    let sorted = sc
        .binary_records(&input, 100, args.partitions)?
        .map(|r: Vec<u8>| (r[..10].to_vec(), r[10..].to_vec()))
        .sort_by_key(true, args.partitions)?;
    std::fs::create_dir_all(&output).map_err(|e| Error::io("cannot create the output directory", e))?;
    let written = sc.run_job(
        &sorted,
        (0..sorted.num_partitions()).collect(),
        output.to_string_lossy().into_owned(),
        |dir: &String, ctx: &TaskContext, it: BoxIter<(Vec<u8>, Vec<u8>)>| {
            let path = std::path::Path::new(dir).join(format!("part-{:05}", ctx.partition_id()));
            let file = std::fs::File::create(&path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let (mut n, mut first, mut last): (u64, Option<Vec<u8>>, Option<Vec<u8>>) = (0, None, None);
            for (k, v) in it {
                out.write_all(&k).and_then(|_| out.write_all(&v)).map_err(|e| Error::io("write", e))?;
                if first.is_none() {
                    first = Some(k.clone());
                }
                last = Some(k);
                n += 1;
            }
            out.flush().map_err(|e| Error::io("write", e))?;
            Ok((n, first, last))
        },
    )?;
    let total: u64 = written.iter().map(|w| w.0).sum();
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = written.into_iter().filter_map(|(_, f, l)| Some((f?, l?))).collect();
    let ordered = ranges.windows(2).all(|w| w[0].1 <= w[1].0);
    println!(
        "sorted {total} records into {} partitions in {}; ordered across partitions: {ordered}",
        ranges.len(),
        output.display()
    );
    if !ordered {
        return Err(Error::InvalidArgument("output is not globally ordered".into()));
    }
    Ok(())
}
