//! How the `ember-bench` binary configures its allocator (mimalloc), as
//! any user program may: it is the program's choice, not the engine's.
//!
//! mimalloc hands memory that stays free for `purge_delay` (1 s in its
//! version 3) back to the operating system. A data job frees and allocates
//! the same large buffers task after task — combine tables of tens of MiB,
//! value vectors, shuffle blocks — so every task faulted its tables in
//! again: page faults and kernel page zeroing (`clear_page_erms`) were 8.7%
//! of agg's CPU. On the virtual machines measured here, memory given back is
//! also reported free to the host, which makes touching it again dearer
//! still. Keeping freed memory (as a JVM keeps its heap) removes that cost;
//! the process's peak RSS is unchanged, since it is the peak the tasks reach
//! anyway, but the process holds its peak until it exits.

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc 3's option enum, which
/// `libmimalloc-sys` does not name; its default is 1000 (ms), checked in a
/// test below.
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;

/// The environment variable through which mimalloc reads the same option
/// when a process starts: executor processes that this one launches
/// (local-cluster) get the setting from their inherited environment.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Makes this process and the executor processes it launches keep freed
/// memory instead of returning it to the OS, unless the user already chose
/// a purge delay through `MIMALLOC_PURGE_DELAY`. Call it first in `main`,
/// before any other thread starts.
pub fn retain_freed_memory() {
    if std::env::var_os(PURGE_DELAY_ENV).is_some() {
        return;
    }
    // SAFETY: setting an allocator option is a plain store into mimalloc's
    // option table; -1 is the documented value for "never purge".
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    std::env::set_var(PURGE_DELAY_ENV, "-1");
}

/// This process's purge delay in milliseconds (-1: never).
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reading an option has no preconditions.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_15_is_the_purge_delay() {
        // Only purge_delay defaults to 1000 in mimalloc 3's option table, so
        // a renumbered enum (a different mimalloc) fails here rather than
        // silently setting another option. (Test processes do not inherit
        // MIMALLOC_PURGE_DELAY from CI.)
        if std::env::var_os(PURGE_DELAY_ENV).is_none() {
            assert_eq!(purge_delay_ms(), 1000);
        }
    }
}
