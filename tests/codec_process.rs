//! The task codec across a real process boundary: a stage is encoded here,
//! then decoded and run by a child process of this same test binary (with
//! its own address-space layout), and the results must match a local run.
//! Also: blobs from another executable, or malformed ones, are refused.

use ember::prelude::*;
use ember_common::{ExecutorId, StageId, TaskId};
use ember_core::codec::{decode_stage, encode_stage, StageBlob};
use ember_core::sinks::ResultSink;
use ember_core::task::{StageAttempt, StagePayload, TaskDescription, TaskOutput, TaskState};
use ember_executor::{Executor, ExecutorBackend, ExecutorConfig};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

const CHILD_DIR: &str = "EMBER_CODEC_TEST_CHILD_DIR";

fn pipeline(sc: &Context) -> Rdd<(u64, String)> {
    sc.parallelize((0..200u64).collect::<Vec<_>>(), 4)
        .map(|x| x * 3)
        .filter(|x| x % 2 == 0)
        .map_with("v".to_string(), |prefix, x| (x, format!("{prefix}{x}")))
}

fn collect_sink(rdd: &Rdd<(u64, String)>) -> StageBlob {
    let sink = ResultSink::new(rdd.node(), (), |_: &(), _: &TaskContext, it: BoxIter<(u64, String)>| {
        Ok(it.collect::<Vec<_>>())
    });
    encode_stage(Arc::new(sink)).unwrap()
}

struct Capture(Mutex<mpsc::Sender<(TaskId, TaskState)>>);

impl ExecutorBackend for Capture {
    fn status_update(&self, task_id: TaskId, state: TaskState) {
        let _ = self.0.lock().unwrap().send((task_id, state));
    }
}

/// Runs only inside the child: decodes the payload written by the parent,
/// runs every partition on a fresh executor, writes the raw results back.
#[test]
fn child_process_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let dir = std::path::PathBuf::from(dir);
    let bytes = std::fs::read(dir.join("payload")).unwrap();
    let hash: [u8; 32] = std::fs::read(dir.join("hash")).unwrap().try_into().unwrap();
    let (tx, rx) = mpsc::channel();
    let exec = Executor::new(
        ExecutorConfig {
            id: ExecutorId::from("child"),
            cores: 2,
            dir: dir.join("executor"),
            memory_budget: 64 << 20,
            compress: true,
            block_size: 64 << 10,
            block_address: String::new(),
            spin_wait: std::time::Duration::ZERO,
        },
        Arc::new(Capture(Mutex::new(tx))),
        None,
        None,
    )
    .unwrap();
    let payload = Arc::new(StagePayload { hash, bytes });
    for p in 0..4usize {
        let task = TaskDescription {
            task_id: TaskId(p as u64),
            stage_id: StageId(0),
            stage_attempt: 0,
            partition: p,
            attempt: 0,
            payload_hash: hash,
        };
        exec.launch_task(task, (p == 0).then(|| payload.clone()));
    }
    let mut results: Vec<(u64, Vec<u8>)> = Vec::new();
    while results.len() < 4 {
        match rx.recv().unwrap() {
            (_, TaskState::Running) => {}
            (t, TaskState::Finished { output: TaskOutput::Result(bytes), .. }) => results.push((t.0, bytes)),
            (t, other) => panic!("task {t:?} did not finish: {other:?}"),
        }
    }
    results.sort();
    std::fs::write(dir.join("results"), postcard::to_allocvec(&results).unwrap()).unwrap();
}

#[test]
fn a_stage_encoded_here_runs_in_another_process() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let sc = Context::new("local[2]").unwrap();
    let rdd = pipeline(&sc);
    let blob = collect_sink(&rdd);
    let payload = StagePayload::encode(&StageAttempt { blob, shuffle_inputs: vec![], cached_blocks: vec![] }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("payload"), &payload.bytes).unwrap();
    std::fs::write(dir.path().join("hash"), payload.hash).unwrap();

    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_process_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "child failed: {status}");

    let raw: Vec<(u64, Vec<u8>)> = postcard::from_bytes(&std::fs::read(dir.path().join("results")).unwrap()).unwrap();
    let remote: Vec<Vec<(u64, String)>> = raw.iter().map(|(_, b)| postcard::from_bytes(b).unwrap()).collect();
    let local = rdd.glom().collect().unwrap();
    assert_eq!(remote, local);
    assert_eq!(remote.concat().len(), 100);
    assert_eq!(remote[1][0].1, format!("v{}", remote[1][0].0));
}

#[test]
fn blobs_from_another_executable_are_refused() {
    let sc = Context::new("local[1]").unwrap();
    let mut blob = collect_sink(&pipeline(&sc));
    assert!(decode_stage(&blob).is_ok());
    blob.exe_hash[0] ^= 1;
    let err = decode_stage(&blob).expect_err("refused").to_string();
    assert!(err.contains("different executable"), "{err}");
}

#[test]
fn malformed_blobs_are_refused_before_any_decoder_runs() {
    let sc = Context::new("local[1]").unwrap();
    let good = collect_sink(&pipeline(&sc));
    // A node that refers to a later node.
    let mut forward = good.clone();
    forward.nodes[0].parents = vec![5];
    assert!(decode_stage(&forward).err().unwrap().to_string().contains("refers forward"));
    // Another codec version.
    let mut version = good.clone();
    version.version += 1;
    assert!(decode_stage(&version).err().unwrap().to_string().contains("codec version"));
    // Truncated bytes.
    let bytes = good.to_bytes().unwrap();
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(StageBlob::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // Payload bytes that do not match the announced hash.
    let payload =
        StagePayload::encode(&StageAttempt { blob: good, shuffle_inputs: vec![], cached_blocks: vec![] }).unwrap();
    let mut wrong = payload.hash;
    wrong[3] ^= 0xff;
    assert!(StagePayload::decode(&payload.bytes, &wrong).is_err());
}
