//! Graceful shutdown: one watch channel turns true, and every loop watching it winds down.

use std::time::Duration;

use tokio::sync::watch;

/// How long shutdown waits for the Lease to be released and the last usage to be written.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
