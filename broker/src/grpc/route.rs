//! QueryRoute and QueryAssignment: one broker (id 0) whose queues are the topic's queues,
//! reached at the gRPC endpoint's own address.
//!
//! The server picks queues itself (a send's queue id and a receive's queue are hints), as
//! the RocketMQ proxy does: the Node client only ever uses queue 0.

use std::net::{IpAddr, SocketAddr};

use super::codes::{ok, status};
use super::pb::{
    self, Address, AddressScheme, Assignment, Broker, Code, Endpoints, MessageQueue, MessageType,
    Permission, QueryAssignmentResponse, QueryRouteResponse,
};
use crate::server::services::Services;
use crate::store::TopicConfig;

/// The broker name every route and assignment carries.
pub(super) const BROKER_NAME: &str = "ferromq";

/// The endpoints clients reach this broker at: the host they used for the access point
/// (`asked`) with the endpoint's port; without one, the listening address (127.0.0.1 when
/// it listens on all interfaces). Exactly one address, as the clients need.
pub(super) fn advertised(asked: Option<&Endpoints>, local: SocketAddr) -> Endpoints {
    let host = asked
        .and_then(|e| e.addresses.first())
        .map(|a| a.host.clone())
        .filter(|h| !h.is_empty() && h != "0.0.0.0" && h != "::")
        .unwrap_or_else(|| {
            if local.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                local.ip().to_string()
            }
        });
    let scheme = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => AddressScheme::IPv4,
        Ok(IpAddr::V6(_)) => AddressScheme::IPv6,
        Err(_) => AddressScheme::DomainName,
    };
    Endpoints {
        scheme: scheme as i32,
        addresses: vec![Address {
            host,
            port: i32::from(local.port()),
        }],
    }
}

/// The message types a queue accepts: every type the endpoint serves.
fn accepted() -> Vec<i32> {
    [
        MessageType::Normal,
        MessageType::Fifo,
        MessageType::Delay,
        MessageType::Transaction,
    ]
    .into_iter()
    .map(|t| t as i32)
    .collect()
}

fn queue(topic: &pb::Resource, id: i32, perm: Permission, endpoints: &Endpoints) -> MessageQueue {
    MessageQueue {
        topic: Some(topic.clone()),
        id,
        permission: perm as i32,
        broker: Some(Broker {
            name: BROKER_NAME.to_owned(),
            id: 0,
            endpoints: Some(endpoints.clone()),
        }),
        accept_message_types: accepted(),
    }
}

fn permission(t: &TopicConfig) -> Permission {
    match (t.perm.read, t.perm.write) {
        (true, true) => Permission::ReadWrite,
        (true, false) => Permission::Read,
        (false, true) => Permission::Write,
        (false, false) => Permission::None,
    }
}

fn topic_not_found(name: &str) -> pb::Status {
    status(
        Code::TopicNotFound,
        format!("topic {name} does not exist (create it with `mq topic create {name}`)"),
    )
}

/// The queues of a topic.
pub(super) fn query_route(
    s: &Services,
    topic: Option<pb::Resource>,
    endpoints: &Endpoints,
) -> QueryRouteResponse {
    let topic = topic.unwrap_or_default();
    let Some(t) = s.store.topic(&topic.name) else {
        return QueryRouteResponse {
            status: Some(topic_not_found(&topic.name)),
            message_queues: Vec::new(),
        };
    };
    let perm = permission(&t);
    let message_queues = (0..t.queue_count)
        .map(|id| {
            queue(
                &topic,
                i32::try_from(id).unwrap_or(i32::MAX),
                perm,
                endpoints,
            )
        })
        .collect();
    QueryRouteResponse {
        status: Some(ok()),
        message_queues,
    }
}

/// A push consumer's assignment: the whole topic on this broker as one queue (id -1, as
/// the proxy's "broker-acting queue"); receives pop across all its queues.
pub(super) fn query_assignment(
    s: &Services,
    topic: Option<pb::Resource>,
    endpoints: &Endpoints,
) -> QueryAssignmentResponse {
    let topic = topic.unwrap_or_default();
    let Some(t) = s.store.topic(&topic.name) else {
        return QueryAssignmentResponse {
            status: Some(topic_not_found(&topic.name)),
            assignments: Vec::new(),
        };
    };
    if !t.perm.read {
        return QueryAssignmentResponse {
            status: Some(status(
                Code::Forbidden,
                format!("topic {} does not take reads", topic.name),
            )),
            assignments: Vec::new(),
        };
    }
    QueryAssignmentResponse {
        status: Some(ok()),
        assignments: vec![Assignment {
            message_queue: Some(queue(&topic, -1, permission(&t), endpoints)),
        }],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_endpoint_is_the_asked_host_with_the_grpc_port() {
        let asked = Endpoints {
            scheme: AddressScheme::IPv4 as i32,
            addresses: vec![Address {
                host: "10.1.2.3".into(),
                port: 9999,
            }],
        };
        let e = advertised(Some(&asked), "0.0.0.0:8081".parse().unwrap());
        assert_eq!(e.addresses.len(), 1);
        assert_eq!(e.addresses[0].host, "10.1.2.3");
        assert_eq!(e.addresses[0].port, 8081);
        let e = advertised(None, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(e.addresses[0].host, "127.0.0.1");
        assert_eq!(e.scheme, AddressScheme::IPv4 as i32);
        let named = Endpoints {
            scheme: AddressScheme::DomainName as i32,
            addresses: vec![Address {
                host: "mq.local".into(),
                port: 1,
            }],
        };
        let e = advertised(Some(&named), "127.0.0.1:8081".parse().unwrap());
        assert_eq!(e.scheme, AddressScheme::DomainName as i32);
    }
}
