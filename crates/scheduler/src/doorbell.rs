//! How other threads reach the event loop while it sleeps on its backend's
//! connections.
//!
//! With executor processes the event loop reads their connections itself,
//! so a status update reaches the scheduler without a hand-off from an I/O
//! thread. When idle it then sleeps in `poll(2)` on those sockets rather
//! than on its channel, and a message sent on the channel (a job, a
//! cancellation) must wake it: [`LoopSender::send`] rings the loop's
//! [`Doorbell`], an eventfd among the polled descriptors — only while the
//! loop is asleep, so a busy loop costs senders one atomic load.

use crate::event_loop::LoopMsg;
use crossbeam_channel::{Receiver, Sender};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

/// An eventfd the event loop polls beside its connections.
pub struct Doorbell {
    fd: OwnedFd,
    /// True while the loop is about to sleep or asleep on the doorbell.
    asleep: AtomicBool,
}

impl Doorbell {
    pub fn new() -> std::io::Result<Doorbell> {
        let flags = rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC;
        Ok(Doorbell { fd: rustix::event::eventfd(0, flags)?, asleep: AtomicBool::new(false) })
    }

    /// Rings if the loop sleeps (or is about to). Call after the message is queued.
    fn ring_if_asleep(&self) {
        // Pairs with the fence in `going_to_sleep`: either the loop sees
        // the queued message when it looks again, or this sees it asleep.
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) {
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    /// Announces that the loop will sleep; it must look at its channel once
    /// more afterwards, and call [`woke`](Self::woke) when it is up again.
    pub fn going_to_sleep(&self) {
        self.asleep.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The loop is awake again: stop ringing, and reset the eventfd.
    pub fn woke(&self) {
        self.asleep.store(false, Ordering::Relaxed);
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The sending side of the event loop's channel.
#[derive(Clone)]
pub struct LoopSender {
    tx: Sender<LoopMsg>,
    bell: Arc<Doorbell>,
}

/// The event loop has ended; nothing more can be sent to it.
#[derive(Debug)]
pub struct LoopEnded;

impl LoopSender {
    /// Wakes the loop if it sleeps, so it looks at its backend's
    /// connections (a new one, say) without a message on the channel.
    pub fn wake(&self) {
        self.bell.ring_if_asleep();
    }

    pub fn send(&self, msg: LoopMsg) -> Result<(), LoopEnded> {
        self.tx.send(msg).map_err(|_| LoopEnded)?;
        self.bell.ring_if_asleep();
        Ok(())
    }
}

/// The receiving side: the channel and the doorbell that wakes its reader.
pub struct LoopReceiver {
    pub(crate) rx: Receiver<LoopMsg>,
    pub(crate) bell: Arc<Doorbell>,
}

impl LoopReceiver {
    /// The channel itself (for tests that stand in for the loop).
    pub fn channel(&self) -> &Receiver<LoopMsg> {
        &self.rx
    }
}

/// A channel into the event loop.
pub fn loop_channel() -> std::io::Result<(LoopSender, LoopReceiver)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let bell = Arc::new(Doorbell::new()?);
    Ok((LoopSender { tx, bell: bell.clone() }, LoopReceiver { rx, bell }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn readable(bell: &Doorbell, wait: Duration) -> bool {
        let mut fds = [rustix::event::PollFd::new(bell, rustix::event::PollFlags::IN)];
        let t = rustix::event::Timespec::try_from(wait).unwrap();
        rustix::event::poll(&mut fds, Some(&t)).unwrap() == 1
    }

    #[test]
    fn a_send_rings_only_while_the_loop_sleeps() {
        let (tx, rx) = loop_channel().unwrap();
        tx.send(LoopMsg::Stop).unwrap();
        assert!(!readable(&rx.bell, Duration::ZERO), "an awake loop is not rung");
        assert!(rx.rx.try_recv().is_ok());
        rx.bell.going_to_sleep();
        tx.send(LoopMsg::Stop).unwrap();
        assert!(readable(&rx.bell, Duration::ZERO));
        rx.bell.woke();
        assert!(!readable(&rx.bell, Duration::ZERO), "waking resets the bell");
    }

    #[test]
    fn a_sleeping_loop_never_misses_a_message() {
        // Many rounds of: the loop announces sleep, looks at the channel,
        // sleeps on the bell; a sender sends at any moment meanwhile.
        let (tx, rx) = loop_channel().unwrap();
        let sender = std::thread::spawn(move || {
            for i in 0..2000u64 {
                if i % 3 == 0 {
                    std::thread::yield_now();
                }
                tx.send(LoopMsg::RddUnpersisted { rdd: i }).unwrap();
                std::thread::sleep(Duration::from_micros(i % 50));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = 0u64;
        while got < 2000 {
            assert!(Instant::now() < deadline, "only {got} of 2000 arrived");
            if rx.rx.try_recv().is_ok() {
                got += 1;
                continue;
            }
            rx.bell.going_to_sleep();
            if rx.rx.try_recv().is_ok() {
                got += 1;
            } else {
                // Every message is either seen by the look above or rings.
                assert!(readable(&rx.bell, Duration::from_secs(10)), "slept through a message");
            }
            rx.bell.woke();
        }
        sender.join().unwrap();
    }
}
