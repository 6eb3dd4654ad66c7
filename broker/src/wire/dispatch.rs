//! Decodes one request frame, checks its API and version, and routes it to its
//! handler. Anything the protocol gives no way to answer closes the connection, as
//! Apache Kafka does; everything else is answered with the client's error codes.

use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::decode_request_header_from_buffer;

use super::response::{encode, ResponseFrame};
use super::{
    admin, api_versions, cluster, configs, fetch, groups, init_producer_id, list_offsets, metadata,
    offsets, produce, replication, request_shape, Context,
};

pub enum Outcome {
    Respond(ResponseFrame),
    /// Produce with acks=0: the client expects silence.
    NoResponse,
    Close(String),
}

pub async fn handle(ctx: &Context, mut frame: Bytes) -> Outcome {
    if frame.len() < 8 {
        return Outcome::Close(format!(
            "frame of {} bytes is shorter than a request header",
            frame.len()
        ));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(key) else {
        return Outcome::Close(format!("unknown API key {key}"));
    };
    if !api_versions::is_supported(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            return respond(encode(
                correlation_id,
                0,
                &api_versions::unsupported_version(),
            ));
        }
        return Outcome::Close(format!("unsupported version {version} of {api_key:?}"));
    }
    // Before the crate decodes anything: it sizes arrays from the counts on the wire.
    if let Err(e) = request_shape::check(api_key, version, &frame) {
        return Outcome::Close(format!("malformed {api_key:?} v{version} request: {e}"));
    }
    let header = match decode_request_header_from_buffer(&mut frame) {
        Ok(h) => h,
        Err(e) => return Outcome::Close(format!("malformed {api_key:?} request header: {e}")),
    };
    let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
    let request = match RequestKind::decode(api_key, &mut frame, version) {
        Ok(r) => r,
        Err(e) => return Outcome::Close(format!("malformed {api_key:?} v{version} request: {e}")),
    };
    let api = format!("{api_key:?}");
    let started = Instant::now();
    let outcome = route(ctx, request, version, correlation_id, client_id).await;
    ctx.metrics
        .requests
        .with_label_values(&[api.as_str()])
        .inc();
    ctx.metrics
        .request_duration
        .with_label_values(&[api.as_str()])
        .observe(started.elapsed().as_secs_f64());
    outcome
}

async fn route(
    ctx: &Context,
    request: RequestKind,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> Outcome {
    let c = correlation_id;
    match request {
        // The handlers that wait: long-poll fetches and rebalances.
        RequestKind::Fetch(r) => respond(fetch::handle(ctx, r, version, c).await),
        RequestKind::JoinGroup(r) => respond(encode(
            c,
            version,
            &groups::join_group(ctx, r, version, client_id).await,
        )),
        RequestKind::SyncGroup(r) => respond(encode(c, version, &groups::sync_group(ctx, r).await)),
        // The group coordinator appends under a shard lock, then awaits the ISR with no
        // lock held: these never block a runtime worker.
        RequestKind::Heartbeat(r) => respond(encode(c, version, &groups::heartbeat(ctx, r).await)),
        RequestKind::LeaveGroup(r) => respond(encode(
            c,
            version,
            &groups::leave_group(ctx, r, version).await,
        )),
        RequestKind::ListGroups(r) => {
            respond(encode(c, version, &groups::list_groups(ctx, r).await))
        }
        RequestKind::DescribeGroups(r) => respond(encode(
            c,
            version,
            &groups::describe_groups(ctx, r, version).await,
        )),
        RequestKind::DeleteGroups(r) => {
            respond(encode(c, version, &groups::delete_groups(ctx, r).await))
        }
        RequestKind::OffsetCommit(r) => respond(encode(
            c,
            version,
            &offsets::offset_commit(ctx, r, version).await,
        )),
        RequestKind::OffsetFetch(r) => respond(encode(
            c,
            version,
            &offsets::offset_fetch(ctx, r, version).await,
        )),
        RequestKind::OffsetDelete(r) => {
            respond(encode(c, version, &offsets::offset_delete(ctx, r).await))
        }
        // Appends block (in place); acks=all then waits for the ISR.
        RequestKind::Produce(r) => match produce::handle(ctx, r, version).await {
            Some(response) => respond(encode(c, version, &response)),
            None => Outcome::NoResponse,
        },
        // Handlers that wait for the metadata quorum (topic and partition changes,
        // auto-creation, producer-id blocks, creation of `__consumer_offsets`) await it.
        RequestKind::Metadata(r) => {
            respond(encode(c, version, &metadata::handle(ctx, r, version).await))
        }
        RequestKind::CreateTopics(r) => respond(encode(
            c,
            version,
            &admin::create_topics(ctx, r, version).await,
        )),
        RequestKind::DeleteTopics(r) => respond(encode(
            c,
            version,
            &admin::delete_topics(ctx, r, version).await,
        )),
        RequestKind::CreatePartitions(r) => {
            respond(encode(c, version, &admin::create_partitions(ctx, r).await))
        }
        RequestKind::IncrementalAlterConfigs(r) => respond(encode(
            c,
            version,
            &configs::incremental_alter(ctx, r).await,
        )),
        RequestKind::UnregisterBroker(r) => respond(encode(
            c,
            version,
            &cluster::unregister_broker(ctx, r).await,
        )),
        RequestKind::InitProducerId(r) => {
            respond(encode(c, version, &init_producer_id::handle(ctx, r).await))
        }
        RequestKind::FindCoordinator(r) => respond(encode(
            c,
            version,
            &groups::find_coordinator(ctx, r, version).await,
        )),
        RequestKind::ElectLeaders(r) => respond(encode(
            c,
            version,
            &replication::elect_leaders(ctx, r, version).await,
        )),
        RequestKind::AlterPartitionReassignments(r) => respond(encode(
            c,
            version,
            &replication::alter_reassignments(ctx, r).await,
        )),
        // DeleteRecords moves the log start on disk: it runs where blocking is
        // allowed, so other connections keep being served.
        r if writes_to_disk(&r) => tokio::task::block_in_place(|| route_now(ctx, r, version, c)),
        r => route_now(ctx, r, version, c),
    }
}

fn writes_to_disk(request: &RequestKind) -> bool {
    matches!(request, RequestKind::DeleteRecords(_))
}

/// The handlers that answer without waiting.
fn route_now(ctx: &Context, request: RequestKind, version: i16, c: i32) -> Outcome {
    match request {
        RequestKind::ApiVersions(r) => respond(encode(c, version, &api_versions::handle(r))),
        RequestKind::ListOffsets(r) => {
            respond(encode(c, version, &list_offsets::handle(ctx, r, version)))
        }
        RequestKind::DeleteRecords(r) => {
            respond(encode(c, version, &admin::delete_records(ctx, r)))
        }
        RequestKind::DescribeConfigs(r) => {
            respond(encode(c, version, &configs::describe(ctx, r, version)))
        }
        RequestKind::DescribeCluster(r) => {
            respond(encode(c, version, &cluster::describe(ctx, r, version)))
        }
        RequestKind::OffsetForLeaderEpoch(r) => respond(encode(
            c,
            version,
            &replication::offset_for_leader_epoch(ctx, r),
        )),
        RequestKind::ListPartitionReassignments(r) => {
            respond(encode(c, version, &replication::list_reassignments(ctx, r)))
        }
        // `api_versions::is_supported` lets through only APIs handled above.
        _ => Outcome::Close("request for an API this broker does not handle".into()),
    }
}

fn respond<E: std::fmt::Display>(encoded: Result<ResponseFrame, E>) -> Outcome {
    match encoded {
        Ok(frame) => Outcome::Respond(frame),
        Err(e) => Outcome::Close(e.to_string()),
    }
}
