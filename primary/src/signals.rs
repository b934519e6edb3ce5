//! SIGINT and SIGTERM for the long-running commands: the first asks for a
//! clean stop (finish what is in flight, then exit 0), a second one exits at
//! once.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Resolves at the next SIGINT or SIGTERM.
pub async fn stop_requested() {
    stop_requested_from_now().await
}

/// [`stop_requested`], listening from this call on rather than from the
/// first poll: a signal that arrives in between is not lost (nor does it
/// kill the process with the default action).
pub fn stop_requested_from_now() -> impl std::future::Future<Output = ()> {
    let signals = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = signals else {
            // Without signal handlers, never resolve: the process is stopped by kill.
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}

/// Listens from now on: the receiver turns `true` at the first signal, and
/// the second exits the process with status 130 without waiting for
/// `finishing` (what the log says is being waited for).
pub fn stop_on_signals(finishing: &'static str) -> watch::Receiver<bool> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        stop_requested().await;
        tracing::info!("stopping: {finishing} (signal again to exit at once)");
        let _ = stop.send(true);
        stop_requested().await;
        eprintln!("distributary: second signal, exiting without {finishing}");
        std::process::exit(130);
    });
    stopped
}
