//! Task encode/decode: `encode_stage` / `decode_stage` (and the blob's byte
//! form) of a realistic result stage — the reduce side of one pagerank
//! iteration: cogroup of two shuffles, join expansion, `values`,
//! `flat_map`, ending in a `count` result sink — and of the smallest
//! stage there is, the tiny workload's `parallelize(1..=10, 2).count()`,
//! whose encoding and decoding every tiny job pays.

use criterion::{criterion_group, criterion_main, Criterion};
use ember::prelude::*;
use ember_core::codec::{decode_stage, encode_stage, StageBlob};
use ember_core::sinks::ResultSink;
use ember_core::task::{StageAttempt, StagePayload};
use std::hint::black_box;
use std::sync::Arc;

/// The allocator `ember-bench` runs with, so that allocation costs here what
/// it costs in the workloads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn contribs(sc: &Context) -> Rdd<(u64, f64)> {
    let links = sc
        .range(0, 10_000, 1, 16)
        .expect("range")
        .map_with(1_000u64, |m, e| (ember_bench::gen::key_of(e as u64, *m), e as u64))
        .group_by_key(16);
    let ranks = links.map_values(|_| 1.0f64);
    links.join(&ranks, 16).values().flat_map(|(urls, rank): (Vec<u64>, f64)| {
        let share = rank / urls.len() as f64;
        urls.into_iter().map(move |u| (u, share)).collect::<Vec<_>>()
    })
}

fn encode(rdd: &Rdd<(u64, f64)>) -> StageBlob {
    let sink =
        ResultSink::new(rdd.node(), (), |_: &(), _: &TaskContext, it: BoxIter<(u64, f64)>| Ok(it.count() as u64));
    encode_stage(Arc::new(sink)).expect("encode")
}

/// The tiny workload's stage as the driver ships it: encoded and hashed.
fn tiny_payload(rdd: &Rdd<i32>) -> StagePayload {
    let sink = ResultSink::new(rdd.node(), (), |_: &(), _: &TaskContext, it: BoxIter<i32>| Ok(it.count() as u64));
    let blob = encode_stage(Arc::new(sink)).expect("encode");
    StagePayload::encode(&StageAttempt { blob, shuffle_inputs: Vec::new(), cached_blocks: Vec::new() })
        .expect("payload")
}

fn bench_codec(c: &mut Criterion) {
    let sc =
        Context::builder().master("local[2]").set("ember.ui.showConsoleProgress", "false").build().expect("context");
    let rdd = contribs(&sc);
    let blob = encode(&rdd);
    let bytes = blob.to_bytes().expect("bytes");
    let mut g = c.benchmark_group("codec");
    g.bench_function("encode_stage_pagerank_reduce", |b| b.iter(|| black_box(encode(&rdd))));
    g.bench_function("encode_stage_to_bytes", |b| b.iter(|| black_box(encode(&rdd).to_bytes().expect("bytes"))));
    g.bench_function("decode_stage_pagerank_reduce", |b| b.iter(|| black_box(decode_stage(&blob).is_ok())));
    g.bench_function("from_bytes_and_decode_stage", |b| {
        b.iter(|| {
            let blob = StageBlob::from_bytes(&bytes).expect("blob");
            black_box(decode_stage(&blob).is_ok())
        })
    });
    let tiny = sc.parallelize((1..=10i32).collect::<Vec<_>>(), 2);
    let payload = tiny_payload(&tiny);
    g.bench_function("encode_stage_tiny_count", |b| b.iter(|| black_box(tiny_payload(&tiny))));
    g.bench_function("decode_stage_tiny_count", |b| {
        b.iter(|| {
            let attempt = StagePayload::decode(&payload.bytes, &payload.hash).expect("payload");
            black_box(decode_stage(&attempt.blob).is_ok())
        })
    });
    g.finish();
    sc.stop();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
