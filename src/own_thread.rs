//! A dedicated OS thread with its own current-thread tokio runtime, for the few tasks that must
//! keep answering when the gateway's runtime is stuck (after a storage failure sled can block the
//! workers that call it): the admin HTTP server and the storage watchdog. Owns the thread and
//! runtime lifecycle only; never runs mail work.

use std::future::Future;
use std::time::Duration;
use tokio::sync::oneshot;

/// Run `task()` to completion on a new thread named `name` with its own runtime. `done` is
/// dropped once the thread ends; tasks stuck in blocking IO are abandoned after 100 ms so they
/// cannot hold the thread (and `done`) forever.
pub fn spawn<F, Fut>(name: &str, done: oneshot::Sender<()>, task: F) -> std::io::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let label = name.to_string();
    std::thread::Builder::new()
        .name(label.clone())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(thread = %label, error = %e, "cannot start its runtime");
                    return;
                }
            };
            rt.block_on(task());
            rt.shutdown_timeout(Duration::from_millis(100));
            drop(done);
        })
        .map(|_| ())
}
