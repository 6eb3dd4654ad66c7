//! The node process: join the metadata quorum, register as a broker, follow the
//! metadata image with its partitions, serve Kafka, replication and metrics, run
//! background log maintenance, and shut down cleanly (leadership first) on SIGTERM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::cluster::controller::Controller;
use crate::cluster::lifecycle::{self, LifecycleError};
use crate::cluster::node::ClusterNode;
use crate::cluster::producer_ids::QuorumBlockSource;
use crate::cluster::quorum::{Quorum, QuorumConfig};
use crate::cluster::MetadataImage;
use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::metrics::{self, Metrics};
use crate::producer_state::ProducerIdManager;
use crate::replica_manager::{ReplicaManager, TopicError};
use crate::replication::fetcher::FetcherManager;
use crate::replication::isr_updater;
use crate::replication::service::ReplicationService;
use crate::rpc::proto::replication_server::ReplicationServer;
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
    #[error(transparent)]
    Meta(#[from] crate::metadata::MetadataError),
    #[error(transparent)]
    Quorum(#[from] crate::cluster::quorum::QuorumError),
    #[error(transparent)]
    Registration(#[from] crate::cluster::lifecycle::LifecycleError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// How often time-based flush and roll are checked; retention runs on its own interval.
const TICK: Duration = Duration::from_millis(250);

/// Kafka's name for the metadata log's directory; its partition dirs never clash.
const METADATA_DIR: &str = "__cluster_metadata-0";

pub async fn run(
    config: BrokerConfig,
    on_ready: impl FnOnce(&BrokerConfig),
) -> Result<(), StartError> {
    raise_fd_limit();
    let dir = config.log_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| StartError::Logs {
        dir: dir.clone(),
        source: TopicError::Storage(e.into()),
    })?;
    // Refuses a log dir formatted for another node id.
    crate::metadata::MetaProperties::open(&dir, config.node_id)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // The metadata quorum first: everything else follows its image.
    let image = Arc::new(RwLock::new(MetadataImage::default()));
    let local_ip = config
        .cluster
        .internal_listen
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    let quorum_config = QuorumConfig {
        local_ip,
        ..QuorumConfig::new(
            config.node_id,
            config.cluster.quorum_voters(),
            dir.join(METADATA_DIR),
        )
    };
    let quorum = Quorum::start(quorum_config, image.clone()).await?;
    let node = Arc::new(ClusterNode::new(config.node_id, quorum.clone(), image));
    let replicas = Arc::new(
        ReplicaManager::open(config.clone(), node.clone())
            .map_err(|source| StartError::Logs { dir, source })?,
    );
    let controller = Arc::new(Controller::new(
        node.clone(),
        config.cluster.clone(),
        config.log_defaults.unclean_leader_election_enable,
    ));
    let internal = match config.cluster.internal_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            let replication = ReplicationServer::new(ReplicationService::new(replicas.clone()))
                .max_decoding_message_size(256 * 1024 * 1024)
                .max_encoding_message_size(256 * 1024 * 1024);
            let server = tonic::transport::Server::builder()
                .add_service(quorum.raft_service())
                .add_service(quorum.controller_service(controller.clone()))
                .add_service(replication);
            let mut stop = shutdown_rx.clone();
            Some(tokio::spawn(server.serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    if config.cluster.controller {
        tokio::spawn(controller.clone().run(shutdown_rx.clone()));
    }
    if !config.cluster.broker {
        // A controller-only node: the quorum, the controller's duties and the internal
        // listener, no partitions and no Kafka listener.
        tracing::info!(node = config.node_id, "controller-only node started");
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = shutdown_tx.send(true);
        quorum.shutdown().await;
        if let Some(internal) = internal {
            let _ = tokio::time::timeout(Duration::from_secs(2), internal).await;
        }
        return Ok(());
    }
    let registered = tokio::select! {
        r = lifecycle::register(&node, &config, &shutdown_rx) => r?,
        _ = sigterm.recv() => return Err(LifecycleError::Stopped.into()),
        _ = sigint.recv() => return Err(LifecycleError::Stopped.into()),
    };
    tokio::spawn(lifecycle::heartbeats(
        node.clone(),
        controller.clone(),
        config.clone(),
        local_ip,
        shutdown_rx.clone(),
    ));
    // The image this node serves from must be at least as new as its registration.
    while !quorum
        .wait_applied(registered, Duration::from_secs(5))
        .await
    {
        tracing::info!(registered, "catching up with the metadata log");
    }
    // Like Kafka, serve clients once the controller unfenced this broker: it then
    // leads what it should, instead of answering LEADER_NOT_AVAILABLE meanwhile.
    let mut applied = quorum.applied();
    // (The `Ref` that `wait_for` returns holds the watch's lock: drop it at once.)
    let unfenced = tokio::time::timeout(
        Duration::from_secs(30),
        applied.wait_for(|_| node.image().is_active(config.node_id)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    drop(applied);
    if !unfenced {
        tracing::warn!("not unfenced by the controller within 30 s; serving anyway");
    }

    let metrics = Arc::new(Metrics::new());
    let groups = Arc::new(GroupCoordinator::new(
        replicas.clone(),
        config.group.clone(),
        config.offsets_topic_num_partitions,
    ));
    let fetchers = Arc::new(FetcherManager::new(
        replicas.clone(),
        local_ip,
        shutdown_rx.clone(),
    ));
    let publisher = Publisher {
        node: node.clone(),
        replicas: replicas.clone(),
        groups: groups.clone(),
        fetchers: fetchers.clone(),
    };
    publisher.publish().await;
    tokio::spawn(publisher.run(shutdown_rx.clone()));
    tokio::spawn(isr_updater::run(replicas.clone(), shutdown_rx.clone()));
    tokio::spawn(tick_groups(groups.clone(), shutdown_rx.clone()));

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
    let ctx = Context {
        replicas: replicas.clone(),
        metrics,
        groups,
        producer_ids: Arc::new(ProducerIdManager::new(Arc::new(QuorumBlockSource::new(
            node.clone(),
        )))),
    };
    let serving = tokio::spawn(server::serve(listener, ctx, shutdown_rx.clone()));
    let maintenance = tokio::spawn(maintain(replicas.clone(), shutdown_rx.clone()));
    tracing::info!(listen = %config.listen, log_dir = %config.log_dir.display(), node = config.node_id, "broker started");
    on_ready(&config);

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
    }
    // Leadership moves away while this broker still serves fetches, so followers
    // can take over with everything committed.
    // On one node too: the next start then takes the node id back at once.
    if config.cluster.controlled_shutdown_enable {
        lifecycle::controlled_shutdown(&node).await;
    }
    let _ = shutdown_tx.send(true);
    let _ = serving.await;
    let _ = maintenance.await;
    fetchers.stop();
    tokio::task::block_in_place(|| replicas.shutdown());
    tracing::info!("logs closed cleanly");
    quorum.shutdown().await;
    if let Some(internal) = internal {
        let _ = tokio::time::timeout(Duration::from_secs(2), internal).await;
    }
    Ok(())
}

/// Makes this broker's partitions follow the metadata image: after every applied
/// change, roles, fetchers and group ownership are brought up to date.
struct Publisher {
    node: Arc<ClusterNode>,
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
    fetchers: Arc<FetcherManager>,
}

impl Publisher {
    async fn publish(&self) {
        let index = *self.node.quorum().applied().borrow();
        let image = self.node.image().clone();
        let replicas = self.replicas.clone();
        let groups = self.groups.clone();
        let published = tokio::task::spawn_blocking(move || {
            let transitions = replicas.apply_image(&image);
            groups.on_transitions(&transitions);
        })
        .await;
        if let Err(e) = published {
            tracing::error!(error = %e, "applying the metadata image failed");
        }
        self.fetchers.sync();
        self.node.set_published(index);
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut applied = self.node.quorum().applied();
        loop {
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
            self.publish().await;
        }
    }
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
    let mut expiring: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let expire = last_expiry.elapsed() >= OFFSET_EXPIRY_CHECK;
        if expire {
            last_expiry = Instant::now();
        }
        groups.tick().await;
        // Expiry waits for the ISR: it runs apart, so sessions keep being checked, and
        // never twice at once.
        if expire && expiring.as_ref().is_none_or(|e| e.is_finished()) {
            let groups = groups.clone();
            expiring = Some(tokio::spawn(async move {
                groups
                    .expire_offsets(crate::replica_manager::now_ms())
                    .await;
            }));
        }
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
