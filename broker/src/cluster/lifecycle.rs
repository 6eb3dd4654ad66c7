//! A broker's life in the cluster: registration (a new broker epoch per process),
//! heartbeats to the active controller, and controlled shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::command::BrokerEndpoints;
use super::controller::{Controller, NOT_REGISTERED};
use super::image::codes;
use super::node::{ClusterError, ClusterNode};
use super::quorum::HeartbeatHandler;
use super::{Command, CommandResult};
use crate::config::BrokerConfig;
use crate::rpc::proto::controller_client::ControllerClient;
use crate::rpc::proto::BrokerHeartbeat;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(
        "node.id {0} is in use by another live broker process (the controller refused this \
         registration for longer than the broker session timeout): give each node its own \
         node.id"
    )]
    NodeIdClash(i32),
    #[error("the broker was shut down before it registered")]
    Stopped,
}

/// Where other nodes reach this one: its entry in `controller.quorum.voters` when it is
/// a voter (that address may be a proxy), else its CONTROLLER listener.
pub fn endpoints(config: &BrokerConfig) -> BrokerEndpoints {
    let internal = config
        .cluster
        .voters
        .get(&config.node_id)
        .filter(|a| !a.is_empty())
        .cloned()
        .or_else(|| config.cluster.internal_listen.map(|a| a.to_string()))
        .unwrap_or_default();
    BrokerEndpoints {
        kafka_host: config.advertised_host.clone(),
        kafka_port: config.advertised_port,
        internal,
    }
}

/// Registers this process and returns the metadata index of the registration. Waits
/// for a quorum as long as it takes; a node id held by a live process is refused
/// until the controller fences that process, and given up on after twice the session
/// timeout.
pub async fn register(
    node: &ClusterNode,
    config: &BrokerConfig,
    shutdown: &watch::Receiver<bool>,
) -> Result<u64, LifecycleError> {
    let session = Duration::from_millis(config.cluster.broker_session_timeout_ms as u64);
    let mut refused_since: Option<Instant> = None;
    let command = Command::RegisterBroker {
        broker_id: config.node_id,
        incarnation_id: node.incarnation_id,
        endpoints: endpoints(config),
        rack: config.cluster.rack.clone(),
    };
    loop {
        if *shutdown.borrow() {
            return Err(LifecycleError::Stopped);
        }
        match node.propose_committed(command.clone()).await {
            Ok((CommandResult::BrokerRegistered { broker_epoch }, index)) => {
                node.set_registration(broker_epoch, index);
                tracing::info!(broker_epoch, index, "registered with the controller");
                return Ok(index);
            }
            Ok((other, _)) => tracing::warn!(?other, "unexpected registration answer"),
            Err(ClusterError::Refused { code, message })
                if code == codes::DUPLICATE_BROKER_REGISTRATION =>
            {
                let since = *refused_since.get_or_insert_with(Instant::now);
                if since.elapsed() > 2 * session + Duration::from_secs(5) {
                    return Err(LifecycleError::NodeIdClash(config.node_id));
                }
                tracing::warn!(%message, "registration refused; waiting for the controller to fence the old process");
            }
            Err(e) => tracing::info!(error = %e, "waiting for the metadata quorum to register"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sends heartbeats to the active controller until shutdown. A controller that no
/// longer has this process registered (an operator unregistered it while it was alive)
/// gets a new registration, as a restarted process would make.
pub async fn heartbeats(
    node: Arc<ClusterNode>,
    controller: Arc<Controller>,
    config: BrokerConfig,
    local_ip: Option<IpAddr>,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = Duration::from_millis(config.cluster.broker_heartbeat_interval_ms as u64);
    let mut ticker = tokio::time::interval(every);
    let mut clients: HashMap<i32, Option<ControllerClient<Channel>>> = HashMap::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let request = BrokerHeartbeat {
            broker_id: config.node_id,
            broker_epoch: node.broker_epoch(),
            applied_index: *node.quorum().applied().borrow(),
            want_shutdown: false,
            registered_index: node.registered_index(),
        };
        // To every voter, not only the active controller: whichever takes over next
        // already knows when each broker was last heard from.
        let mut sends = Vec::new();
        let mut unregistered = false;
        for (voter, address) in &config.cluster.voters {
            if *voter == config.node_id {
                unregistered |= controller.heartbeat(request).error == NOT_REGISTERED;
                continue;
            }
            if address.is_empty() {
                continue;
            }
            let Some(client) = clients.entry(*voter).or_insert_with(|| {
                Endpoint::from_shared(format!("http://{address}"))
                    .ok()
                    .map(|e| {
                        ControllerClient::new(
                            e.connect_timeout(every)
                                .timeout(every)
                                .local_address(local_ip)
                                .connect_lazy(),
                        )
                    })
            }) else {
                continue;
            };
            let mut client = client.clone();
            sends.push(async move { client.heartbeat(request).await });
        }
        for result in futures::future::join_all(sends).await {
            match result {
                Ok(reply) => unregistered |= reply.into_inner().error == NOT_REGISTERED,
                Err(status) => tracing::debug!(%status, "heartbeat failed"),
            }
        }
        if unregistered {
            tracing::warn!(
                broker_epoch = request.broker_epoch,
                "the controller has no registration for this broker (unregistered while \
                 running): registering again"
            );
            match register(&node, &config, &shutdown).await {
                Ok(_) => {}
                Err(LifecycleError::Stopped) => return,
                Err(e) => tracing::error!(error = %e, "cannot register again"),
            }
        }
    }
}

/// SIGTERM on a cluster member: the controller moves every leadership this broker
/// holds to another in-sync replica before the process goes, so producers see a
/// leader change instead of a timeout.
pub async fn controlled_shutdown(node: &ClusterNode) {
    let command = Command::ControlledShutdown {
        broker_id: node.node_id,
        broker_epoch: node.broker_epoch(),
    };
    match tokio::time::timeout(Duration::from_secs(15), node.propose(command)).await {
        Ok(Ok(_)) => tracing::info!("controlled shutdown: leadership moved away"),
        Ok(Err(e)) => tracing::warn!(error = %e, "controlled shutdown refused; stopping anyway"),
        Err(_) => tracing::warn!("controlled shutdown timed out; stopping anyway"),
    }
}
