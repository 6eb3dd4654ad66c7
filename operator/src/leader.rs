//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas only one reconciles.
//!
//! Like client-go's leader election: the holder renews `renewTime` every `retry_period`;
//! another replica takes the Lease over only when it has seen the same Lease record (same
//! resourceVersion) unchanged for `leaseDurationSeconds` by its own clock, so clock skew
//! between replicas does not matter. Every write is an update with the resourceVersion
//! read just before (optimistic concurrency): two replicas cannot both win one round.
//! The holder steps down when it could not renew for `renew_deadline`, which is shorter
//! than the lease duration, so it stops before anyone else may start. On shutdown the
//! holder releases the Lease (empty holder) so a successor need not wait for expiry.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's name in `holderIdentity` (the pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderConfig {
    pub fn new(namespace: String, lease_name: String, identity: String) -> Self {
        Self {
            namespace,
            lease_name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as last read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds it.
    Follow(String),
}

/// When this replica last saw the Lease record change (by resourceVersion).
#[derive(Debug, Default)]
pub struct Observed {
    record: Option<String>,
    since: Option<Instant>,
}

impl Observed {
    /// Notes the Lease's resourceVersion; returns how long it has been unchanged.
    pub fn see(&mut self, resource_version: Option<&str>, now: Instant) -> Duration {
        if self.record.as_deref() != resource_version || self.since.is_none() {
            self.record = resource_version.map(str::to_string);
            self.since = Some(now);
        }
        now.duration_since(self.since.unwrap_or(now))
    }
}

/// Pure decision from the Lease as read and how long its record has been unchanged.
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .map_or(default_duration, |s| Duration::from_secs(s.max(1) as u64));
    if unchanged_for >= duration {
        Step::TakeOver
    } else {
        Step::Follow(holder.to_string())
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    observed: Observed,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Observed::default(),
        }
    }

    fn now() -> MicroTime {
        MicroTime(Timestamp::now())
    }

    /// One round: true when we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.config.lease_name).await?;
        let unchanged_for = self.observed.see(
            current
                .as_ref()
                .and_then(|l| l.metadata.resource_version.as_deref()),
            Instant::now(),
        );
        let step = decide(
            current.as_ref(),
            &self.config.identity,
            unchanged_for,
            self.config.lease_duration,
        );
        let result = match (step, current) {
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.lease_name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(self.config.lease_duration.as_secs() as i32),
                        acquire_time: Some(Self::now()),
                        renew_time: Some(Self::now()),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Step::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(Self::now());
                spec.lease_duration_seconds = Some(self.config.lease_duration.as_secs() as i32);
                self.api
                    .replace(&self.config.lease_name, &PostParams::default(), &lease)
                    .await
            }
            (Step::TakeOver, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                info!(previous = ?spec.holder_identity, "taking over the leader Lease");
                spec.holder_identity = Some(self.config.identity.clone());
                spec.lease_duration_seconds = Some(self.config.lease_duration.as_secs() as i32);
                spec.acquire_time = Some(Self::now());
                spec.renew_time = Some(Self::now());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                self.api
                    .replace(&self.config.lease_name, &PostParams::default(), &lease)
                    .await
            }
            _ => return Ok(false),
        };
        match result {
            Ok(lease) => {
                // Our own write is a record we have seen now.
                self.observed
                    .see(lease.metadata.resource_version.as_deref(), Instant::now());
                Ok(true)
            }
            // Someone else wrote first (or created it): not ours this round.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we hold it.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(Self::now());
        self.api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// Campaigns and renews until `shutdown` turns true, publishing leadership on `leader`;
    /// then releases the Lease.
    pub async fn run(mut self, leader: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut last_renewed: Option<Instant> = None;
        let mut tick = tokio::time::interval(self.config.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            let held = match self.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renewed = Some(Instant::now());
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    warn!(error = %e, "leader Lease round failed");
                    // Keep leading only while the last renewal is recent enough.
                    last_renewed.is_some_and(|t| t.elapsed() < self.config.renew_deadline)
                }
            };
            if !held {
                last_renewed = None;
            }
            leader.send_if_modified(|l| {
                let changed = *l != held;
                if changed {
                    info!(leader = held, identity = %self.config.identity, "leadership changed");
                }
                *l = held;
                changed
            });
        }
        let was_leader = *leader.borrow();
        leader.send_replace(false);
        if was_leader {
            match self.release().await {
                Ok(()) => info!("released the leader Lease"),
                Err(e) => warn!(error = %e, "releasing the leader Lease"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn creates_a_missing_lease_and_renews_its_own() {
        assert_eq!(decide(None, "a", Duration::ZERO, D), Step::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 15)), "a", Duration::ZERO, D),
            Step::Renew
        );
    }

    #[test]
    fn follows_a_live_holder_and_takes_over_an_expired_or_released_lease() {
        let held = lease(Some("b"), 15);
        assert_eq!(
            decide(Some(&held), "a", Duration::from_secs(14), D),
            Step::Follow("b".into())
        );
        assert_eq!(
            decide(Some(&held), "a", Duration::from_secs(15), D),
            Step::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None, 1)), "a", Duration::ZERO, D),
            Step::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some(""), 1)), "a", Duration::ZERO, D),
            Step::TakeOver
        );
    }

    #[test]
    fn expiry_counts_from_when_the_record_last_changed_locally() {
        let mut seen = Observed::default();
        let t0 = Instant::now();
        assert_eq!(seen.see(Some("7"), t0), Duration::ZERO);
        assert_eq!(
            seen.see(Some("7"), t0 + Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        // A renewal by the holder changes the resourceVersion: the clock restarts.
        assert_eq!(
            seen.see(Some("8"), t0 + Duration::from_secs(11)),
            Duration::ZERO
        );
        assert_eq!(
            seen.see(Some("8"), t0 + Duration::from_secs(20)),
            Duration::from_secs(9)
        );
    }

    fn config() -> LeaderConfig {
        LeaderConfig::new("ops".into(), "rill-operator".into(), "a".into())
    }

    fn lease_json(holder: &str, rv: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "rill-operator", "namespace": "ops", "resourceVersion": rv},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 4}})
    }

    #[tokio::test]
    async fn creates_the_lease_when_there_is_none() {
        let (client, log) = crate::mock_api::client(|r| match r.method.as_str() {
            "GET" => crate::mock_api::not_found(),
            _ => (201, r.body.clone()),
        });
        let mut elector = LeaderElector::new(client, config());
        assert!(elector.try_acquire_or_renew().await.unwrap());
        let log = log.lock().unwrap();
        assert_eq!(
            log[1].line(),
            "POST /apis/coordination.k8s.io/v1/namespaces/ops/leases"
        );
        assert_eq!(log[1].body["spec"]["holderIdentity"], "a");
        assert_eq!(log[1].body["spec"]["leaseDurationSeconds"], 15);
    }

    #[tokio::test]
    async fn follows_a_live_holder_without_writing_and_loses_a_write_race() {
        let (client, log) = crate::mock_api::client(|_| (200, lease_json("b", "7")));
        let mut elector = LeaderElector::new(client, config());
        assert!(!elector.try_acquire_or_renew().await.unwrap());
        assert!(log.lock().unwrap().iter().all(|r| r.method == "GET"));

        // Released by its holder: we try to take it, but another replica wrote first.
        let (client, log) = crate::mock_api::client(|r| match r.method.as_str() {
            "GET" => (200, lease_json("", "8")),
            _ => crate::mock_api::conflict(),
        });
        let mut elector = LeaderElector::new(client, config());
        assert!(!elector.try_acquire_or_renew().await.unwrap());
        let log = log.lock().unwrap();
        assert_eq!(log[1].method, "PUT");
        assert_eq!(log[1].body["metadata"]["resourceVersion"], "8");
        assert_eq!(log[1].body["spec"]["holderIdentity"], "a");
        assert_eq!(log[1].body["spec"]["leaseTransitions"], 5);
    }

    #[tokio::test]
    async fn release_empties_the_holder_only_when_it_is_us() {
        let (client, log) = crate::mock_api::client(|r| match r.method.as_str() {
            "GET" => (200, lease_json("a", "9")),
            _ => (200, r.body.clone()),
        });
        LeaderElector::new(client, config())
            .release()
            .await
            .unwrap();
        {
            let log = log.lock().unwrap();
            assert_eq!(log[1].method, "PUT");
            assert_eq!(log[1].body["spec"].get("holderIdentity"), None);
            assert_eq!(log[1].body["spec"]["leaseDurationSeconds"], 1);
        }

        let (client, log) = crate::mock_api::client(|_| (200, lease_json("b", "9")));
        LeaderElector::new(client, config())
            .release()
            .await
            .unwrap();
        assert_eq!(log.lock().unwrap().len(), 1, "only the GET");
    }
}
