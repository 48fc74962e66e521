//! `run` with several workloads gives each its own process, as Spark's
//! harness gives each workload its own JVM: no workload inherits the memory
//! or the page faults of the ones before it.

use std::collections::BTreeSet;
use std::process::Command;

fn run(workloads: &str) -> (bool, String) {
    let data = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_ember-bench"))
        .args(["run", workloads, "--warmup", "0", "--runs", "1", "--master", "local[2]", "--data"])
        .arg(data.path())
        .arg("--out")
        .arg(data.path().join("out"))
        .output()
        .expect("run ember-bench");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `pid=` of each run's `INFO engine=` line.
fn pids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("INFO engine="))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("pid=")).map(str::to_string))
        .collect()
}

#[test]
fn each_workload_of_a_list_runs_in_its_own_process() {
    let (ok, stdout) = run("tiny,sched");
    assert!(ok, "ember-bench failed:\n{stdout}");
    let pids = pids(&stdout);
    assert_eq!(pids.len(), 2, "one engine start per workload:\n{stdout}");
    assert_eq!(pids.iter().collect::<BTreeSet<_>>().len(), 2, "two processes:\n{stdout}");
    for w in ["tiny", "sched"] {
        assert!(stdout.contains(&format!("SUMMARY {w} ")), "{w} reported nothing:\n{stdout}");
    }
    assert_eq!(stdout.matches("valid=true").count(), 4, "two metrics each, all valid:\n{stdout}");
    assert!(!stdout.contains("valid=false"), "{stdout}");
}
