//! A connection's sending half that any thread writes to directly.
//!
//! The driver's scheduler and an executor's task threads used to hand each
//! message to the connection's writer task over a channel. That hand-off is
//! a thread wake-up, 10–30 µs on the virtual machines Ember runs on, on the
//! path of every tiny job, and a futex round per burst on the path of every
//! short task. A [`SharedWriter`] lets the sending thread append messages to
//! the frame being built ([`SharedWriter::push`]) and write them itself with
//! one non-blocking write ([`SharedWriter::flush`]), so a burst — the
//! `LaunchTask`s of one offer round, the status updates of a run of short
//! tasks — still costs one tag and one system call. Only bytes the socket
//! cannot take right now are left to a flusher task on the I/O runtime,
//! which writes them as the peer drains; senders never block on the network.
//!
//! Order is kept because every write, direct or by the flusher, happens
//! under the buffer's lock from the first unwritten byte. A message that
//! cannot be encoded, or exceeds the frame limit, closes the connection,
//! as a write error does: the peer sees it end, never a missing message.

use crate::frame::ConnWriter;
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::{Arc, Weak};
use tokio::sync::Notify;

/// Unflushed messages that make [`SharedWriter::push`] flush by itself.
const AUTO_FLUSH_MESSAGES: usize = 64;
/// Unflushed bytes that make [`SharedWriter::push`] flush by itself.
const AUTO_FLUSH_BYTES: usize = 256 << 10;

/// How long [`SharedWriter::flush_soon`] lets messages wait for company.
/// tokio's timers tick in milliseconds; this is one tick.
pub const FLUSH_SOON: std::time::Duration = std::time::Duration::from_millis(1);

struct State {
    /// `None` once the connection is closed.
    writer: Option<ConnWriter>,
    /// Bytes at the front of the writer's buffer already on the wire.
    sent: usize,
    /// Messages pushed since the last flush.
    unflushed: usize,
    /// The flusher owns the rest of the buffer until it has drained it.
    backlogged: bool,
}

/// The sending half of an authenticated connection, shared by threads.
pub struct SharedWriter {
    state: Mutex<State>,
    backlog: Arc<Notify>,
    soon: Soon,
}

/// Calls a function on its owner within [`FLUSH_SOON`] of being armed, once
/// per arming however often it is armed meanwhile: a flush that lets
/// messages wait briefly for company. The call runs on the tokio runtime the
/// `Soon` was made on; it stops with its owner.
pub struct Soon {
    inner: Arc<SoonInner>,
}

struct SoonInner {
    wake: Notify,
    armed: std::sync::atomic::AtomicBool,
}

impl Soon {
    /// For an owner made with `Arc::new_cyclic`, which passes the `Weak`.
    pub fn new<T: Send + Sync + 'static>(owner: Weak<T>, call: fn(&T)) -> Soon {
        let inner = Arc::new(SoonInner { wake: Notify::new(), armed: std::sync::atomic::AtomicBool::new(false) });
        let task = inner.clone();
        tokio::spawn(async move {
            loop {
                task.wake.notified().await;
                tokio::time::sleep(FLUSH_SOON).await;
                let Some(owner) = owner.upgrade() else { return };
                task.armed.store(false, std::sync::atomic::Ordering::Release);
                call(&owner);
            }
        });
        Soon { inner }
    }

    pub fn arm(&self) {
        if !self.inner.armed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.inner.wake.notify_one();
        }
    }
}

impl Drop for Soon {
    fn drop(&mut self) {
        // Let the task see its owner is gone and end.
        self.inner.wake.notify_one();
    }
}

enum Drain {
    Done,
    Blocked,
}

impl SharedWriter {
    /// Wraps a connection's writer and starts its flusher on the current
    /// tokio runtime. Dropping the last handle closes the connection's
    /// sending side.
    pub fn start(writer: ConnWriter) -> Arc<SharedWriter> {
        let backlog = Arc::new(Notify::new());
        let shared = Arc::new_cyclic(|weak| SharedWriter {
            state: Mutex::new(State { writer: Some(writer), sent: 0, unflushed: 0, backlogged: false }),
            backlog: backlog.clone(),
            soon: Soon::new(weak.clone(), SharedWriter::flush),
        });
        tokio::spawn(flusher(Arc::downgrade(&shared), backlog));
        shared
    }

    /// Appends a message to the frame being built. It goes out at the next
    /// [`flush`](Self::flush), or now if enough is waiting. Returns false if
    /// the connection is closed.
    pub fn push<T: Serialize>(&self, msg: &T) -> bool {
        let mut s = self.state.lock();
        if !self.append(&mut s, msg) {
            return false;
        }
        let waiting = s.writer.as_ref().map_or(0, |w| w.out.len()) - s.sent;
        if s.unflushed >= AUTO_FLUSH_MESSAGES || waiting >= AUTO_FLUSH_BYTES {
            self.write_now(&mut s);
        }
        s.writer.is_some()
    }

    /// Writes everything pushed so far, as far as the socket takes it now;
    /// the flusher writes the rest.
    pub fn flush(&self) {
        let mut s = self.state.lock();
        self.write_now(&mut s);
    }

    /// Flushes within [`FLUSH_SOON`] unless a [`flush`](Self::flush) comes
    /// first: for messages that are not urgent (a stage release), which then
    /// travel with the next urgent ones instead of costing a write and a
    /// wake-up of the peer of their own.
    pub fn flush_soon(&self) {
        self.soon.arm();
    }

    /// [`push`](Self::push) then [`flush`](Self::flush).
    pub fn send<T: Serialize>(&self, msg: &T) -> bool {
        let mut s = self.state.lock();
        if !self.append(&mut s, msg) {
            return false;
        }
        self.write_now(&mut s);
        s.writer.is_some()
    }

    /// Adds a message to the buffer; one that cannot be sent closes the
    /// connection after what came before it.
    fn append<T: Serialize>(&self, s: &mut State, msg: &T) -> bool {
        let Some(w) = s.writer.as_mut() else { return false };
        if let Err(e) = w.push(msg) {
            tracing::error!(error = %e, "cannot send a message; closing the connection");
            self.write_now(s);
            s.writer = None;
            return false;
        }
        s.unflushed += 1;
        true
    }

    /// True until the connection is closed by an error.
    pub fn is_open(&self) -> bool {
        self.state.lock().writer.is_some()
    }

    /// Writes from the first unwritten byte unless the flusher owns the buffer.
    fn write_now(&self, s: &mut State) {
        s.unflushed = 0;
        if s.backlogged {
            if let Some(w) = s.writer.as_mut() {
                w.seal();
            }
            return;
        }
        match drain(s) {
            Ok(Drain::Done) => {}
            Ok(Drain::Blocked) => {
                s.backlogged = true;
                self.backlog.notify_one();
            }
            Err(e) => {
                tracing::warn!(error = %e, "write failed; closing the connection");
                s.writer = None;
            }
        }
    }
}

/// Seals the open frame and writes without blocking.
fn drain(s: &mut State) -> std::io::Result<Drain> {
    let Some(w) = s.writer.as_mut() else { return Ok(Drain::Done) };
    w.seal();
    if s.sent == 0 {
        // Frames go to a shared ring first, in order, while nothing waits
        // for the socket; the reader orders the two by sequence number.
        s.sent = w.push_to_ring();
    }
    if !w.write_from(&mut s.sent)? {
        return Ok(Drain::Blocked);
    }
    w.clear_out();
    s.sent = 0;
    Ok(Drain::Done)
}

/// Writes what senders left behind, waiting for the socket between tries.
async fn flusher(shared: Weak<SharedWriter>, backlog: Arc<Notify>) {
    loop {
        backlog.notified().await;
        loop {
            let Some(this) = shared.upgrade() else { return };
            let half = {
                let mut s = this.state.lock();
                match drain(&mut s) {
                    Ok(Drain::Done) => {
                        s.backlogged = false;
                        if s.writer.is_none() {
                            return;
                        }
                        break;
                    }
                    Ok(Drain::Blocked) => s.writer.as_ref().map(|w| w.inner.clone()),
                    Err(e) => {
                        tracing::warn!(error = %e, "write failed; closing the connection");
                        s.writer = None;
                        s.backlogged = false;
                        return;
                    }
                }
            };
            drop(this);
            let Some(half) = half else { return };
            if half.writable().await.is_err() {
                if let Some(this) = shared.upgrade() {
                    let mut s = this.state.lock();
                    s.writer = None;
                    s.backlogged = false;
                }
                return;
            }
        }
    }
}

impl Drop for SharedWriter {
    fn drop(&mut self) {
        // Let the flusher see the writer is gone and end.
        self.backlog.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{pair, RpcError};
    use std::time::Duration;

    async fn recv_within<T: serde::de::DeserializeOwned>(r: &mut crate::ConnReader, wait: Duration) -> Option<T> {
        tokio::time::timeout(wait, r.recv::<T>()).await.ok().map(|m| m.expect("a message"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn pushes_from_many_threads_arrive_whole_and_in_each_threads_order() {
        let (_cr, cw, mut sr, _sw) = pair(1 << 20).await;
        let w = SharedWriter::start(cw);
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..500u32 {
                        assert!(w.push(&(t, i, vec![t as u8; (i % 13) as usize * 40])));
                        if i % (t + 3) == 0 {
                            w.flush();
                        }
                    }
                    w.flush();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut next = [0u32; 4];
        for _ in 0..2000 {
            let (t, i, body) = sr.recv::<(u32, u32, Vec<u8>)>().await.unwrap();
            assert_eq!(i, next[t as usize], "thread {t}'s messages out of order");
            assert_eq!(body, vec![t as u8; (i % 13) as usize * 40]);
            next[t as usize] += 1;
        }
        assert_eq!(next, [500; 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn what_the_socket_cannot_take_goes_out_later_in_order_and_senders_never_wait() {
        let (_cr, cw, mut sr, _sw) = pair(64 << 20).await;
        let w = SharedWriter::start(cw);
        // Nobody reads yet: 16 MiB is far more than the socket buffers hold.
        let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
        let sender = {
            let (w, big) = (w.clone(), big.clone());
            tokio::task::spawn_blocking(move || {
                assert!(w.send(&big));
                for i in 0..100u32 {
                    assert!(w.send(&i));
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(30), sender)
            .await
            .expect("sending must not wait for the peer to read")
            .unwrap();
        let wait = Duration::from_secs(30);
        assert_eq!(recv_within::<Vec<u8>>(&mut sr, wait).await.expect("the backlog is written"), big);
        for i in 0..100u32 {
            assert_eq!(recv_within::<u32>(&mut sr, wait).await, Some(i));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn pushed_messages_wait_for_a_flush_or_leave_soon_after_flush_soon() {
        let (_cr, cw, mut sr, _sw) = pair(1 << 20).await;
        let w = SharedWriter::start(cw);
        assert!(w.push(&1u32));
        assert_eq!(recv_within::<u32>(&mut sr, Duration::from_millis(100)).await, None, "nothing flushed it");
        w.flush();
        assert_eq!(recv_within::<u32>(&mut sr, Duration::from_secs(10)).await, Some(1));
        assert!(w.push(&2u32));
        w.flush_soon();
        assert_eq!(recv_within::<u32>(&mut sr, Duration::from_secs(10)).await, Some(2));
        // Enough unflushed messages go out by themselves.
        for i in 0..AUTO_FLUSH_MESSAGES as u32 {
            assert!(w.push(&i));
        }
        for i in 0..AUTO_FLUSH_MESSAGES as u32 {
            assert_eq!(recv_within::<u32>(&mut sr, Duration::from_secs(10)).await, Some(i));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_message_over_the_frame_limit_closes_the_connection_after_what_came_before() {
        let (_cr, cw, mut sr, _sw) = pair(10_000).await;
        let w = SharedWriter::start(cw);
        assert!(w.push(&7u32));
        assert!(!w.send(&vec![0u8; 20_000]), "refused");
        assert!(!w.is_open());
        assert!(!w.send(&8u32), "a closed writer takes nothing more");
        assert_eq!(sr.recv::<u32>().await.unwrap(), 7);
        assert!(matches!(sr.recv::<u32>().await, Err(RpcError::Closed)));
    }
}
