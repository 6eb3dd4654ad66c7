//! The consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups, DeleteGroups. The rules live in
//! `crate::group`; this module translates requests and responses.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::group::JoinRequest;

const KEY_TYPE_GROUP: i8 = 0;

fn code(r: Result<(), ResponseError>) -> i16 {
    r.err().map_or(0, |e| e.code())
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// The coordinator of one key: the broker leading the group's `__consumer_offsets`
/// partition, as (node id, host, port).
async fn lookup_coordinator(
    ctx: &Context,
    key_type: i8,
    key: &str,
) -> Result<(i32, String, i32), ResponseError> {
    if key_type != KEY_TYPE_GROUP {
        // Transactions and share groups are not implemented. A retriable error would
        // leave a transactional producer waiting out max.block.ms; this one fails
        // it at once, as InitProducerId does for a transactional id.
        return Err(ResponseError::UnsupportedVersion);
    }
    let leader = ctx.groups.find_coordinator(key).await?;
    let image = ctx.replicas.cluster().image();
    let b = image
        .brokers
        .get(&leader)
        .filter(|_| image.is_active(leader))
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((
        leader,
        b.endpoints.kafka_host.clone(),
        b.endpoints.kafka_port as i32,
    ))
}

pub async fn find_coordinator(
    ctx: &Context,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version < 4 {
        return match lookup_coordinator(ctx, request.key_type, request.key.as_str()).await {
            Ok((id, host, port)) => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(id))
                .with_host(s(host))
                .with_port(port),
            Err(e) => FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_error_message(Some(s(e.to_string()))),
        };
    }
    let mut coordinators = Vec::with_capacity(request.coordinator_keys.len());
    for key in &request.coordinator_keys {
        let c = Coordinator::default().with_key(key.clone());
        coordinators.push(
            match lookup_coordinator(ctx, request.key_type, key.as_str()).await {
                Ok((id, host, port)) => c
                    .with_node_id(BrokerId(id))
                    .with_host(s(host))
                    .with_port(port),
                Err(e) => c
                    .with_node_id(BrokerId(-1))
                    .with_error_code(e.code())
                    .with_error_message(Some(s(e.to_string()))),
            },
        );
    }
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

pub async fn join_group(
    ctx: &Context,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> JoinGroupResponse {
    let rebalance_timeout_ms = if version == 0 {
        request.session_timeout_ms
    } else {
        request.rebalance_timeout_ms
    };
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|i| i.to_string()),
        client_id: client_id.to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms,
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let r = ctx.groups.join(request.group_id.0.as_str(), join).await;
    JoinGroupResponse::default()
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_generation_id(r.generation)
        .with_protocol_type(r.protocol_type.map(s))
        .with_protocol_name(r.protocol_name.map(s))
        .with_leader(s(r.leader))
        .with_member_id(s(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(instance.map(s))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

pub async fn sync_group(ctx: &Context, request: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let r = ctx
        .groups
        .sync(
            request.group_id.0.as_str(),
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|i| i.as_str()),
            request.generation_id,
            assignments,
        )
        .await;
    SyncGroupResponse::default()
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_protocol_type(r.protocol_type.map(s))
        .with_protocol_name(r.protocol_name.map(s))
        .with_assignment(r.assignment)
}

pub async fn heartbeat(ctx: &Context, request: HeartbeatRequest) -> HeartbeatResponse {
    let result = ctx
        .groups
        .heartbeat(
            request.group_id.0.as_str(),
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|i| i.as_str()),
            request.generation_id,
        )
        .await;
    HeartbeatResponse::default().with_error_code(code(result))
}

pub async fn leave_group(
    ctx: &Context,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    // v0-2 name one member; v3+ a batch, possibly by group.instance.id.
    let members: Vec<(String, Option<String>)> = if version < 3 {
        vec![(request.member_id.to_string(), None)]
    } else {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    };
    match ctx
        .groups
        .leave(request.group_id.0.as_str(), &members)
        .await
    {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(results) if version < 3 => LeaveGroupResponse::default()
            .with_error_code(results.into_iter().next().map_or(0, code)),
        Ok(results) => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(results)
                .map(|((id, instance), r)| {
                    MemberResponse::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(instance.map(s))
                        .with_error_code(code(r))
                })
                .collect(),
        ),
    }
}

pub async fn list_groups(ctx: &Context, request: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let groups = ctx
        .groups
        .list_groups()
        .await
        .into_iter()
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.to_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|(id, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(s(id)))
                .with_protocol_type(s(protocol_type))
                .with_group_state(s(state))
                .with_group_type(s("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe_groups(
    ctx: &Context,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let base = DescribedGroup::default().with_group_id(group_id.clone());
        let described = match ctx.groups.describe_group(group_id.0.as_str()).await {
            Err(e) => base.with_error_code(e.code()),
            // Kafka answers an unknown group as Dead, with an error from v6.
            Ok(None) => {
                let base = base.with_group_state(s("Dead"));
                if version >= 6 {
                    base.with_error_code(ResponseError::GroupIdNotFound.code())
                } else {
                    base
                }
            }
            Ok(Some(g)) => base
                .with_authorized_operations(if request.include_authorized_operations {
                    super::authorized_operations::group()
                } else {
                    i32::MIN
                })
                .with_group_state(s(g.state))
                .with_protocol_type(s(g.protocol_type))
                .with_protocol_data(s(g.protocol))
                .with_members(
                    g.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(s))
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
        };
        groups.push(described);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(ctx: &Context, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for g in request.groups_names {
        let r = ctx.groups.delete_group(g.0.as_str()).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(code(r)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
