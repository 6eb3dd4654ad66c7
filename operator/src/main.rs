//! `rill-operator`: runs the `Cluster` and `Topic` controllers behind a leader Lease, with Prometheus
//! metrics and a health endpoint, JSON logs, and a clean stop on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use kube::Client;
use rill_operator::controller::{self, Context};
use rill_operator::leader::{LeaderConfig, LeaderElector};
use rill_operator::metrics::{self, Metrics};
use rill_operator::topic;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, watch};
use tracing::info;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Reconciles Rill Cluster resources into broker StatefulSets"
)]
struct Args {
    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Namespace of the leader Lease; defaults to the operator's own namespace (in-cluster)
    /// or the kubeconfig's.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "rill-operator")]
    lease_name: String,
    /// This replica's identity in the Lease; defaults to POD_NAME, else hostname-pid.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "rill-operator".into());
    format!("{host}-{}", std::process::id())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let args = Args::parse();
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    info!(namespace = ?args.namespace, %identity, "starting rill-operator");

    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let metrics = Arc::new(Metrics::new());
    let listener = metrics::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    tokio::spawn(metrics::serve(listener, metrics.clone()));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        }
        let _ = shutdown_tx.send(true);
    });

    let (leader_tx, mut leader_rx) = watch::channel(false);
    let elector = LeaderElector::new(
        client.clone(),
        LeaderConfig::new(lease_namespace, args.lease_name.clone(), identity),
    );
    // Stopped only after the controller: the Lease is released once nothing writes anymore.
    let (election_stop_tx, election_stop_rx) = watch::channel(false);
    let election = tokio::spawn(elector.run(leader_tx, election_stop_rx));

    let ctx = Arc::new(Context::new(client, metrics.clone(), leader_rx.clone()));
    let mut shutdown = shutdown_rx.clone();
    loop {
        tokio::select! {
            _ = leader_rx.wait_for(|l| *l) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        if *shutdown.borrow() {
            break;
        }
        metrics.leader.set(1);
        info!("leading: starting the Cluster and Topic controllers");
        // Stop the controller when leadership is lost or on shutdown.
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (mut lost, mut down) = (leader_rx.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {}
                _ = down.wait_for(|s| *s) => {}
            }
            let _ = stop_tx.send(());
        });
        let stop = stop_rx.map(|_| ()).shared();
        tokio::join!(
            controller::run(ctx.clone(), args.namespace.clone(), stop.clone()),
            topic::controller::run(ctx.clone(), args.namespace.clone(), stop),
        );
        metrics.leader.set(0);
        info!("Cluster and Topic controllers stopped");
    }
    let _ = election_stop_tx.send(true);
    election.await.context("leader election task")?;
    info!("stopped");
    Ok(())
}
