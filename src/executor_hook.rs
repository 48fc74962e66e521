//! The hook that turns a launched process into an executor before `main`.
//!
//! A driver launches executors as copies of its own binary; an executor
//! must never run the user's `main`, so the switch happens in a constructor
//! (an `.init_array` entry), before `main`. But a constructor that never
//! returns also stops the loader from running the constructors after it —
//! and which constructors those are depends on link order. An allocator's
//! is one of them: `ember-bench`'s executors once ran with mimalloc never
//! initialized, because its constructor came after this hook, and
//! local-cluster pagerank ran 40% slower.
//!
//! So the hook, when it finds itself in an executor, first runs every
//! `.init_array` entry that follows its own, with the arguments the loader
//! gave it, exactly as the loader would have; then it enters executor mode.
//! Entries before it have run already; the loader never resumes after it,
//! so none runs twice.

use std::ffi::{c_char, c_int};

/// An `.init_array` entry, as glibc calls them: `(argc, argv, envp)`.
type InitFn = unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char);

#[used]
#[link_section = ".init_array"]
static ENTER_EXECUTOR_MODE: InitFn = enter_executor_mode;

extern "C" {
    // Bounds of the executable's `.init_array`, defined by the linker (GNU
    // ld and lld alike) for the startup code.
    static __init_array_start: InitFn;
    static __init_array_end: InitFn;
}

unsafe extern "C" fn enter_executor_mode(argc: c_int, argv: *const *const c_char, envp: *const *const c_char) {
    if !ember_executor::process::is_executor_process() {
        return;
    }
    let table = init_array();
    let me = enter_executor_mode as InitFn as usize;
    for &f in &table[after(table.iter().map(|&f| f as usize), me)..] {
        // SAFETY: each entry is a constructor the loader would call next,
        // with these same arguments.
        unsafe { f(argc, argv, envp) };
    }
    ember_executor::process::run_if_requested();
}

/// This executable's `.init_array`: the constructors the loader runs, in order.
fn init_array() -> &'static [InitFn] {
    // SAFETY: the linker's bounds delimit the array of initialized entries
    // the loader walks; it is never written after relocation.
    unsafe {
        let start = std::ptr::addr_of!(__init_array_start);
        let end = std::ptr::addr_of!(__init_array_end);
        std::slice::from_raw_parts(start, (end as usize - start as usize) / std::mem::size_of::<InitFn>())
    }
}

/// Index just past `me` among the table's entry addresses; the table's
/// length when it is missing (then nothing is run early: the hook behaves
/// as a plain constructor). Allocates nothing: it runs before the
/// allocator's own constructor may have.
fn after(mut table: impl ExactSizeIterator<Item = usize>, me: usize) -> usize {
    let len = table.len();
    table.position(|f| f == me).map_or(len, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_entries_after_the_hook_are_run_early() {
        let table = [10, 20, 30, 40];
        assert_eq!(after(table.into_iter(), 20), 2);
        assert_eq!(after(table.into_iter(), 40), 4);
        assert_eq!(after(table.into_iter(), 99), 4);
        assert_eq!(after([].into_iter(), 1), 0);
    }

    #[test]
    fn the_hook_is_in_this_binarys_init_array() {
        let table = init_array();
        let me = enter_executor_mode as InitFn as usize;
        assert!(table.iter().any(|&f| f as usize == me), "the hook is not among {} entries", table.len());
    }
}
