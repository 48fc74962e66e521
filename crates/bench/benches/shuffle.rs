//! Shuffle write and read cost per record, on the engine's shuffle crate
//! directly: `write_plain` (no aggregation, like group_by_key / sort /
//! join), `write_combined` (map-side sum, like reduce_by_key) and reading
//! every reduce segment back with `SegmentReader`, and the reduce side of a
//! group-by: decoding segments straight into `combine_by_key` over a key
//! set larger than the cache (the case batching was made for). And the map
//! side of wordcount: Zipf-distributed words over a 100,000-word vocabulary
//! summed by `write_combined`, whose time is the combine table's cache misses.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ember_shuffle::{
    combine_by_key, read_segment, write_combined, write_plain, FnAggregator, MemoryPool, SegmentReader, WriteConfig,
};
use std::convert::Infallible;
use std::hint::black_box;

/// The allocator `ember-bench` runs with, so that per-record allocation and
/// freeing cost here what they cost in the workloads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: u64 = 200_000;
const PARTITIONS: usize = 16;
const KEYS: u64 = 20_000;

fn records() -> impl Iterator<Item = Result<(u64, i64), Infallible>> {
    (0..RECORDS).map(|i| Ok((ember_bench::gen::key_of(i, KEYS), i as i64)))
}

fn partition_of(k: &u64) -> usize {
    (*k % PARTITIONS as u64) as usize
}

fn bench_shuffle(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let pool = MemoryPool::new(1 << 30);
    let cfg = WriteConfig::new(dir.path().join("spill"));
    let data = dir.path().join("map.data");

    let mut g = c.benchmark_group("shuffle");
    g.throughput(Throughput::Elements(RECORDS));
    g.sample_size(20);
    g.bench_function("write_plain_u64_i64", |b| {
        b.iter(|| {
            let mut mem = pool.reservation();
            let info = write_plain(records(), PARTITIONS, partition_of, &mut mem, &cfg, &data).expect("write");
            black_box(info.bytes_written)
        })
    });
    let sum = FnAggregator::new(|v: i64| v, |c: i64, v: i64| c + v, |a: i64, b: i64| a + b);
    g.bench_function("write_combined_sum_u64_i64", |b| {
        b.iter(|| {
            let mut mem = pool.reservation();
            let info = write_combined(records(), PARTITIONS, partition_of, &sum, &mut mem, &cfg, &data).expect("write");
            black_box(info.records_written)
        })
    });

    // Read side: every segment of one plain map output.
    let mut mem = pool.reservation();
    write_plain(records(), PARTITIONS, partition_of, &mut mem, &cfg, &data).expect("write");
    let segments: Vec<Vec<u8>> = (0..PARTITIONS).map(|p| read_segment(&data, p).expect("read segment")).collect();
    g.bench_function("read_segments_u64_i64", |b| {
        b.iter_batched(
            || segments.clone(),
            |segs| {
                let mut n = 0u64;
                for seg in segs {
                    for rec in SegmentReader::<u64, i64>::new(seg) {
                        let (k, v) = rec.expect("valid segment");
                        n = n.wrapping_add(k ^ v as u64);
                    }
                }
                black_box(n)
            },
            BatchSize::LargeInput,
        )
    });

    // Reduce side of a group-by, shaped like one agg reduce task: 1 M records
    // over 62,500 keys (16 values per key; the table and the per-key vectors
    // outgrow L2), decoded from a segment as a reduce task does.
    let group = FnAggregator::new(
        |v: i64| vec![v],
        |mut c: Vec<i64>, v: i64| {
            c.push(v);
            c
        },
        |mut a: Vec<i64>, b: Vec<i64>| {
            a.extend(b);
            a
        },
    );
    const GROUP_RECORDS: u64 = 1_000_000;
    let wide = |i: u64| Ok::<_, Infallible>((ember_bench::gen::key_of(i, 62_500), i as i64));
    let mut mem = pool.reservation();
    write_plain((0..GROUP_RECORDS).map(wide), 1, |_: &u64| 0, &mut mem, &cfg, &data).expect("write");
    let segment = read_segment(&data, 0).expect("read segment");
    g.throughput(Throughput::Elements(GROUP_RECORDS));
    g.sample_size(10);
    g.bench_function("group_by_key_from_segment_1m_records_62k_keys", |b| {
        b.iter_batched(
            || segment.clone(),
            |seg| {
                let mut mem = pool.reservation();
                let groups =
                    combine_by_key(SegmentReader::<u64, i64>::new(seg), &group, &mut mem, &cfg.spill_dir, &cfg)
                        .expect("combine");
                black_box(groups.count())
            },
            BatchSize::LargeInput,
        )
    });

    // Map side of wordcount: the words of a 32 MiB slice of the generator's
    // text (Zipf s=1 over 100,000 words), each an owned `String` as a user's
    // `flat_map` makes them, summed into 32 partitions.
    let text = dir.path().join("words.txt");
    ember_bench::gen::gen_words(&text, 32 << 20, 100_000, 1.0, 42).expect("generate words");
    let words: Vec<String> =
        std::fs::read_to_string(&text).expect("read words").split_whitespace().map(String::from).collect();
    let count = FnAggregator::new(|v: u64| v, |c: u64, v: u64| c + v, |a: u64, b: u64| a + b);
    let word_partition = |w: &String| (ember_shuffle::key_hash(w) % 32) as usize;
    g.throughput(Throughput::Elements(words.len() as u64));
    g.bench_function("write_combined_zipf_words_100k", |b| {
        b.iter_batched(
            || words.iter().map(|w| Ok::<_, Infallible>((w.clone(), 1u64))).collect::<Vec<_>>(),
            |recs| {
                let mut mem = pool.reservation();
                let info =
                    write_combined(recs.into_iter(), 32, word_partition, &count, &mut mem, &cfg, &data).expect("write");
                black_box(info.records_written)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_shuffle);
criterion_main!(benches);
