//! What each request needs: every native request code and every RocketMQ 5 gRPC method is
//! classified here, and the topic and group a native request names are read from its
//! header. A code without a rule is refused (and a test fails until it has one).

use protocol::{header, ProtocolError, RequestCode};
use serde::de::DeserializeOwned;

use super::users::Action;

/// What a request needs from the user who sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Served before authentication: the version and authentication handshakes.
    Open,
    /// Any authenticated user (metadata, transaction bookkeeping by id).
    Authenticated,
    /// The action on the topic the request names.
    Topic(Action),
    /// The action on the group the request names.
    Group(Action),
    /// `sub` on the topic and on the group: consuming a topic as a group.
    Consume,
    /// An administrator only (user and rule management, broker-wide reads).
    Admin,
}

/// The rule of a native request code; `None` for a code nobody classified yet, which
/// the broker refuses when authentication is on.
pub fn classify(code: RequestCode) -> Option<Requirement> {
    use Action::{Admin, Pub, Sub};
    use RequestCode as C;
    use Requirement as R;
    Some(match code {
        C::Hello | C::AuthChallenge | C::Authenticate => R::Open,
        C::GetTopic
        | C::ListTopics
        | C::BrokerStats
        | C::TxRegister
        | C::TxBegin
        | C::TxCommit
        | C::TxRollback
        | C::TxCheck => R::Authenticated,
        C::CreateTopic | C::UpdateTopic | C::DeleteTopic => R::Topic(Admin),
        C::Send | C::SendTimer | C::Recall | C::TxSend => R::Topic(Pub),
        C::SearchOffset | C::QueryMessage => R::Topic(Sub),
        C::Pull | C::QueryOffset | C::Receive => R::Consume,
        C::CommitOffset
        | C::Heartbeat
        | C::LeaveGroup
        | C::GroupInfo
        | C::SendBack
        | C::AckMessages
        | C::ChangeInvisibility
        | C::Reject
        | C::LeaseInfo
        | C::LockBatch
        | C::UnlockBatch
        | C::GetGroupPolicy
        | C::TxAck => R::Group(Sub),
        C::ResetOffset | C::DeleteGroup | C::SetGroupPolicy => R::Group(Admin),
        C::GetMessage
        | C::TxList
        | C::UserAdd
        | C::UserList
        | C::UserRemove
        | C::AclSet
        | C::AclList
        | C::AclRemove
        | C::ClusterStatus
        | C::ClusterPromote => R::Admin,
        _ => return None,
    })
}

/// The rule of a RocketMQ 5 `MessagingService` method, by its name (`SendMessage`) or
/// its path (`/apache.rocketmq.v2.MessagingService/SendMessage`). The gRPC endpoint takes
/// the topic and group from the request message and calls
/// [`crate::security::Security::authorize`].
pub fn classify_grpc(method: &str) -> Option<Requirement> {
    use Action::Pub;
    use Requirement as R;
    let name = method.rsplit('/').next().unwrap_or(method);
    Some(match name {
        "QueryRoute" | "Heartbeat" | "Telemetry" | "NotifyClientTermination" => R::Authenticated,
        "SendMessage" | "EndTransaction" | "RecallMessage" => R::Topic(Pub),
        "QueryAssignment"
        | "ReceiveMessage"
        | "AckMessage"
        | "ForwardMessageToDeadLetterQueue"
        | "ChangeInvisibleDuration"
        | "PullMessage"
        | "UpdateOffset"
        | "GetOffset"
        | "QueryOffset" => R::Consume,
        _ => return None,
    })
}

/// The topic and group a request names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Named {
    /// The topic, for requests about one.
    pub topic: Option<String>,
    /// The group, for requests about one.
    pub group: Option<String>,
}

fn decoded<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    header::decode(bytes)
}

/// Reads the topic and group out of a native request's header; only the codes whose
/// requirement names one are decoded (once per request, never per message).
///
/// # Errors
/// When the header does not decode as the code's request type.
pub fn named(code: RequestCode, bytes: &[u8]) -> Result<Named, ProtocolError> {
    use protocol::messages as m;
    use protocol::{group_policy as gp, ordered as o, receive as r, tx};
    use RequestCode as C;
    let topic = |t: String| Named {
        topic: Some(t),
        group: None,
    };
    let group = |g: String| Named {
        topic: None,
        group: Some(g),
    };
    let both = |t: String, g: String| Named {
        topic: Some(t),
        group: Some(g),
    };
    Ok(match code {
        C::CreateTopic => topic(decoded::<m::CreateTopicRequest>(bytes)?.topic),
        C::UpdateTopic => topic(decoded::<m::UpdateTopicRequest>(bytes)?.topic),
        C::DeleteTopic => topic(decoded::<m::DeleteTopicRequest>(bytes)?.topic),
        C::Send => topic(decoded::<m::SendRequest>(bytes)?.topic),
        C::SendTimer => topic(decoded::<m::SendTimerRequest>(bytes)?.topic),
        C::Recall => topic(decoded::<m::RecallRequest>(bytes)?.topic),
        C::TxSend => topic(decoded::<tx::TxSendRequest>(bytes)?.topic),
        C::SearchOffset => topic(decoded::<m::SearchOffsetRequest>(bytes)?.topic),
        C::QueryMessage => topic(decoded::<m::QueryMessageRequest>(bytes)?.topic),
        C::Pull => {
            let p = decoded::<m::PullRequest>(bytes)?;
            both(p.topic, p.group)
        }
        C::QueryOffset => {
            let q = decoded::<m::QueryOffsetRequest>(bytes)?;
            both(q.topic, q.group)
        }
        C::Receive => {
            let q = decoded::<r::ReceiveRequest>(bytes)?;
            both(q.topic, q.group)
        }
        C::CommitOffset => group(decoded::<m::CommitOffsetRequest>(bytes)?.group),
        C::Heartbeat => group(decoded::<m::HeartbeatRequest>(bytes)?.group),
        C::LeaveGroup => group(decoded::<m::LeaveGroupRequest>(bytes)?.group),
        C::GroupInfo => group(decoded::<m::GroupInfoRequest>(bytes)?.group),
        C::SendBack => group(decoded::<m::SendBackRequest>(bytes)?.group),
        C::AckMessages => group(decoded::<r::AckMessagesRequest>(bytes)?.group),
        C::ChangeInvisibility => group(decoded::<r::ChangeInvisibilityRequest>(bytes)?.group),
        C::Reject => group(decoded::<r::RejectRequest>(bytes)?.group),
        C::LeaseInfo => group(decoded::<r::LeaseInfoRequest>(bytes)?.group),
        C::LockBatch => group(decoded::<o::LockBatchRequest>(bytes)?.group),
        C::UnlockBatch => group(decoded::<o::UnlockBatchRequest>(bytes)?.group),
        C::GetGroupPolicy => group(decoded::<gp::GetGroupPolicyRequest>(bytes)?.group),
        C::SetGroupPolicy => group(decoded::<gp::SetGroupPolicyRequest>(bytes)?.group),
        C::TxAck => group(decoded::<tx::TxAckRequest>(bytes)?.group),
        C::ResetOffset => {
            let q = decoded::<m::ResetOffsetRequest>(bytes)?;
            both(q.topic, q.group)
        }
        C::DeleteGroup => group(decoded::<m::DeleteGroupRequest>(bytes)?.group),
        _ => Named::default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every request code the protocol knows has a rule: adding a code without deciding
    /// who may send it fails here.
    #[test]
    fn every_request_code_is_classified() {
        let mut seen = 0;
        for value in 0..=u16::MAX {
            if let Ok(code) = RequestCode::try_from(value) {
                seen += 1;
                assert!(
                    classify(code).is_some(),
                    "request code {code:?} ({value}) has no access rule"
                );
            }
        }
        assert!(seen > 40, "only {seen} codes enumerated");
    }

    /// Every requirement that names a topic or group can read it from the header.
    #[test]
    fn codes_that_need_a_name_read_it_from_their_header() {
        let send = header::encode(&protocol::messages::SendRequest {
            topic: "t".into(),
            queue_id: 0,
            count: 1,
        })
        .unwrap();
        let named_send = named(RequestCode::Send, &send).unwrap();
        assert_eq!(named_send.topic.as_deref(), Some("t"));
        for value in 0..=u16::MAX {
            let Ok(code) = RequestCode::try_from(value) else {
                continue;
            };
            let needs = matches!(
                classify(code),
                Some(Requirement::Topic(_) | Requirement::Group(_) | Requirement::Consume)
            );
            // An empty header is no request type that names something: a code that needs
            // a name and does not fail here never decodes its header.
            if needs {
                assert!(
                    named(code, &[]).is_err(),
                    "{code:?} does not read its header"
                );
            }
        }
    }

    #[test]
    fn grpc_methods_by_name_or_path() {
        assert_eq!(
            classify_grpc("SendMessage"),
            Some(Requirement::Topic(Action::Pub))
        );
        assert_eq!(
            classify_grpc("/apache.rocketmq.v2.MessagingService/ReceiveMessage"),
            Some(Requirement::Consume)
        );
        assert_eq!(classify_grpc("Telemetry"), Some(Requirement::Authenticated));
        assert_eq!(classify_grpc("DropEverything"), None);
    }
}
