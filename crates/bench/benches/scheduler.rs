//! Scheduler throughput through the public API on `local[2]`: one job of
//! 2,000 trivial tasks (`parallelize(0..2000, 2000).count()`), and the
//! latency of a 2-task job.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ember::prelude::*;
use std::hint::black_box;

/// The allocator `ember-bench` runs with, so that allocation costs here what
/// it costs in the workloads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TASKS: usize = 2_000;

fn bench_scheduler(c: &mut Criterion) {
    let sc =
        Context::builder().master("local[2]").set("ember.ui.showConsoleProgress", "false").build().expect("context");
    let mut g = c.benchmark_group("scheduler");
    g.sample_size(20);
    g.throughput(Throughput::Elements(TASKS as u64));
    g.bench_function("job_of_2000_tiny_tasks", |b| {
        b.iter(|| {
            let n = sc.parallelize((0..TASKS as u32).collect::<Vec<_>>(), TASKS).count().expect("count");
            assert_eq!(n, TASKS as u64);
            black_box(n)
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("tiny_job_2_tasks", |b| {
        b.iter(|| black_box(sc.parallelize((1..=10u32).collect::<Vec<_>>(), 2).count().expect("count")))
    });
    g.finish();
    sc.stop();
}

criterion_group!(benches, bench_scheduler);
criterion_main!(benches);
