//! As leader: asks the controller for ISR changes (Kafka's AlterPartition) when
//! followers fall behind or catch up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::Command;
use crate::replica_manager::{now_ms, ReplicaManager};

const CHECK_EVERY: Duration = Duration::from_millis(100);

pub async fn run(replicas: Arc<ReplicaManager>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    let lag_max = replicas.config().cluster.replica_lag_time_max_ms;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = now_ms();
        for partition in replicas.all_partitions() {
            let Some(mut change) = partition.isr_change_due(now, lag_max) else {
                continue;
            };
            // Only active brokers may join (the controller would refuse the others).
            let current = partition.isr();
            {
                let image = replicas.cluster().image();
                change
                    .new_isr
                    .retain(|r| current.contains(r) || image.is_active(*r));
            }
            let mut unchanged = current.clone();
            unchanged.sort_unstable();
            if change.new_isr == unchanged {
                partition.alter_isr_failed(change.partition_epoch);
                continue;
            }
            tracing::info!(topic = %change.topic, partition = change.partition, isr = ?change.new_isr, "asking for an ISR change");
            let command = Command::AlterPartition {
                topic: change.topic.clone(),
                partition: change.partition,
                leader_id: replicas.config().node_id,
                leader_epoch: change.leader_epoch,
                partition_epoch: change.partition_epoch,
                new_isr: change.new_isr.clone(),
            };
            let cluster = replicas.cluster().clone();
            let partition = partition.clone();
            // Each change in its own task: a slow quorum must not hold up the others.
            tokio::spawn(async move {
                if let Err(e) = cluster.propose(command).await {
                    tracing::info!(topic = %change.topic, partition = change.partition, error = %e, "ISR change refused");
                    partition.alter_isr_failed(change.partition_epoch);
                }
            });
        }
    }
}
