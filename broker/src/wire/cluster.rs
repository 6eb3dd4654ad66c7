//! The cluster's brokers: DescribeCluster (the cluster id, the controller and the
//! brokers) and UnregisterBroker (an operator forgets a broker removed for good).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, UnregisterBrokerRequest,
    UnregisterBrokerResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::cluster::Command;

/// Endpoint types of DescribeCluster v1+: 1 = brokers, 2 = controllers.
const ENDPOINT_BROKERS: i8 = 1;

pub fn describe(
    ctx: &Context,
    request: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let cluster = ctx.replicas.cluster();
    let controller = super::client_controller_id(ctx);
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(StrBytes::from_string(ctx.replicas.cluster_id()))
        .with_controller_id(BrokerId(controller))
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            super::authorized_operations::cluster()
        } else {
            i32::MIN
        });
    // A single combined node serves both kinds of endpoint on the same listener.
    if request.endpoint_type != ENDPOINT_BROKERS && request.endpoint_type != 2 {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str("unknown endpoint type")));
    }
    // Every registered broker, fenced ones flagged (v2), as Kafka answers.
    let image = cluster.image();
    let brokers = image
        .brokers
        .values()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.broker_id))
                .with_host(StrBytes::from_string(b.endpoints.kafka_host.clone()))
                .with_port(b.endpoints.kafka_port as i32)
                .with_rack(b.rack.clone().map(StrBytes::from_string))
                .with_is_fenced(version >= 2 && b.fenced)
        })
        .collect();
    response.with_brokers(brokers)
}

/// UnregisterBroker (`kafka-cluster.sh unregister`): the removal goes through the metadata
/// quorum; the active controller then drops the node from the Raft learners. A voter
/// cannot be unregistered: the voter set is fixed, and it would register again anyway.
pub async fn unregister_broker(
    ctx: &Context,
    request: UnregisterBrokerRequest,
) -> UnregisterBrokerResponse {
    let broker_id = request.broker_id.0;
    let response = UnregisterBrokerResponse::default();
    if ctx
        .replicas
        .config()
        .cluster
        .voters
        .contains_key(&broker_id)
    {
        return response
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(StrBytes::from_string(format!(
                "Broker {broker_id} is a controller (a voter in controller.quorum.voters) \
                 and cannot be unregistered: the voter set of the metadata quorum is fixed"
            ))));
    }
    match ctx
        .replicas
        .cluster()
        .propose(Command::UnregisterBroker { broker_id })
        .await
    {
        Ok(_) => {
            tracing::info!(broker = broker_id, "broker unregistered");
            response
        }
        Err(e) => response
            .with_error_code(e.code())
            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
    }
}
