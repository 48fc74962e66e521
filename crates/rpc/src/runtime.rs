//! The tokio runtime that carries a process's connections (the driver's
//! endpoint and each executor's link, block server and block clients).

/// A runtime with one I/O thread. Every wake-up between a reader and a
/// writer on different threads costs a context switch, and on two cores those
/// dominated per-task latency (local-cluster[2,1,..] A/B: sched 12.5-13.1k ->
/// 16.4-16.9k tasks/s, tiny 0.22-0.26 -> 0.17-0.19 ms with one thread instead
/// of two). `stack_size` also applies to blocking-pool threads.
pub fn io_runtime(thread_name: &str, stack_size: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(thread_name)
        .thread_stack_size(stack_size)
        .enable_all()
        .build()
}
