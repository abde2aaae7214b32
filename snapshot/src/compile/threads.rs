//! Scoped-thread helpers shared by the compiler's stages.

/// Joins a scoped thread, passing its panic on.
pub(crate) fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
