//! Executor processes run with the program's allocator fully initialized.
//!
//! A local-cluster executor is the program's own binary, turned into an
//! executor by a hook that runs before `main`. When that hook ran the
//! executor straight away, the constructors linked after it never ran in
//! executors. In `ember-bench` that was mimalloc's: it stayed in its
//! pre-initialization mode, serving every large allocation with its own
//! `mmap` and `munmap` (12,749 and 18,495 calls in one local-cluster
//! pagerank run, against 122 and 74), and local-cluster pagerank ran 40%
//! slower. Whether it happens depends on link order, so this test checks the
//! `ember-bench` binary itself, whose link order showed it: with
//! `MIMALLOC_VERBOSE=1` every process whose mimalloc initialized says so.

use std::process::Command;

#[test]
fn every_executor_of_ember_bench_initializes_its_allocator() {
    let data = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_ember-bench"))
        .args(["run", "tiny", "--warmup", "0", "--runs", "1", "--master", "local-cluster[2,1,1024]", "--data"])
        .arg(data.path())
        .arg("--out")
        .arg(data.path().join("out"))
        .env("MIMALLOC_VERBOSE", "1")
        .output()
        .expect("run ember-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ember-bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("valid=true"), "tiny did not validate:\n{stdout}");
    let inits = stderr.matches("mimalloc: process init").count();
    assert_eq!(inits, 3, "the driver and both executors must initialize mimalloc; stderr:\n{stderr}");
}
