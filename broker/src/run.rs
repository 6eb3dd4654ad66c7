//! The broker process: open the logs, serve Kafka and metrics, run background log
//! maintenance, and shut down cleanly on SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::metrics::{self, Metrics};
use crate::producer_state::ProducerIdManager;
use crate::replica_manager::{ReplicaManager, TopicError};
use crate::wire::{server, Context};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the logs in {dir}: {source}")]
    Logs {
        dir: std::path::PathBuf,
        source: TopicError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load consumer groups from __consumer_offsets: {0}")]
    Groups(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// How often time-based flush and roll are checked; retention runs on its own interval.
const TICK: Duration = Duration::from_millis(250);

pub async fn run(
    config: BrokerConfig,
    on_ready: impl FnOnce(&BrokerConfig),
) -> Result<(), StartError> {
    raise_fd_limit();
    let dir = config.log_dir.clone();
    let replicas = tokio::task::spawn_blocking(move || ReplicaManager::open(config))
        .await
        .map_err(|e| StartError::Logs {
            dir: dir.clone(),
            source: TopicError::Storage(std::io::Error::other(e.to_string()).into()),
        })?
        .map_err(|source| StartError::Logs { dir, source })?;
    let replicas = Arc::new(replicas);
    let config = replicas.config().clone();
    let metrics = Arc::new(Metrics::new());

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    if let Some(addr) = config.metrics_listen {
        let metrics_listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        tokio::spawn(metrics::serve(
            metrics_listener,
            metrics.clone(),
            replicas.clone(),
        ));
    }
    let mut sigterm = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let groups = Arc::new(GroupCoordinator::new(
        replicas.clone(),
        config.group.clone(),
        config.offsets_topic_num_partitions,
    ));
    let loaded = {
        let groups = groups.clone();
        tokio::task::spawn_blocking(move || groups.load())
            .await
            .map_err(|e| StartError::Groups(e.to_string()))?
            .map_err(|e| StartError::Groups(e.to_string()))?
    };
    tracing::info!(records = loaded, "group coordinator loaded");
    tokio::spawn(tick_groups(groups.clone(), shutdown_rx.clone()));
    let ctx = Context {
        replicas: replicas.clone(),
        metrics,
        groups,
        producer_ids: Arc::new(ProducerIdManager::local(&config.log_dir)),
    };
    let serving = tokio::spawn(server::serve(listener, ctx, shutdown_rx.clone()));
    let maintenance = tokio::spawn(maintain(replicas.clone(), shutdown_rx));
    tracing::info!(listen = %config.listen, log_dir = %config.log_dir.display(), "broker started");
    on_ready(&config);

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
    }
    let _ = shutdown_tx.send(true);
    let _ = serving.await;
    let _ = maintenance.await;
    tokio::task::block_in_place(|| replicas.shutdown());
    tracing::info!("logs closed cleanly");
    Ok(())
}

async fn maintain(replicas: Arc<ReplicaManager>, mut shutdown: watch::Receiver<bool>) {
    let retention_every =
        Duration::from_millis(replicas.config().log_retention_check_interval_ms.max(1));
    let mut last_retention = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let retention = last_retention.elapsed() >= retention_every;
        if retention {
            last_retention = Instant::now();
        }
        let replicas = replicas.clone();
        let _ = tokio::task::spawn_blocking(move || replicas.tick(retention)).await;
    }
}

/// How often committed offsets are checked for expiry (Kafka's
/// `offsets.retention.check.interval.ms` is 10 minutes; the check is cheap).
const OFFSET_EXPIRY_CHECK: Duration = Duration::from_secs(5);

/// Session timeouts and rebalance deadlines are checked at this pace.
async fn tick_groups(groups: Arc<GroupCoordinator>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut last_expiry = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let expire = last_expiry.elapsed() >= OFFSET_EXPIRY_CHECK;
        if expire {
            last_expiry = Instant::now();
        }
        let groups = groups.clone();
        let _ = tokio::task::spawn_blocking(move || {
            groups.tick();
            if expire {
                groups.expire_offsets(crate::replica_manager::now_ms());
            }
        })
        .await;
    }
}

/// Every segment holds three descriptors; take the hard limit instead of the default.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
