//! `stovepipe serve`: the API, the built-in poller, the reconcile loop and
//! one consumer per topic in one process, with a graceful shutdown on every
//! exit path: stop accepting, cancel the consumers, wait for in-flight
//! deliveries (bounded by `server.drain_timeout`), then close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use poem::listener::{Acceptor, Listener, TcpListener};
use stovepipe_app::poller::run_poller;
use stovepipe_app::{ConsumerSettings, RetryPolicy};
use stovepipe_ports::Clock;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::wiring::{Wired, wire};

/// How often the recorder's upkeep runs ([`metrics_handle`]).
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder (installed once), with its upkeep
/// running every [`METRICS_UPKEEP`] on a thread of its own for the life of
/// the process. `install_recorder` leaves the upkeep to its caller, and
/// without it every histogram sample recorded since the last scrape stays
/// in memory: some ten a validated request (the stages' timings and the
/// pipeline's latency), so a server nobody scraped grew without bound.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => {
                let upkeep = h.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-upkeep".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(METRICS_UPKEEP);
                            upkeep.run_upkeep();
                        }
                    });
                if let Err(e) = spawned {
                    warn!(error = %e, "metrics upkeep not started: histograms grow until scraped");
                }
                Some(h)
            }
            Err(e) => {
                warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .clone()
}

/// A running server, for the demo and tests.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub wired: Wired,
    cancel: CancellationToken,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Shuts down gracefully and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.done.await.context("server task panicked")?
    }
}

/// Starts everything and returns once the listener is bound.
pub async fn start(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    let auth = Authenticator::new(&settings.auth).map_err(|e| anyhow::anyhow!(e))?;
    if auth.dev_mode() {
        warn!(
            listen = %settings.listen,
            "DEV MODE: no auth.hs256_secret configured; every caller is an admin. Allowed only on loopback."
        );
    }
    // Installed before wiring: what the pipeline registers once when it is
    // made (its row cache's counters) goes to it.
    let metrics = metrics_handle();
    let wired = wire(&settings, clock.clone()).await?;
    let state = Arc::new(AppState {
        wired: wired.clone(),
        auth,
        clock,
        metrics,
    });
    let acceptor = TcpListener::bind(settings.listen)
        .into_acceptor()
        .await
        .with_context(|| format!("server.listen {}: cannot bind", settings.listen))?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .context("listener has no socket address")?;
    info!(%addr, "listening on http://{addr}");

    let cancel = CancellationToken::new();
    let pipeline = wired.pipeline.clone();
    let mut consumer_settings = ConsumerSettings::new(format!("stovepipe-{}", std::process::id()));
    consumer_settings.drain_timeout = settings.drain_timeout;
    consumer_settings.max_in_flight = settings.max_in_flight;
    let mut consumers =
        pipeline.spawn_consumers(&RetryPolicy::default(), &consumer_settings, &cancel);
    let reconciler = tokio::spawn(
        pipeline
            .reconciler()
            .run(settings.reconcile_interval, cancel.clone()),
    );
    let poller = tokio::spawn(run_poller(
        pipeline.ingest(),
        settings.queues.clone(),
        cancel.clone(),
    ));

    let app = api::app(state);
    let http_cancel = cancel.clone();
    let drain = settings.drain_timeout;
    let backend = wired.backend.clone();
    let done = tokio::spawn(async move {
        let served = poem::Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app, http_cancel.clone().cancelled_owned(), Some(drain))
            .await;
        // Whatever ended the HTTP server ends the workers too.
        http_cancel.cancel();
        while consumers.join_next().await.is_some() {}
        let _ = reconciler.await;
        let _ = poller.await;
        backend.close().await;
        info!("stopped");
        served.context("HTTP server failed")
    });
    Ok(Running {
        addr,
        wired,
        cancel,
        done,
    })
}

/// Runs until `shutdown` resolves (a signal), then stops gracefully.
pub async fn serve(
    settings: Settings,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(settings, clock).await?;
    shutdown.await;
    info!("shutting down: draining in-flight work");
    running.stop().await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorder drains its histograms without waiting for a scrape: its
    /// upkeep thread runs once the recorder is installed.
    #[test]
    fn the_recorder_s_upkeep_runs_on_a_thread_of_its_own() {
        assert!(metrics_handle().is_some(), "the recorder is installed");
        let threads = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        };
        // A new thread carries its creator's name until it has started and
        // named itself.
        let named = (0..100).any(|_| {
            let found = threads().iter().any(|name| name == "metrics-upkeep");
            if !found {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            found
        });
        assert!(named, "{:?}", threads());
    }
}
