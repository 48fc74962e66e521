//! The driver endpoint refuses what it must: peers without the application
//! secret, executors running another executable or protocol version, and
//! malformed frames — each with a recorded reason, and without disturbing
//! the executors that are registered.

use ember_deploy::{ClusterBackend, ClusterSettings, DriverEndpoint};
use ember_rpc::{connect, ConnReader, ConnWriter, Secret, ToDriver, ToExecutor, PROTOCOL_VERSION};
use ember_scheduler::event_loop::LoopMsg;
use ember_scheduler::{loop_channel, LoopReceiver, SchedulerBackend};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn endpoint(secret: &Secret) -> (tokio::runtime::Runtime, DriverEndpoint, LoopReceiver) {
    endpoint_with_timeout(secret, Duration::from_secs(120))
}

fn endpoint_with_timeout(
    secret: &Secret,
    network_timeout: Duration,
) -> (tokio::runtime::Runtime, DriverEndpoint, LoopReceiver) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (tx, rx) = loop_channel().unwrap();
    let ep = DriverEndpoint::start(
        &rt,
        secret.clone(),
        ClusterSettings { max_frame: 1 << 20, network_timeout, max_result_size: 1 << 30, unix_socket: None },
        tx,
    )
    .unwrap();
    (rt, ep, rx)
}

/// Stands in for the event loop: takes messages from the channel and from
/// the connections the backend reads.
struct Loop {
    backend: ClusterBackend,
    rx: LoopReceiver,
    read: std::collections::VecDeque<LoopMsg>,
}

impl Loop {
    fn new(ep: &DriverEndpoint, rx: LoopReceiver) -> Loop {
        Loop { backend: ep.backend(), rx, read: Default::default() }
    }

    fn next(&mut self, within: Duration) -> LoopMsg {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(msg) = self.rx.channel().try_recv() {
                return msg;
            }
            if let Some(msg) = self.read.pop_front() {
                return msg;
            }
            let mut got = Vec::new();
            self.backend.poll_incoming(&mut got);
            self.read.extend(got);
            if self.read.is_empty() {
                assert!(Instant::now() < deadline, "no message within {within:?}");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn register(exe_hash: [u8; 32], protocol_version: u32, id: &str) -> ToDriver {
    ToDriver::RegisterExecutor {
        executor_id: id.into(),
        host: "127.0.0.1".into(),
        block_address: "127.0.0.1:1".into(),
        cores: 1,
        exe_hash,
        protocol_version,
    }
}

/// Sends `n` status updates on `w` and checks the loop reads them in order.
fn status_updates_arrive_in_order(rt: &tokio::runtime::Runtime, w: &mut ConnWriter, lp: &mut Loop, n: u64) {
    rt.block_on(async {
        for t in 0..n {
            let state = ember_core::task::TaskState::Running;
            w.send(&ToDriver::StatusUpdate { task_id: ember_common::TaskId(t), state }).await.unwrap();
        }
    });
    for t in 0..n {
        match lp.next(Duration::from_secs(10)) {
            LoopMsg::StatusUpdate { task_id, .. } => assert_eq!(task_id.0, t),
            _ => panic!("expected the status update of task {t}"),
        }
    }
}

/// Authenticates over `stream` and registers executor `id`.
fn register_over(
    rt: &tokio::runtime::Runtime,
    stream: ember_rpc::Stream,
    secret: &Secret,
    id: &str,
) -> (ConnReader, ConnWriter) {
    rt.block_on(async {
        let (mut r, mut w) = connect(stream, secret, PROTOCOL_VERSION, 1 << 20).await.unwrap();
        w.send(&register(*ember_core::codec::exe_hash(), PROTOCOL_VERSION, id)).await.unwrap();
        assert!(matches!(r.recv::<ToExecutor>().await.unwrap(), ToExecutor::RegisteredExecutor));
        (r, w)
    })
}

fn wait_for(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_peer_with_the_wrong_secret_is_refused() {
    let secret = Secret::generate();
    let (rt, ep, _rx) = endpoint(&secret);
    let addr = ep.address().to_string();
    let err = rt
        .block_on(async {
            let stream = TcpStream::connect(&addr).await.unwrap();
            connect(stream, &Secret::generate(), PROTOCOL_VERSION, 1 << 20).await.map(|_| ())
        })
        .unwrap_err();
    assert!(err.to_string().contains("secret"), "{err}");
    assert!(ep.registered().is_empty());
    // The refusal is logged without the secret.
    wait_for(|| !ep.refusals().is_empty());
    assert!(!ep.refusals()[0].contains(&secret.to_hex()[..16]));
}

#[test]
fn an_executor_running_another_binary_is_refused() {
    let secret = Secret::generate();
    let (rt, ep, rx) = endpoint(&secret);
    let addr = ep.address().to_string();
    let reply = rt.block_on(async {
        let stream = TcpStream::connect(&addr).await.unwrap();
        let (mut r, mut w) = connect(stream, &secret, PROTOCOL_VERSION, 1 << 20).await.unwrap();
        let mut other = *ember_core::codec::exe_hash();
        other[0] ^= 0xff;
        w.send(&register(other, PROTOCOL_VERSION, "impostor")).await.unwrap();
        r.recv::<ToExecutor>().await.unwrap()
    });
    match reply {
        ToExecutor::RegisterExecutorFailed { reason } => assert!(reason.contains("executable hash"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(ep.registered().is_empty());
    assert!(rx.channel().try_recv().is_err(), "nothing reached the scheduler");
    assert!(ep.refusals().iter().any(|r| r.contains("impostor")));
}

#[test]
fn a_mismatched_protocol_version_is_refused_at_the_handshake() {
    let secret = Secret::generate();
    let (rt, ep, _rx) = endpoint(&secret);
    let addr = ep.address().to_string();
    let result = rt.block_on(async {
        let stream = TcpStream::connect(&addr).await.unwrap();
        connect(stream, &secret, PROTOCOL_VERSION + 1, 1 << 20).await.map(|_| ())
    });
    assert!(result.is_err());
    wait_for(|| ep.refusals().iter().any(|r| r.contains("protocol version")));
}

#[test]
fn garbage_and_oversized_frames_close_only_that_connection() {
    let secret = Secret::generate();
    let (rt, ep, rx) = endpoint(&secret);
    let addr = ep.address().to_string();
    rt.block_on(async {
        // Random bytes, then a frame header announcing 1 GiB (over the 1 MiB limit).
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"\x00\x00\x00\x05hello-not-ember").await.unwrap();
        let mut s2 = TcpStream::connect(&addr).await.unwrap();
        s2.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        s2.write_all(&[0u8; 64]).await.unwrap();
    });
    wait_for(|| ep.refusals().len() >= 2);
    // A well-behaved executor still registers afterwards.
    let registered = rt.block_on(async {
        let stream = TcpStream::connect(&addr).await.unwrap();
        let (mut r, mut w) = connect(stream, &secret, PROTOCOL_VERSION, 1 << 20).await.unwrap();
        w.send(&register(*ember_core::codec::exe_hash(), PROTOCOL_VERSION, "good")).await.unwrap();
        let reply = r.recv::<ToExecutor>().await.unwrap();
        (reply, r, w)
    });
    assert!(matches!(registered.0, ToExecutor::RegisteredExecutor));
    wait_for(|| ep.registered().len() == 1);
    let mut lp = Loop::new(&ep, rx);
    let wait = Duration::from_secs(5);
    assert!(matches!(lp.next(wait), LoopMsg::ExecutorAdded { cores: 1, .. }));
    // Closing the connection is reported as a lost executor.
    drop(registered);
    match lp.next(wait) {
        LoopMsg::ExecutorLost { executor, .. } => assert_eq!(executor.as_str(), "good"),
        _ => panic!("expected ExecutorLost"),
    }
    assert!(ep.registered().is_empty());
}

#[test]
fn the_loop_reads_status_updates_in_order_and_declares_a_silent_executor_lost() {
    let secret = Secret::generate();
    let (rt, ep, rx) = endpoint_with_timeout(&secret, Duration::from_millis(300));
    let addr = ep.address().to_string();
    let stream = rt.block_on(TcpStream::connect(&addr)).unwrap();
    let (r, mut w) = register_over(&rt, stream.into(), &secret, "quiet");
    let mut lp = Loop::new(&ep, rx);
    let wait = Duration::from_secs(10);
    assert!(matches!(lp.next(wait), LoopMsg::ExecutorAdded { .. }));
    status_updates_arrive_in_order(&rt, &mut w, &mut lp, 50);
    // Then silence, with the connection open: lost after ember.network.timeout.
    let start = Instant::now();
    match lp.next(wait) {
        LoopMsg::ExecutorLost { executor, reason } => {
            assert_eq!(executor.as_str(), "quiet");
            assert!(reason.contains("ember.network.timeout"), "{reason}");
        }
        _ => panic!("expected ExecutorLost"),
    }
    assert!(start.elapsed() >= Duration::from_millis(250), "declared lost after {:?}", start.elapsed());
    assert!(ep.registered().is_empty());
    drop((r, w));
}

#[test]
fn a_loop_turns_messages_leave_at_its_flush_and_stage_releases_follow_on_their_own() {
    let secret = Secret::generate();
    let (rt, ep, _rx) = endpoint(&secret);
    let addr = ep.address().to_string();
    let (mut r, w) = rt.block_on(async {
        let stream = TcpStream::connect(&addr).await.unwrap();
        let (mut r, mut w) = connect(stream, &secret, PROTOCOL_VERSION, 1 << 20).await.unwrap();
        w.send(&register(*ember_core::codec::exe_hash(), PROTOCOL_VERSION, "e1")).await.unwrap();
        assert!(matches!(r.recv::<ToExecutor>().await.unwrap(), ToExecutor::RegisteredExecutor));
        (r, w)
    });
    wait_for(|| ep.registered().len() == 1);
    let id = ember_common::ExecutorId::from("e1");
    let mut backend = ep.backend();
    let next = |r: &mut ember_rpc::ConnReader, wait: Duration| {
        rt.block_on(async { tokio::time::timeout(wait, r.recv::<ToExecutor>()).await.ok().map(|m| m.unwrap()) })
    };
    backend.kill(&id, ember_common::TaskId(7), "cancelled");
    assert!(next(&mut r, Duration::from_millis(100)).is_none(), "held until the turn's flush");
    backend.flush();
    assert!(
        matches!(next(&mut r, Duration::from_secs(10)), Some(ToExecutor::KillTask { task_id, .. }) if task_id.0 == 7)
    );
    // A release needs no flush: it leaves with the next one or on a short timer.
    backend.release(&id, [3; 32]);
    assert!(
        matches!(next(&mut r, Duration::from_secs(10)), Some(ToExecutor::ReleaseStage { payload_hash }) if payload_hash == [3; 32])
    );
    drop(w);
}

#[test]
fn executors_on_this_host_register_over_the_unix_socket_and_are_read_like_tcp_ones() {
    let secret = Secret::generate();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (tx, rx) = loop_channel().unwrap();
    let settings = ClusterSettings {
        max_frame: 1 << 20,
        network_timeout: Duration::from_secs(120),
        max_result_size: 1 << 30,
        unix_socket: Some(dir.path().join("driver.sock")),
    };
    let ep = DriverEndpoint::start(&rt, secret.clone(), settings, tx).unwrap();
    let unix = ep.unix_address().expect("the endpoint listens on the Unix socket").to_string();
    assert_eq!(unix, format!("unix:{}", dir.path().join("driver.sock").display()));
    // The wrong secret is refused there too.
    let refused = rt.block_on(async {
        let stream = ember_rpc::Stream::connect(&unix).await.unwrap();
        connect(stream, &Secret::generate(), PROTOCOL_VERSION, 1 << 20).await.map(|_| ())
    });
    assert!(refused.is_err());
    let stream = rt.block_on(ember_rpc::Stream::connect(&unix)).unwrap();
    assert!(matches!(stream, ember_rpc::Stream::Unix(_)));
    let (r, mut w) = register_over(&rt, stream, &secret, "near");
    let mut lp = Loop::new(&ep, rx);
    let wait = Duration::from_secs(10);
    assert!(matches!(lp.next(wait), LoopMsg::ExecutorAdded { .. }));
    status_updates_arrive_in_order(&rt, &mut w, &mut lp, 20);
    drop((r, w));
    match lp.next(wait) {
        LoopMsg::ExecutorLost { executor, .. } => assert_eq!(executor.as_str(), "near"),
        _ => panic!("expected ExecutorLost"),
    }
}

#[test]
fn a_socket_path_that_cannot_be_bound_leaves_tcp_only() {
    let secret = Secret::generate();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (tx, _rx) = loop_channel().unwrap();
    // In a directory that exists, but longer than a Unix socket address can hold.
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("x".repeat(120));
    let settings = ClusterSettings {
        max_frame: 1 << 20,
        network_timeout: Duration::from_secs(120),
        max_result_size: 1 << 30,
        unix_socket: Some(long),
    };
    let ep = DriverEndpoint::start(&rt, secret, settings, tx).unwrap();
    assert!(ep.unix_address().is_none());
    assert!(ep.address().parse::<std::net::SocketAddr>().is_ok());
}
