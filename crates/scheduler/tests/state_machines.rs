//! The DAG and task schedulers driven directly, with hand-built lineage and
//! a fake backend: no sockets, no threads, no sleeps, no clocks.

use ember_common::RddId;
use ember_common::{ExecutorId, JobId, ShuffleId, StageId, TaskFailure, TaskId};
use ember_core::codec::EncodableNode;
use ember_core::metrics::TaskMetricsSnapshot;
use ember_core::partitioner::{HashPartitioner, Partitioner};
use ember_core::rdd::{ParallelCollectionRdd, RddNode, ShuffledRdd};
use ember_core::shuffle_dep::{ShuffleDependency, ShuffleWriteSink, SinkNode};
use ember_core::task::{MapStatus, StagePayload, TaskOutput, TaskState};
use ember_core::{Rdd, RddBase};
use ember_scheduler::dag::{DagAction, DagEvent, DagScheduler, TaskSetSpec};
use ember_scheduler::task_scheduler::{TaskScheduler, TaskSet, TsOutput};
use std::sync::Arc;

/// parallelize(3 partitions) -> shuffle(2 partitions); returns (reduce rdd, result sink).
fn lineage() -> (Arc<dyn RddBase>, Arc<dyn EncodableNode>) {
    let map_rdd: Arc<dyn Rdd<(u32, u32)>> =
        Arc::new(ParallelCollectionRdd::new(RddId(0), vec![(1, 1), (2, 2), (3, 3)], 3));
    let p = HashPartitioner::new(2);
    let sink = Arc::new(ShuffleWriteSink::new(ShuffleId(0), map_rdd.clone(), p));
    let map_base: Arc<dyn RddBase> = map_rdd.clone();
    let dep = Arc::new(ShuffleDependency {
        shuffle_id: ShuffleId(0),
        rdd: map_base.clone(),
        num_reduce_partitions: 2,
        sink: Arc::new(SinkNode::new(sink, map_base)),
    });
    let reduce: Arc<dyn RddBase> = Arc::new(ShuffledRdd::<u32, u32>::new(RddId(1), dep, Partitioner::<u32>::desc(&p)));
    // Any node works as the job's sink for the DAG scheduler, which never encodes.
    let sink: Arc<dyn EncodableNode> = Arc::new(RddNode(reduce.clone()));
    (reduce, sink)
}

fn status(exec: &str) -> MapStatus {
    MapStatus { executor: ExecutorId::from(exec), address: String::new(), partition_lengths: vec![1, 1] }
}

fn task_sets(actions: &[DagAction]) -> Vec<&TaskSetSpec> {
    actions.iter().filter_map(|a| if let DagAction::SubmitTaskSet(s) = a { Some(s) } else { None }).collect()
}

fn submit(dag: &mut DagScheduler, job: u64) -> Vec<DagAction> {
    let (rdd, sink) = lineage();
    dag.handle(DagEvent::JobSubmitted { job_id: JobId(job), rdd, sink, partitions: vec![0, 1] }, 0)
}

fn finish_maps(dag: &mut DagScheduler, stage: StageId, attempt: u32, parts: &[usize], exec: &str) -> Vec<DagAction> {
    let mut out = Vec::new();
    for p in parts {
        out.extend(dag.handle(
            DagEvent::TaskSucceeded {
                stage_id: stage,
                stage_attempt: attempt,
                partition: *p,
                output: TaskOutput::MapStatus(status(exec)),
            },
            0,
        ));
    }
    out
}

#[test]
fn missing_parents_run_first_then_the_result_stage() {
    let mut dag = DagScheduler::new(4);
    let a = submit(&mut dag, 0);
    let sets = task_sets(&a);
    assert_eq!(sets.len(), 1, "only the map stage is runnable");
    let map_stage = sets[0].stage_id;
    assert_eq!(sets[0].partitions, vec![0, 1, 2]);
    let a = finish_maps(&mut dag, map_stage, 0, &[0, 1], "e1");
    assert!(task_sets(&a).is_empty(), "result stage waits for every map output");
    let a = finish_maps(&mut dag, map_stage, 0, &[2], "e1");
    let sets = task_sets(&a);
    assert_eq!(sets.len(), 1);
    let result_stage = sets[0].stage_id;
    // As in Spark, parents are created first: the map stage gets id 0 and
    // the job's result stage the next one.
    assert_eq!((map_stage, result_stage), (StageId(0), StageId(1)));
    assert_eq!(sets[0].shuffle_inputs.len(), 1);
    assert_eq!(sets[0].shuffle_inputs[0].maps.len(), 3);
    let mut done = Vec::new();
    for p in 0..2 {
        done.extend(dag.handle(
            DagEvent::TaskSucceeded {
                stage_id: result_stage,
                stage_attempt: 0,
                partition: p,
                output: TaskOutput::Result(vec![p as u8]),
            },
            0,
        ));
    }
    assert_eq!(done.iter().filter(|a| matches!(a, DagAction::TaskResult { .. })).count(), 2);
    assert!(done.iter().any(|a| matches!(a, DagAction::JobSucceeded { job_id } if *job_id == JobId(0))));
    assert_eq!(dag.active_jobs(), 0);
    assert_eq!(dag.num_stages(), 0, "stages are forgotten with their last job");
    assert!(dag.map_outputs.is_available(ShuffleId(0)), "map outputs outlive the job");
}

#[test]
fn a_later_job_skips_an_available_map_stage() {
    let mut dag = DagScheduler::new(4);
    let a = submit(&mut dag, 0);
    let map_stage = task_sets(&a)[0].stage_id;
    let a = finish_maps(&mut dag, map_stage, 0, &[0, 1, 2], "e1");
    let result_stage = task_sets(&a)[0].stage_id;
    for p in 0..2 {
        dag.handle(
            DagEvent::TaskSucceeded {
                stage_id: result_stage,
                stage_attempt: 0,
                partition: p,
                output: TaskOutput::Result(vec![]),
            },
            0,
        );
    }
    let a = submit(&mut dag, 1);
    let sets = task_sets(&a);
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].partitions, vec![0, 1], "straight to the result stage");
    assert_eq!(sets[0].shuffle_inputs[0].maps.len(), 3);
}

#[test]
fn a_fetch_failure_recomputes_only_the_lost_map_output_once() {
    let mut dag = DagScheduler::new(4);
    let a = submit(&mut dag, 0);
    let map_stage = task_sets(&a)[0].stage_id;
    let a = finish_maps(&mut dag, map_stage, 0, &[0, 1, 2], "e1");
    let result_stage = task_sets(&a)[0].stage_id;
    let fail = |dag: &mut DagScheduler, attempt| {
        dag.handle(
            DagEvent::FetchFailed {
                stage_id: result_stage,
                stage_attempt: attempt,
                shuffle_id: ShuffleId(0),
                map_index: 1,
                message: "gone".into(),
            },
            0,
        )
    };
    let a = fail(&mut dag, 0);
    assert!(a.iter().any(
        |x| matches!(x, DagAction::CancelTaskSet { stage_id, stage_attempt: 0, .. } if *stage_id == result_stage)
    ));
    let sets = task_sets(&a);
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].stage_id, map_stage);
    assert_eq!(sets[0].stage_attempt, 1);
    assert_eq!(sets[0].partitions, vec![1], "only the lost map partition reruns");
    // A late failure from the same (already failed) attempt changes nothing.
    assert!(task_sets(&fail(&mut dag, 0)).is_empty());
    // A late success from the old map attempt is credited but does not finish attempt 1.
    let a = finish_maps(&mut dag, map_stage, 1, &[1], "e2");
    let sets = task_sets(&a);
    assert_eq!(sets.len(), 1);
    assert_eq!((sets[0].stage_id, sets[0].stage_attempt), (result_stage, 1));
    assert_eq!(sets[0].shuffle_inputs[0].maps[1].executor, ExecutorId::from("e2"));
}

#[test]
fn consecutive_fetch_failures_abort_the_job() {
    let mut dag = DagScheduler::new(2);
    let a = submit(&mut dag, 0);
    let map_stage = task_sets(&a)[0].stage_id;
    let a = finish_maps(&mut dag, map_stage, 0, &[0, 1, 2], "e1");
    let result_stage = task_sets(&a)[0].stage_id;
    let a = dag.handle(
        DagEvent::FetchFailed {
            stage_id: result_stage,
            stage_attempt: 0,
            shuffle_id: ShuffleId(0),
            map_index: 0,
            message: "x".into(),
        },
        0,
    );
    assert_eq!(task_sets(&a).len(), 1);
    let a = finish_maps(&mut dag, map_stage, 1, &[0], "e1");
    assert_eq!(task_sets(&a)[0].stage_attempt, 1);
    let a = dag.handle(
        DagEvent::FetchFailed {
            stage_id: result_stage,
            stage_attempt: 1,
            shuffle_id: ShuffleId(0),
            map_index: 0,
            message: "x".into(),
        },
        0,
    );
    let failed =
        a.iter().find_map(|x| if let DagAction::JobFailed { error, .. } = x { Some(error.to_string()) } else { None });
    let msg = failed.expect("job aborted");
    assert!(msg.contains("maximum allowable number of times: 2"), "{msg}");
}

#[test]
fn a_task_set_failure_fails_the_job_with_its_reason() {
    let mut dag = DagScheduler::new(4);
    let a = submit(&mut dag, 0);
    let map_stage = task_sets(&a)[0].stage_id;
    let a = dag.handle(
        DagEvent::TaskSetFailed { stage_id: map_stage, stage_attempt: 0, reason: "Task 1 failed 4 times: boom".into() },
        0,
    );
    let msg = a
        .iter()
        .find_map(|x| if let DagAction::JobFailed { error, .. } = x { Some(error.to_string()) } else { None })
        .unwrap();
    assert!(msg.contains("Job aborted due to stage failure: Task 1 failed 4 times: boom"), "{msg}");
    assert_eq!(dag.active_jobs(), 0);
}

#[test]
fn cancelling_a_job_fails_it_and_cancels_its_running_stages() {
    let mut dag = DagScheduler::new(4);
    let a = submit(&mut dag, 0);
    let map_stage = task_sets(&a)[0].stage_id;
    let a = dag.handle(DagEvent::JobCancelled { job_id: JobId(0), reason: "user".into() }, 0);
    assert!(a
        .iter()
        .any(|x| matches!(x, DagAction::CancelTaskSet { stage_id, kill_running: true, .. } if *stage_id == map_stage)));
    assert!(a.iter().any(|x| matches!(x, DagAction::JobFailed { error: ember_common::Error::Cancelled { .. }, .. })));
}

fn payload() -> Arc<StagePayload> {
    Arc::new(StagePayload { hash: [7; 32], bytes: vec![1, 2, 3] })
}

/// Attempt 0 of stage 0 of job 0, over `partitions`.
fn stage_zero(partitions: Vec<usize>) -> TaskSet {
    TaskSet {
        stage_id: StageId(0),
        stage_attempt: 0,
        job_id: JobId(0),
        partitions,
        preferred: Vec::new(),
        payload: payload(),
        shape: 0,
    }
}

fn failed(msg: &str) -> TaskState {
    TaskState::Failed { failure: TaskFailure::Panic { message: msg.into() }, metrics: TaskMetricsSnapshot::default() }
}

#[test]
fn offers_fill_free_cores_and_ship_each_payload_once_per_executor() {
    let mut ts = TaskScheduler::new(4);
    ts.add_executor(ExecutorId::from("a"), 2);
    ts.add_executor(ExecutorId::from("b"), 1);
    ts.submit(stage_zero((0..5).collect()), 0);
    let (launches, events) = ts.resource_offers(0);
    assert_eq!(launches.len(), 3, "three free cores");
    assert_eq!(events.len(), 3);
    assert_eq!(launches.iter().filter(|l| l.payload.is_some()).count(), 2, "one payload per executor");
    assert_eq!(ts.total_free_cores(), 0);
    assert!(ts.resource_offers(0).0.is_empty());
    let done = TaskState::Finished { output: TaskOutput::Result(vec![]), metrics: TaskMetricsSnapshot::default() };
    ts.status_update(launches[0].task.task_id, done, 0);
    let (more, _) = ts.resource_offers(0);
    assert_eq!(more.len(), 1);
    assert!(more[0].payload.is_none(), "the executor already has this stage");
}

#[test]
fn a_payload_shared_by_two_live_sets_is_released_only_after_both() {
    let mut ts = TaskScheduler::new(4);
    ts.add_executor(ExecutorId::from("a"), 2);
    let mut second = stage_zero(vec![0]);
    (second.stage_id, second.job_id) = (StageId(1), JobId(1));
    ts.submit(stage_zero(vec![0]), 0);
    ts.submit(second, 0);
    let (launches, _) = ts.resource_offers(0);
    assert_eq!(launches.len(), 2);
    assert_eq!(launches.iter().filter(|l| l.payload.is_some()).count(), 1, "the same payload goes once");
    let done = || TaskState::Finished { output: TaskOutput::Result(vec![]), metrics: TaskMetricsSnapshot::default() };
    let releases = |outs: &[TsOutput]| outs.iter().filter(|o| matches!(o, TsOutput::Release { .. })).count();
    let first = ts.status_update(launches[0].task.task_id, done(), 0);
    assert_eq!(releases(&first), 0, "the other set still runs on this payload");
    let last = ts.status_update(launches[1].task.task_id, done(), 0);
    assert_eq!(releases(&last), 1, "released once no set uses it");
}

#[test]
fn earlier_jobs_are_served_first() {
    let mut ts = TaskScheduler::new(4);
    ts.add_executor(ExecutorId::from("a"), 1);
    ts.submit(
        TaskSet {
            stage_id: StageId(5),
            stage_attempt: 0,
            job_id: JobId(2),
            partitions: vec![0],
            preferred: Vec::new(),
            payload: payload(),
            shape: 0,
        },
        0,
    );
    ts.submit(
        TaskSet {
            stage_id: StageId(9),
            stage_attempt: 0,
            job_id: JobId(1),
            partitions: vec![0],
            preferred: Vec::new(),
            payload: payload(),
            shape: 0,
        },
        0,
    );
    let (l, _) = ts.resource_offers(0);
    assert_eq!(l[0].task.stage_id, StageId(9));
}

#[test]
fn failed_tasks_retry_until_max_failures_then_abort() {
    let mut ts = TaskScheduler::new(3);
    ts.add_executor(ExecutorId::from("a"), 1);
    ts.submit(stage_zero(vec![4]), 0);
    let mut attempts = Vec::new();
    let mut abort = None;
    for _ in 0..5 {
        let (l, _) = ts.resource_offers(0);
        let Some(launch) = l.into_iter().next() else { break };
        attempts.push(launch.task.attempt);
        for o in ts.status_update(launch.task.task_id, failed("kaboom"), 0) {
            if let TsOutput::Dag(DagEvent::TaskSetFailed { reason, .. }) = o {
                abort = Some(reason);
            }
        }
    }
    assert_eq!(attempts, vec![0, 1, 2]);
    let reason = abort.expect("aborted");
    assert!(reason.contains("Task 4 in stage 0.0 failed 3 times") && reason.contains("kaboom"), "{reason}");
    assert_eq!(ts.num_running_tasks(), 0);
}

#[test]
fn fetch_failures_do_not_count_and_stop_the_set() {
    let mut ts = TaskScheduler::new(1);
    ts.add_executor(ExecutorId::from("a"), 2);
    ts.submit(
        TaskSet {
            stage_id: StageId(1),
            stage_attempt: 0,
            job_id: JobId(0),
            partitions: vec![0, 1, 2],
            preferred: Vec::new(),
            payload: payload(),
            shape: 0,
        },
        0,
    );
    let (l, _) = ts.resource_offers(0);
    let out = ts.status_update(
        l[0].task.task_id,
        TaskState::Failed {
            failure: TaskFailure::FetchFailed { shuffle_id: 0, map_index: 2, reduce_id: 0, message: "gone".into() },
            metrics: TaskMetricsSnapshot::default(),
        },
        0,
    );
    assert!(out.iter().any(|o| matches!(o, TsOutput::Dag(DagEvent::FetchFailed { map_index: 2, .. }))));
    assert!(!out.iter().any(|o| matches!(o, TsOutput::Dag(DagEvent::TaskSetFailed { .. }))));
    assert!(ts.resource_offers(0).0.is_empty(), "a zombie set launches nothing more");
}

#[test]
fn losing_an_executor_fails_its_tasks_and_they_run_elsewhere() {
    let mut ts = TaskScheduler::new(4);
    ts.add_executor(ExecutorId::from("a"), 1);
    ts.add_executor(ExecutorId::from("b"), 1);
    ts.submit(stage_zero(vec![0, 1]), 0);
    let (l, _) = ts.resource_offers(0);
    let on_a = l.iter().find(|x| x.executor == ExecutorId::from("a")).unwrap().task.clone();
    ts.remove_executor(&ExecutorId::from("a"), "killed", 0);
    let b_task = l.iter().find(|x| x.executor == ExecutorId::from("b")).unwrap().task.task_id;
    ts.status_update(
        b_task,
        TaskState::Finished { output: TaskOutput::Result(vec![]), metrics: Default::default() },
        0,
    );
    let (again, _) = ts.resource_offers(0);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].executor, ExecutorId::from("b"));
    assert_eq!((again[0].task.partition, again[0].task.attempt), (on_a.partition, 1));
    assert_ne!(again[0].task.task_id, TaskId(on_a.task_id.0));
}

/// A task that brings its executor down at once never gets to report
/// `Running`, yet it held the executor's core: each loss uses up one of its
/// attempts, so the set aborts instead of retrying for ever.
#[test]
fn a_task_that_kills_its_executor_before_reporting_running_uses_up_its_attempts() {
    let mut ts = TaskScheduler::new(2);
    ts.submit(stage_zero(vec![7]), 0);
    let mut abort = None;
    for round in 0..4 {
        let exec = ExecutorId::from(format!("e{round}").as_str());
        ts.add_executor(exec.clone(), 1);
        let (l, _) = ts.resource_offers(0);
        if l.is_empty() {
            break;
        }
        assert_eq!(l[0].task.attempt, round);
        for o in ts.remove_executor(&exec, "connection closed", 0) {
            if let TsOutput::Dag(DagEvent::TaskSetFailed { reason, .. }) = o {
                abort = Some(reason);
            }
        }
    }
    let reason = abort.expect("aborted after two losses");
    assert!(reason.contains("failed 2 times") && reason.contains("lost"), "{reason}");
}

/// Two map stages feed one result stage (a join). The first map stage
/// finishes, then loses an output with its executor while the second still
/// runs; when the second finishes, the first must be resubmitted (this used
/// to hang: nothing was running and the result stage waited forever).
#[test]
fn a_finished_parent_that_loses_outputs_is_resubmitted() {
    let make_side = |rdd_id: u64, shuffle: u64| -> Arc<dyn ember_core::shuffle_dep::ShuffleDependencyBase> {
        let map_rdd: Arc<dyn Rdd<(u32, u32)>> =
            Arc::new(ParallelCollectionRdd::new(RddId(rdd_id), vec![(1, 1), (2, 2)], 2));
        let p = HashPartitioner::new(2);
        let sink = Arc::new(ShuffleWriteSink::new(ShuffleId(shuffle), map_rdd.clone(), p));
        let base: Arc<dyn RddBase> = map_rdd;
        Arc::new(ShuffleDependency {
            shuffle_id: ShuffleId(shuffle),
            rdd: base.clone(),
            num_reduce_partitions: 2,
            sink: Arc::new(SinkNode::new(sink, base)),
        })
    };
    let p = HashPartitioner::new(2);
    let left: Arc<dyn Rdd<(u32, u32)>> =
        Arc::new(ShuffledRdd::<u32, u32>::new(RddId(10), make_side(0, 0), Partitioner::<u32>::desc(&p)));
    let right: Arc<dyn Rdd<(u32, u32)>> =
        Arc::new(ShuffledRdd::<u32, u32>::new(RddId(11), make_side(1, 1), Partitioner::<u32>::desc(&p)));
    let cogrouped: Arc<dyn RddBase> =
        Arc::new(ember_core::rdd::CoGroupedRdd::new(RddId(12), left, right, Partitioner::<u32>::desc(&p)));
    let mut dag = DagScheduler::new(4);
    let a = dag.handle(
        DagEvent::JobSubmitted {
            job_id: JobId(0),
            rdd: cogrouped.clone(),
            sink: Arc::new(RddNode(cogrouped)),
            partitions: vec![0, 1],
        },
        0,
    );
    let sets = task_sets(&a);
    assert_eq!(sets.len(), 2, "both map stages run");
    let (m1, m2) = (sets[0].stage_id, sets[1].stage_id);
    finish_maps(&mut dag, m1, 0, &[0], "dead");
    let a = finish_maps(&mut dag, m1, 0, &[1], "alive");
    assert!(task_sets(&a).is_empty());
    // The executor holding m1's partition 0 dies while m2 is still running.
    let a = dag.handle(DagEvent::ExecutorLost { executor: ExecutorId::from("dead") }, 0);
    assert!(task_sets(&a).is_empty() || task_sets(&a).iter().all(|s| s.stage_id == m1));
    let mut resubmitted = task_sets(&a).iter().any(|s| s.stage_id == m1 && s.partitions == vec![0]);
    let a = finish_maps(&mut dag, m2, 0, &[0, 1], "alive");
    resubmitted |= task_sets(&a).iter().any(|s| s.stage_id == m1 && s.partitions == vec![0]);
    assert!(resubmitted, "the lost map output is recomputed");
}

fn finished_in(ms: u64) -> TaskState {
    finished_in_us(ms * 1000)
}

fn finished_in_us(us: u64) -> TaskState {
    TaskState::Finished {
        output: TaskOutput::Result(vec![]),
        metrics: TaskMetricsSnapshot { run_time_us: us, ..Default::default() },
    }
}

/// One executor "a" with one core, queue depth 4, and a 100-task set whose
/// first SHORT_STREAK tasks have run (one at a time) in under 1 ms.
fn one_core_after_a_short_streak(max_failures: u32) -> TaskScheduler {
    let mut ts = TaskScheduler::new(max_failures).with_short_task_queue(4);
    ts.add_executor(ExecutorId::from("a"), 1);
    ts.submit(stage_zero((0..100).collect()), 0);
    for _ in 0..ember_scheduler::task_scheduler::SHORT_STREAK {
        let (l, _) = ts.resource_offers(0);
        assert_eq!(l.len(), 1, "one task per core before the set is known to be short");
        ts.status_update(l[0].task.task_id, finished_in(0), 0);
    }
    ts
}

#[test]
fn short_tasks_queue_on_executors_and_a_long_one_stops_it() {
    let mut ts = one_core_after_a_short_streak(4);
    let (queued, _) = ts.resource_offers(0);
    assert_eq!(queued.len(), 4, "a core holds up to the queue depth of short tasks");
    assert!(ts.resource_offers(0).0.is_empty(), "never more than the depth in flight");
    // A task that takes a millisecond or more ends queueing for the set.
    ts.status_update(queued[0].task.task_id, finished_in(5), 0);
    assert!(ts.resource_offers(0).0.is_empty(), "three still in flight on the one core");
    for l in &queued[1..] {
        ts.status_update(l.task.task_id, finished_in(0), 0);
    }
    let (l, _) = ts.resource_offers(0);
    assert_eq!(l.len(), 1, "back to one per core until the streak builds again");
}

#[test]
fn without_a_queue_depth_short_tasks_stay_one_per_core() {
    let mut ts = TaskScheduler::new(4);
    ts.add_executor(ExecutorId::from("a"), 2);
    ts.submit(stage_zero((0..100).collect()), 0);
    for _ in 0..20 {
        let (l, _) = ts.resource_offers(0);
        assert_eq!(l.len(), 2);
        for x in l {
            ts.status_update(x.task.task_id, finished_in(0), 0);
        }
    }
}

/// Job `job`'s only set: attempt 0 of stage `job`, `n` tasks, of `shape`.
fn job_set(job: u64, n: usize, shape: u64) -> TaskSet {
    TaskSet {
        stage_id: StageId(job),
        stage_attempt: 0,
        job_id: JobId(job),
        partitions: (0..n).collect(),
        preferred: Vec::new(),
        payload: Arc::new(StagePayload { hash: [job as u8; 32], bytes: vec![1] }),
        shape,
    }
}

/// Submits job `job` (`n` tasks of `shape`), launches what the offers give,
/// finishes each task in `us` µs, and returns the executor of each launch.
fn run_job(ts: &mut TaskScheduler, job: u64, n: usize, shape: u64, us: u64) -> Vec<String> {
    ts.submit(job_set(job, n, shape), 0);
    let (launches, _) = ts.resource_offers(0);
    assert_eq!(launches.len(), n, "the whole set fits in one round of offers");
    for l in &launches {
        ts.status_update(l.task.task_id, finished_in_us(us), 0);
    }
    launches.iter().map(|l| l.executor.as_str().to_string()).collect()
}

#[test]
fn tiny_tasks_of_a_known_shape_are_packed_onto_one_executor() {
    let mut ts = two_single_core_executors().with_short_task_queue(256);
    // Unknown shape: one task per core, spread as in Spark.
    for job in 0..4 {
        assert_eq!(run_job(&mut ts, job, 2, 7, 3), ["a", "b"], "job {job}");
    }
    // Eight tiny tasks of shape 7 in a row: its sets now go to one executor.
    assert_eq!(run_job(&mut ts, 4, 2, 7, 3), ["a", "a"]);
    // Another shape is not affected.
    assert_eq!(run_job(&mut ts, 5, 2, 8, 3), ["a", "b"]);
    // One task of shape 7 that is not tiny ends it, until a streak builds again.
    assert_eq!(run_job(&mut ts, 6, 2, 7, 50), ["a", "a"]);
    for job in 7..11 {
        assert_eq!(run_job(&mut ts, job, 2, 7, 3), ["a", "b"], "job {job}");
    }
    assert_eq!(run_job(&mut ts, 11, 2, 7, 3), ["a", "a"]);
}

#[test]
fn a_packed_set_queues_at_most_one_task_behind_each_running_one() {
    let mut ts = two_single_core_executors().with_short_task_queue(256);
    for job in 0..4 {
        run_job(&mut ts, job, 2, 7, 3);
    }
    ts.submit(job_set(4, 6, 7), 0);
    let (launches, _) = ts.resource_offers(0);
    let on: Vec<String> = launches.iter().map(|l| l.executor.as_str().to_string()).collect();
    assert_eq!(on, ["a", "a", "b", "b"], "two per core, the first executor filled first");
    assert!(ts.resource_offers(0).0.is_empty(), "the other two wait for a free place");
    // With queueing turned off, a packed set still takes one task per core.
    let mut ts = two_single_core_executors();
    for job in 0..4 {
        run_job(&mut ts, job, 2, 7, 3);
    }
    assert_eq!(run_job(&mut ts, 4, 2, 7, 3), ["a", "b"]);
}

/// Of the tasks in flight on a lost executor, the one launched first held
/// its core and is charged an attempt (it may have brought the executor
/// down before its `Running` left); those queued behind it never ran there
/// and keep their attempts. A task that reported `Running` is charged too.
#[test]
fn losing_an_executor_costs_an_attempt_only_to_tasks_that_had_started() {
    let mut ts = one_core_after_a_short_streak(2);
    let (queued, _) = ts.resource_offers(0);
    assert_eq!(queued.len(), 4);
    // The third had started and said so.
    ts.status_update(queued[2].task.task_id, TaskState::Running, 0);
    let out = ts.remove_executor(&ExecutorId::from("a"), "gone", 0);
    assert!(!out.iter().any(|o| matches!(o, TsOutput::Dag(DagEvent::TaskSetFailed { .. }))));
    let ends: Vec<(TaskId, String)> = out
        .into_iter()
        .filter_map(|o| match o {
            TsOutput::Event(ember_scheduler::ListenerEvent::TaskEnd { task_id, failure: Some(f), .. }) => {
                Some((task_id, f))
            }
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 4);
    let charged = [queued[0].task.task_id, queued[2].task.task_id];
    for (t, f) in &ends {
        assert_eq!(charged.contains(t), !f.contains("before the task started"), "{t}: {f}");
    }
}

fn with_preferences(preferred: &[&[&str]]) -> TaskSet {
    TaskSet {
        stage_id: StageId(0),
        stage_attempt: 0,
        job_id: JobId(0),
        partitions: (0..preferred.len()).collect(),
        preferred: preferred.iter().map(|p| p.iter().map(|e| ExecutorId::from(*e)).collect()).collect(),
        payload: payload(),
        shape: 0,
    }
}

fn finished() -> TaskState {
    TaskState::Finished { output: TaskOutput::Result(vec![]), metrics: TaskMetricsSnapshot::default() }
}

/// (executor, partition) of each launch.
fn placed(launches: &[ember_scheduler::task_scheduler::Launch]) -> Vec<(String, usize)> {
    launches.iter().map(|l| (l.executor.as_str().to_string(), l.task.partition)).collect()
}

/// A task scheduler with a 3 s locality wait and executors "a" and "b", one core each.
fn two_single_core_executors() -> TaskScheduler {
    let mut ts = TaskScheduler::new(4).with_locality_wait(3000);
    ts.add_executor(ExecutorId::from("a"), 1);
    ts.add_executor(ExecutorId::from("b"), 1);
    ts
}

#[test]
fn tasks_go_to_the_executors_caching_their_partitions() {
    let mut ts = two_single_core_executors();
    // Partitions 0 and 2 are cached on b, 1 and 3 on a: FIFO order alone would put 0 on a.
    ts.submit(with_preferences(&[&["b"], &["a"], &["b"], &["a"]]), 0);
    let (l, _) = ts.resource_offers(0);
    let mut got = placed(&l);
    got.sort();
    assert_eq!(got, vec![("a".into(), 1), ("b".into(), 0)]);
    for launch in &l {
        ts.status_update(launch.task.task_id, finished(), 10);
    }
    let mut got = placed(&ts.resource_offers(10).0);
    got.sort();
    assert_eq!(got, vec![("a".into(), 3), ("b".into(), 2)]);
}

#[test]
fn a_task_waits_for_its_executor_until_the_locality_wait_ends() {
    let mut ts = two_single_core_executors();
    ts.submit(with_preferences(&[&["b"], &["b"]]), 100);
    let (l, _) = ts.resource_offers(100);
    assert_eq!(placed(&l), vec![("b".into(), 0)], "a is free but not preferred");
    assert_eq!(ts.locality_deadline(100), Some(3100), "a free core and a task held back");
    // Nobody made offers when the wait ended: offers are due from then on,
    // until some are made after it.
    assert!(!ts.locality_expired(100, 3099));
    assert!(ts.locality_expired(100, 3100));
    assert!(ts.locality_expired(100, 5000));
    assert!(!ts.locality_expired(3100, 5000), "offers at 3100 saw it");
    assert_eq!(ts.locality_deadline(5000), None, "a past deadline is no deadline");
    assert!(ts.resource_offers(3099).0.is_empty());
    assert_eq!(placed(&ts.resource_offers(3100).0), vec![("a".into(), 1)], "after the wait, anywhere");
    assert_eq!(ts.locality_deadline(3100), None, "nothing held back");
}

#[test]
fn launching_where_preferred_restarts_the_wait_and_lost_executors_stop_being_preferred() {
    let mut ts = two_single_core_executors();
    ts.submit(with_preferences(&[&["b"], &["b"], &["b"]]), 0);
    let first = ts.resource_offers(0).0;
    assert_eq!(placed(&first), vec![("b".into(), 0)]);
    ts.status_update(first[0].task.task_id, finished(), 2000);
    // b takes the next one at 2000, which restarts the set's wait: a still gets nothing at 4000.
    assert_eq!(placed(&ts.resource_offers(2000).0), vec![("b".into(), 1)]);
    assert!(ts.resource_offers(4000).0.is_empty());
    // b is lost: task 1 (lost with it) and task 2 (never launched) no longer
    // prefer anything alive, and a runs them without waiting.
    ts.remove_executor(&ExecutorId::from("b"), "killed", 4001);
    let mut ran = Vec::new();
    for _ in 0..2 {
        let l = ts.resource_offers(4001).0;
        assert_eq!(l.len(), 1, "a runs one task at a time, at once");
        ran.extend(placed(&l));
        ts.status_update(l[0].task.task_id, finished(), 4001);
    }
    ran.sort();
    assert_eq!(ran, vec![("a".into(), 1), ("a".into(), 2)]);
}

#[test]
fn tasks_without_preferences_take_offers_a_preferring_set_passes_on() {
    let mut ts = two_single_core_executors();
    ts.submit(with_preferences(&[&["b"], &["b"]]), 0);
    ts.submit(
        TaskSet {
            stage_id: StageId(1),
            stage_attempt: 0,
            job_id: JobId(1),
            partitions: vec![0],
            preferred: Vec::new(),
            payload: payload(),
            shape: 0,
        },
        0,
    );
    let mut got: Vec<(String, u64)> =
        ts.resource_offers(0).0.iter().map(|l| (l.executor.as_str().to_string(), l.task.stage_id.0)).collect();
    got.sort();
    assert_eq!(got, vec![("a".into(), 1), ("b".into(), 0)], "the later job uses the core the first one declines");
}

/// parallelize(3) as RDD 10 -> persist as RDD 11, and a result sink over it.
fn persisted_over_three_partitions() -> (Arc<dyn RddBase>, Arc<dyn EncodableNode>) {
    let source: Arc<dyn Rdd<u32>> = Arc::new(ParallelCollectionRdd::new(RddId(10), vec![1, 2, 3], 3));
    let cached: Arc<dyn RddBase> = Arc::new(ember_core::rdd::PersistedRdd::new(RddId(11), source));
    let sink: Arc<dyn EncodableNode> = Arc::new(RddNode(cached.clone()));
    (cached, sink)
}

#[test]
fn the_dag_prefers_executors_that_reported_cached_partitions() {
    let (cached, sink) = persisted_over_three_partitions();
    let mut dag = DagScheduler::new(4);
    let job = |dag: &mut DagScheduler, id: u64| {
        let a = dag.handle(
            DagEvent::JobSubmitted {
                job_id: JobId(id),
                rdd: cached.clone(),
                sink: sink.clone(),
                partitions: vec![0, 1, 2],
            },
            0,
        );
        task_sets(&a)[0].preferred.clone()
    };
    assert!(job(&mut dag, 0).iter().all(|p| p.is_empty()), "nothing cached yet");
    dag.handle(DagEvent::BlocksCached { executor: ExecutorId::from("a"), blocks: vec![(11, 0), (11, 2)] }, 0);
    dag.handle(DagEvent::BlocksCached { executor: ExecutorId::from("b"), blocks: vec![(11, 1), (99, 0)] }, 0);
    let a = ExecutorId::from("a");
    let b = ExecutorId::from("b");
    assert_eq!(job(&mut dag, 1), vec![vec![a.clone()], vec![b.clone()], vec![a.clone()]]);
    dag.handle(DagEvent::ExecutorLost { executor: a.clone() }, 0);
    assert_eq!(job(&mut dag, 2), vec![vec![], vec![b.clone()], vec![]], "a's blocks are gone with it");
    dag.handle(DagEvent::RddUnpersisted { rdd: 11 }, 0);
    assert!(job(&mut dag, 3).iter().all(|p| p.is_empty()), "unpersisted");
    assert_eq!(dag.cached_partitions(), 1, "only the other RDD's block is left");
}

#[test]
fn task_sets_carry_where_out_of_process_executors_cache_their_partitions() {
    use ember_core::task::CachedBlockLocation;
    let (cached, sink) = persisted_over_three_partitions();
    let mut dag = DagScheduler::new(4);
    let job = |dag: &mut DagScheduler, id: u64, partitions: Vec<usize>| {
        let a = dag.handle(
            DagEvent::JobSubmitted { job_id: JobId(id), rdd: cached.clone(), sink: sink.clone(), partitions },
            0,
        );
        task_sets(&a)[0].cached_blocks.clone()
    };
    for (e, address) in [("a", "10.0.0.1:7"), ("b", "10.0.0.2:7"), ("driver", "")] {
        dag.handle(DagEvent::ExecutorAdded { executor: ExecutorId::from(e), block_address: address.into() }, 0);
    }
    dag.handle(DagEvent::BlocksCached { executor: ExecutorId::from("b"), blocks: vec![(11, 2), (11, 0)] }, 0);
    dag.handle(DagEvent::BlocksCached { executor: ExecutorId::from("a"), blocks: vec![(11, 2), (99, 0)] }, 0);
    dag.handle(DagEvent::BlocksCached { executor: ExecutorId::from("driver"), blocks: vec![(11, 1)] }, 0);
    let at = |partition: usize, e: &str, address: &str| CachedBlockLocation {
        rdd_id: 11,
        partition,
        executor: ExecutorId::from(e),
        address: address.into(),
    };
    assert_eq!(
        job(&mut dag, 0, vec![2, 1, 0]),
        vec![at(0, "b", "10.0.0.2:7"), at(2, "b", "10.0.0.2:7"), at(2, "a", "10.0.0.1:7")],
        "sorted by partition, holders in the order they cached; no in-process executor, no other RDD"
    );
    assert_eq!(job(&mut dag, 1, vec![1]), vec![], "only the tasks' partitions");
    dag.handle(DagEvent::ExecutorLost { executor: ExecutorId::from("b") }, 0);
    assert_eq!(job(&mut dag, 2, vec![0, 1, 2]), vec![at(2, "a", "10.0.0.1:7")], "b is gone");
}

#[test]
fn task_events_can_be_turned_off_without_changing_scheduling() {
    let run = |events_on: bool| {
        let mut ts = TaskScheduler::new(4);
        ts.set_task_events(events_on);
        ts.add_executor(ExecutorId::from("a"), 2);
        ts.submit(stage_zero(vec![0, 1]), 0);
        let (launches, starts) = ts.resource_offers(0);
        let mut outs = Vec::new();
        for l in &launches {
            let done =
                TaskState::Finished { output: TaskOutput::Result(vec![]), metrics: TaskMetricsSnapshot::default() };
            outs.extend(ts.status_update(l.task.task_id, done, 0));
        }
        let ends = outs.iter().filter(|o| matches!(o, TsOutput::Event(_))).count();
        let successes = outs.iter().filter(|o| matches!(o, TsOutput::Dag(DagEvent::TaskSucceeded { .. }))).count();
        (launches.len(), starts.len(), ends, successes)
    };
    assert_eq!(run(true), (2, 2, 2, 2));
    assert_eq!(run(false), (2, 0, 0, 2));
}
