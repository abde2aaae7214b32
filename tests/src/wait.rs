//! Bounded waiting for things the API server does asynchronously (RBAC caches, informers).

use std::{fmt::Display, future::Future, time::Duration};

use tokio::time::{Instant, sleep, timeout_at};

/// Pause between attempts.
const INTERVAL: Duration = Duration::from_millis(100);

/// Retries `check` until it returns `Ok`, and returns that value; panics after `limit` with
/// the last error, naming `what` was awaited.
pub async fn eventually<T, E, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match timeout_at(deadline, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "the last attempt was still running at the deadline".to_owned(),
        };
        if Instant::now() + INTERVAL >= deadline {
            panic!("{what}: still not the case after {limit:?}; last error: {last}");
        }
        sleep(INTERVAL).await;
    }
}
