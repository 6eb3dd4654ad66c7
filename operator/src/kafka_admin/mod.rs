//! A small Kafka admin client on the kafka-protocol crate, for the operator's Topic
//! reconciler and for draining brokers: cluster metadata, topics, partitions, topic
//! configs and partition reassignments.
//!
//! It bootstraps from `host:port` addresses, learns brokers and the controller from
//! Metadata, and sends what Kafka sends to the controller (CreateTopics, DeleteTopics,
//! CreatePartitions, reassignments) there, everything else to any broker. Each
//! connection negotiates versions with ApiVersions first. Retriable errors
//! (NOT_CONTROLLER, timeouts, lost connections, ...) are retried a bounded number of
//! times with a growing pause, refreshing metadata in between.

mod connection;
mod error;
mod operations;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::messages::MetadataRequest;
use kafka_protocol::ResponseError;

use connection::{AdminRequest, Connection};
pub use error::{kafka_error_name, AdminError, KafkaError};
pub use types::{
    BrokerInfo, ClusterDescription, ClusterMetadata, CreatedTopic, ElectionResult,
    OngoingReassignment, PartitionMetadata, ReassignmentTarget, TopicId, TopicMetadata,
    Unregistered,
};

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `client.id` in every request header.
    pub client_id: String,
    /// Bounds a connect and each request/response; also the `timeout_ms` sent to the
    /// broker in requests that carry one.
    pub request_timeout: Duration,
    /// How many times a call is sent at most when it keeps failing retriably.
    pub max_attempts: u32,
    /// The first pause between attempts; it doubles, up to `max_backoff`.
    pub retry_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            client_id: "rill-operator".into(),
            request_timeout: Duration::from_secs(30),
            max_attempts: 5,
            retry_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// How long an address that could not be opened is skipped.
const UNREACHABLE_PAUSE: Duration = Duration::from_secs(30);

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    AnyBroker,
    Controller,
}

pub struct AdminClient {
    config: AdminConfig,
    bootstrap: Vec<String>,
    /// node id -> advertised `host:port`, from the last Metadata answer.
    brokers: BTreeMap<i32, String>,
    controller_id: i32,
    /// Open connections by address.
    connections: HashMap<String, Connection>,
    /// Advertised addresses this client could not open lately (e.g. pod DNS names seen
    /// from outside the cluster), with when: for `UNREACHABLE_PAUSE` requests for them
    /// go to any reachable broker instead, which forwards to the controller.
    unreachable: HashMap<String, Instant>,
}

impl AdminClient {
    /// Connects to the first reachable bootstrap address and reads the cluster's
    /// brokers and controller.
    pub async fn connect(bootstrap: &[String], config: AdminConfig) -> Result<Self, AdminError> {
        let mut client = AdminClient {
            config,
            bootstrap: bootstrap.to_vec(),
            brokers: BTreeMap::new(),
            controller_id: -1,
            connections: HashMap::new(),
            unreachable: HashMap::new(),
        };
        let response = client
            .call(
                Target::AnyBroker,
                "cluster",
                |version| metadata_request(Some(&[]), version),
                |_| None,
            )
            .await?;
        client.remember_cluster(&response);
        Ok(client)
    }

    /// The controller id from the last Metadata answer, -1 if none.
    pub fn controller_id(&self) -> i32 {
        self.controller_id
    }

    /// node id -> `host:port` from the last Metadata answer.
    pub fn brokers(&self) -> &BTreeMap<i32, String> {
        &self.brokers
    }

    /// Sends the request `build` makes for the negotiated version, retrying what is
    /// retriable. `check` names the first error code in the response, if any.
    async fn call<R, B, C>(
        &mut self,
        target: Target,
        resource: &str,
        build: B,
        check: C,
    ) -> Result<R::Response, AdminError>
    where
        R: AdminRequest,
        B: Fn(i16) -> R,
        C: Fn(&R::Response) -> Option<KafkaError>,
    {
        let mut attempt = 1;
        let mut backoff = self.config.retry_backoff;
        loop {
            let error = match self.send_once(target, &build).await {
                Ok(response) => match check(&response) {
                    None => return Ok(response),
                    Some(error) => AdminError::Kafka {
                        api: R::NAME,
                        resource: resource.to_string(),
                        error,
                    },
                },
                Err(e) => e,
            };
            if !error.is_retriable() || attempt >= self.config.max_attempts {
                return Err(error);
            }
            tracing::debug!(%error, attempt, api = R::NAME, resource, "retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
            attempt += 1;
            if error.is(ResponseError::NotController) || error.kafka().is_none() {
                // Learn the new controller (or other brokers) before the next try.
                if let Err(e) = self.refresh().await {
                    tracing::debug!(error = %e, "metadata refresh failed");
                }
            }
        }
    }

    async fn send_once<R, B>(
        &mut self,
        target: Target,
        build: &B,
    ) -> Result<R::Response, AdminError>
    where
        R: AdminRequest,
        B: Fn(i16) -> R,
    {
        let addr = self.address_for(target).await?;
        let Some(connection) = self.connections.get_mut(&addr) else {
            return Err(AdminError::NoBrokerReachable {
                tried: vec![addr],
                last: "connection vanished".into(),
            });
        };
        let version = connection.version_for::<R>()?;
        let result = connection.send(&build(version), version).await;
        if let Err(e) = &result {
            if e.breaks_connection() {
                self.connections.remove(&addr);
            }
        }
        result
    }

    /// The address of an open connection to `target`, opening one if needed.
    async fn address_for(&mut self, target: Target) -> Result<String, AdminError> {
        self.unreachable
            .retain(|_, since| since.elapsed() < UNREACHABLE_PAUSE);
        if target == Target::Controller {
            if let Some(addr) = self.brokers.get(&self.controller_id).cloned() {
                if !self.unreachable.contains_key(&addr) {
                    match self.open(&addr).await {
                        Ok(()) => return Ok(addr),
                        Err(e) => {
                            tracing::warn!(%addr, error = %e, "controller unreachable, using another broker");
                            self.unreachable.insert(addr, Instant::now());
                        }
                    }
                }
            }
        }
        if let Some(addr) = self.connections.keys().next() {
            return Ok(addr.clone());
        }
        let mut candidates: Vec<String> = self.bootstrap.clone();
        for addr in self.brokers.values() {
            if !candidates.contains(addr) && !self.unreachable.contains_key(addr) {
                candidates.push(addr.clone());
            }
        }
        let mut last = String::from("no bootstrap address given");
        for addr in &candidates {
            match self.open(addr).await {
                Ok(()) => return Ok(addr.clone()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(AdminError::NoBrokerReachable {
            tried: candidates,
            last,
        })
    }

    async fn open(&mut self, addr: &str) -> Result<(), AdminError> {
        if !self.connections.contains_key(addr) {
            let connection =
                Connection::open(addr, &self.config.client_id, self.config.request_timeout).await?;
            tracing::debug!(addr = connection.addr(), "connected");
            self.connections.insert(addr.to_string(), connection);
        }
        Ok(())
    }

    /// One Metadata round without topics: brokers and controller.
    async fn refresh(&mut self) -> Result<(), AdminError> {
        let response = self
            .send_once(Target::AnyBroker, &|version| {
                metadata_request(Some(&[]), version)
            })
            .await?;
        self.remember_cluster(&response);
        Ok(())
    }

    fn remember_cluster(&mut self, response: &kafka_protocol::messages::MetadataResponse) {
        self.brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        self.controller_id = response.controller_id.0;
    }

    fn timeout_ms(&self) -> i32 {
        self.config
            .request_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32
    }
}

/// Metadata for `topics` (`None`: all), never creating one: the operator only looks.
fn metadata_request(topics: Option<&[&str]>, version: i16) -> MetadataRequest {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    let topics = topics.map(|names| {
        names
            .iter()
            .map(|n| {
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
            })
            .collect()
    });
    let mut request = MetadataRequest::default().with_topics(topics);
    // The flag exists from v4; before it, auto-creation follows the broker config.
    request.allow_auto_topic_creation = version < 4;
    request
}
