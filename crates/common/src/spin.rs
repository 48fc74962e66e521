//! Spin-then-block waiting.
//!
//! On the virtual machines Ember runs on, waking a parked thread costs
//! 10–30 µs (an inter-processor interrupt into an idle virtual CPU). A
//! tiny job crosses several threads, so each hand-off paid that. A thread
//! that expects work soon instead polls for a short budget, yielding its CPU
//! between polls so that threads with real work still run, and parks only
//! when the budget runs out.

use std::time::{Duration, Instant};

/// `ember.spinWait`'s default: how long a thread that has just handled a
/// message polls for the next before it parks. A tiny job's hand-offs come
/// tens of microseconds apart; a budget that spans the gap between two
/// jobs keeps every thread on the path awake from one job to the next.
pub const DEFAULT_SPIN_WAIT: Duration = Duration::from_millis(1);

/// How long [`spin_for`] polls without yielding: an answer is often a few
/// hundred nanoseconds away, and a yield costs a context switch.
const PURE_SPIN: Duration = Duration::from_micros(2);

/// Calls `attempt` until it yields a value or `budget` has passed.
///
/// It polls without yielding for at most [`PURE_SPIN`] — bounded by time,
/// not by count, because a poll may be a system call (an idle task thread
/// reading a socket), and 32 of those held a CPU for 25-50 µs — then
/// yields the CPU between polls.
pub fn spin_for<T>(budget: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    if let Some(v) = attempt() {
        return Some(v);
    }
    if budget.is_zero() {
        return None;
    }
    let start = Instant::now();
    let mut yielding = false;
    let mut round = 0u32;
    loop {
        if !yielding {
            std::hint::spin_loop();
            yielding = round >= 32 || start.elapsed() >= PURE_SPIN;
        } else {
            std::thread::yield_now();
            // Reading the clock costs about as much as a cheap poll; look every 8th.
            if round.is_multiple_of(8) && start.elapsed() > budget {
                return attempt();
            }
        }
        round = round.wrapping_add(1);
        if let Some(v) = attempt() {
            return Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_zero_budget_tries_once() {
        let mut tries = 0;
        assert_eq!(
            spin_for(Duration::ZERO, || {
                tries += 1;
                None::<()>
            }),
            None
        );
        assert_eq!(tries, 1);
    }

    #[test]
    fn gives_up_after_the_budget_and_tries_once_more() {
        let start = Instant::now();
        let mut tries = 0u64;
        let got = spin_for(Duration::from_millis(5), || {
            tries += 1;
            None::<()>
        });
        assert_eq!(got, None);
        assert!(start.elapsed() >= Duration::from_millis(5));
        assert!(tries > 2);
    }

    #[test]
    fn returns_what_another_thread_provides_while_it_polls() {
        let ready = Arc::new(AtomicBool::new(false));
        let setter = {
            let ready = ready.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2));
                ready.store(true, Ordering::Release);
            })
        };
        // A budget far longer than the test can take: the value must end the wait.
        let got = spin_for(Duration::from_secs(600), || ready.load(Ordering::Acquire).then_some(42));
        assert_eq!(got, Some(42));
        setter.join().unwrap();
    }

    #[test]
    fn slow_polls_start_yielding_within_microseconds_not_after_32_of_them() {
        // Each poll takes 100 us; without the time bound the first 32 would
        // run back to back, never yielding, for 3.2 ms.
        // The budget is checked every 8th yielding round, so about 16 polls
        // fit in 1 ms once yielding starts at once; 34 did before.
        let mut polls = 0u32;
        spin_for(Duration::from_millis(1), || {
            polls += 1;
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(100) {}
            None::<()>
        });
        assert!(polls < 32, "{polls} polls in a 1 ms budget");
    }
}
