//! Administrative calls: topics, groups, offsets, lookups and broker statistics.

use protocol::group_policy::{
    GetGroupPolicyRequest, GroupPolicyResponse, RetryPolicy, SetGroupPolicyRequest,
};
use protocol::messages::{
    CreateTopicRequest, DeleteGroupRequest, DeleteGroupResponse, DeleteTopicRequest,
    GetMessageRequest, GetTopicRequest, GroupInfoRequest, GroupInfoResponse, ListTopicsRequest,
    ListTopicsResponse, QueryMessageRequest, QueryOffsetRequest, QueueCommit, ResetOffsetRequest,
    ResetTarget, SearchOffsetRequest, StatsRequest, StatsResponse, TopicInfo, UpdateTopicRequest,
    PERM_READ, PERM_WRITE,
};
use protocol::names::{validate_any_name, validate_user_name};

use protocol::auth::{
    AclEntry, AclListRequest, AclRemoveRequest, AclSetRequest, UserAddRequest, UserAddResponse,
    UserEntry, UserListRequest, UserRemoveRequest,
};

use crate::connection::{ConnectOptions, Connection};
use crate::error::{Error, Result};
use crate::message::{decode_records, ReceivedMessage};

/// What [`Admin::query_by_key`] found.
#[derive(Debug, Default)]
pub struct KeyMatches {
    /// The messages, oldest first.
    pub messages: Vec<ReceivedMessage>,
    /// More messages match than were returned.
    pub more: bool,
}

/// Administrative calls over a connection.
#[derive(Debug, Clone)]
pub struct Admin {
    conn: Connection,
}

fn check_user_name(name: &str) -> Result<()> {
    validate_user_name(name).map_err(|source| Error::InvalidName {
        name: name.to_string(),
        source,
    })
}

fn check_any_name(name: &str) -> Result<()> {
    validate_any_name(name).map_err(|source| Error::InvalidName {
        name: name.to_string(),
        source,
    })
}

impl Admin {
    /// Connects to the broker at `addr`.
    ///
    /// # Errors
    /// As [`Connection::connect`].
    pub async fn connect(addr: &str) -> Result<Self> {
        Ok(Self::new(
            Connection::connect(addr, ConnectOptions::default()).await?,
        ))
    }

    /// Admin calls over `conn`.
    pub fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// The connection the calls go over.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Queues the broker gives a topic created on its first send (its `--default-queues`),
    /// as announced in its Hello.
    ///
    /// # Errors
    /// `Closed` when the connection has no Hello answer (it was closed).
    pub fn default_queue_count(&self) -> Result<u32> {
        self.conn
            .hello()
            .map(|h| h.default_queue_count)
            .ok_or_else(|| Error::Closed {
                addr: self.conn.addr().to_string(),
            })
    }

    /// Creates a readable and writable topic.
    ///
    /// # Errors
    /// `InvalidName`, or `Broker` with `TopicExists` and the like.
    pub async fn create_topic(&self, topic: &str, queue_count: u32) -> Result<TopicInfo> {
        check_user_name(topic)?;
        let req = CreateTopicRequest {
            topic: topic.to_string(),
            queue_count,
            perm: PERM_READ | PERM_WRITE,
        };
        Ok(self.conn.call(&req, &[]).await?.0.topic)
    }

    /// Changes a topic's queue count (grow only) and permissions.
    ///
    /// # Errors
    /// `Broker` with `TopicNotFound` and the like.
    pub async fn update_topic(&self, topic: &str, queue_count: u32, perm: u8) -> Result<TopicInfo> {
        check_any_name(topic)?;
        let req = UpdateTopicRequest {
            topic: topic.to_string(),
            queue_count,
            perm,
        };
        Ok(self.conn.call(&req, &[]).await?.0.topic)
    }

    /// # Errors
    /// `Broker` with `TopicNotFound` and the like.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        check_any_name(topic)?;
        let req = DeleteTopicRequest {
            topic: topic.to_string(),
        };
        self.conn.call(&req, &[]).await.map(|_| ())
    }

    /// A topic with each queue's min and max offset.
    ///
    /// # Errors
    /// `Broker` with `TopicNotFound` and the like.
    pub async fn get_topic(&self, topic: &str) -> Result<TopicInfo> {
        check_any_name(topic)?;
        let req = GetTopicRequest {
            topic: topic.to_string(),
        };
        Ok(self.conn.call(&req, &[]).await?.0.topic)
    }

    /// # Errors
    /// Connection failures.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<TopicInfo>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.list_topics_page(include_internal, after, 0).await?;
            all.extend(page.topics);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One page of topics in name order, starting after `after`; at most `limit` topics
    /// (0: the broker's page size). `next` in the answer is the `after` of the next page.
    ///
    /// # Errors
    /// Connection failures.
    pub async fn list_topics_page(
        &self,
        include_internal: bool,
        after: Option<String>,
        limit: u32,
    ) -> Result<ListTopicsResponse> {
        let req = ListTopicsRequest {
            include_internal,
            after,
            limit,
        };
        Ok(self.conn.call(&req, &[]).await?.0)
    }

    /// Members, their queues, and per queue the committed offset and lag.
    ///
    /// # Errors
    /// `Broker` with `NotFound` for an unknown group, and the like.
    pub async fn group_info(&self, group: &str) -> Result<GroupInfoResponse> {
        check_any_name(group)?;
        let req = GroupInfoRequest {
            group: group.to_string(),
        };
        Ok(self.conn.call(&req, &[]).await?.0)
    }

    /// The in-flight leases of a group that consumes by receive, per queue.
    ///
    /// # Errors
    /// Connection failures; an invalid group name.
    pub async fn lease_info(&self, group: &str) -> Result<protocol::receive::LeaseInfoResponse> {
        check_any_name(group)?;
        let req = protocol::receive::LeaseInfoRequest {
            group: group.to_string(),
        };
        Ok(self.conn.call(&req, &[]).await?.0)
    }

    /// Deletes a consumer group: its committed offsets and its `%RETRY%` and `%DLQ%`
    /// topics. Refused (`GroupHasMembers`) while it has live members unless `force`.
    ///
    /// # Errors
    /// Connection failures; `GroupHasMembers`; `NotFound` for a group the broker does not
    /// know.
    pub async fn delete_group(&self, group: &str, force: bool) -> Result<DeleteGroupResponse> {
        check_user_name(group)?;
        let req = DeleteGroupRequest {
            group: group.to_string(),
            force,
        };
        Ok(self.conn.call(&req, &[]).await?.0)
    }

    /// Sets a group's own retry policy (max attempts, and a delay table or exponential
    /// backoff); it is on the broker's disk when this returns and applies to every retry
    /// of the group from then on. `None` resets the group to the broker's defaults.
    /// Answers the group's policy now in force.
    ///
    /// # Errors
    /// `InvalidRetryPolicy` for a policy out of range; `Broker` with `BadRequest` for a
    /// delay over the broker's `--max-timer-delay-ms`; an invalid group name; connection
    /// failures.
    pub async fn set_group_policy(
        &self,
        group: &str,
        policy: Option<RetryPolicy>,
    ) -> Result<GroupPolicyResponse> {
        check_user_name(group)?;
        if let Some(p) = &policy {
            // The broker also checks the delays against its timer's maximum.
            p.validate(u64::MAX)?;
        }
        let req = SetGroupPolicyRequest {
            group: group.to_string(),
            policy,
        };
        Ok(self.conn.call(&req, &[]).await?.0)
    }

    /// A group's own retry policy, if any, and the one in force (the broker's defaults
    /// for a group without one).
    ///
    /// # Errors
    /// An invalid group name; connection failures.
    pub async fn group_policy(&self, group: &str) -> Result<GroupPolicyResponse> {
        check_user_name(group)?;
        let req = GetGroupPolicyRequest {
            group: group.to_string(),
        };
        Ok(self.conn.call(&req, &[]).await?.0)
    }

    /// The group's committed progress on one queue.
    ///
    /// # Errors
    /// Connection failures and refusals.
    pub async fn committed(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
    ) -> Result<Option<QueueCommit>> {
        let req = QueryOffsetRequest {
            group: group.to_string(),
            topic: topic.to_string(),
            queue_id,
        };
        Ok(self.conn.call(&req, &[]).await?.0.committed)
    }

    /// Moves a group's offsets on every queue of a topic.
    ///
    /// # Errors
    /// `Broker` with `GroupHasMembers` unless `force`, and the like.
    pub async fn reset_offset(
        &self,
        group: &str,
        topic: &str,
        to: ResetTarget,
        force: bool,
    ) -> Result<Vec<QueueCommit>> {
        check_any_name(group)?;
        check_any_name(topic)?;
        let req = ResetOffsetRequest {
            group: group.to_string(),
            topic: topic.to_string(),
            to,
            force,
        };
        Ok(self.conn.call(&req, &[]).await?.0.queues)
    }

    /// The first offset of a queue stored at or after `timestamp_ms`.
    ///
    /// # Errors
    /// Connection failures and refusals.
    pub async fn search_offset(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: u64,
    ) -> Result<u64> {
        let req = SearchOffsetRequest {
            topic: topic.to_string(),
            queue_id,
            timestamp_ms,
        };
        Ok(self.conn.call(&req, &[]).await?.0.offset)
    }

    /// One message by its id.
    ///
    /// # Errors
    /// `Broker` with `NotFound`, or `Record` when the returned record does not decode.
    pub async fn get_message(&self, msg_id: &str) -> Result<ReceivedMessage> {
        let req = GetMessageRequest {
            msg_id: msg_id.to_string(),
        };
        let (_, body) = self.conn.call(&req, &[]).await?;
        ReceivedMessage::decode(&body)
    }

    /// # Errors
    /// Connection failures.
    pub async fn stats(&self) -> Result<StatsResponse> {
        Ok(self.conn.call(&StatsRequest {}, &[]).await?.0)
    }

    /// The messages of `topic` whose keys include `key`, stored within `[from_ms, to_ms]`
    /// (store time, ms since the epoch): the newest `max` of them, oldest first, found
    /// through the broker's key index.
    ///
    /// # Errors
    /// `InvalidName`; `Broker` with `TopicNotFound`, `BadRequest` (empty key, `max` out
    /// of 1..=10,000, `from_ms > to_ms`), `Forbidden` (key index off), `StorageError` (the
    /// index is being rebuilt); `Record` when a returned record does not decode.
    pub async fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        from_ms: u64,
        to_ms: u64,
        max: u32,
    ) -> Result<KeyMatches> {
        check_any_name(topic)?;
        let req = QueryMessageRequest {
            topic: topic.to_string(),
            key: key.to_string(),
            from_ms,
            to_ms,
            max_messages: max,
        };
        let (resp, body) = self.conn.call(&req, &[]).await?;
        let mut messages = Vec::with_capacity(resp.count as usize);
        decode_records(&body, resp.count, &mut messages)?;
        Ok(KeyMatches {
            messages,
            more: resp.more,
        })
    }

    // ---- users and access rules (an administrator's calls when auth is on) ----

    /// Adds a user; answers its access key and its generated secret key, which the broker
    /// never shows again.
    ///
    /// # Errors
    /// `Broker` with `BadRequest` (exists already, bad name) or `AccessDenied`.
    pub async fn add_user(&self, name: &str, admin: bool) -> Result<UserAddResponse> {
        let req = UserAddRequest {
            name: name.to_string(),
            admin,
        };
        Ok(self.conn.call(&req, &[]).await?.0)
    }

    /// Every user, without secrets, sorted by access key.
    ///
    /// # Errors
    /// `Broker` with `AccessDenied`.
    pub async fn list_users(&self) -> Result<Vec<UserEntry>> {
        Ok(self.conn.call(&UserListRequest {}, &[]).await?.0.users)
    }

    /// Removes a user and its rules.
    ///
    /// # Errors
    /// `Broker` with `NotFound` or `AccessDenied`.
    pub async fn remove_user(&self, name: &str) -> Result<()> {
        let req = UserRemoveRequest {
            name: name.to_string(),
        };
        self.conn.call(&req, &[]).await?;
        Ok(())
    }

    /// Sets a user's rule on a resource (`topic:NAME`, `group:PREFIX*`): the actions
    /// (`pub`, `sub`, `admin`) it allows or denies. Replaces the user's rule on the same
    /// resource.
    ///
    /// # Errors
    /// `Broker` with `BadRequest` (a word that does not parse), `NotFound` (no such
    /// user) or `AccessDenied`.
    pub async fn set_acl(
        &self,
        user: &str,
        resource: &str,
        actions: &[&str],
        decision: &str,
    ) -> Result<()> {
        let req = AclSetRequest {
            rule: AclEntry {
                user: user.to_string(),
                resource: resource.to_string(),
                actions: actions.iter().map(ToString::to_string).collect(),
                decision: decision.to_string(),
            },
        };
        self.conn.call(&req, &[]).await?;
        Ok(())
    }

    /// Rules of one user, or of everyone.
    ///
    /// # Errors
    /// `Broker` with `NotFound` or `AccessDenied`.
    pub async fn list_acls(&self, user: Option<&str>) -> Result<Vec<AclEntry>> {
        let req = AclListRequest {
            user: user.map(ToString::to_string),
        };
        Ok(self.conn.call(&req, &[]).await?.0.rules)
    }

    /// Removes a user's rule on a resource.
    ///
    /// # Errors
    /// `Broker` with `NotFound` or `AccessDenied`.
    pub async fn remove_acl(&self, user: &str, resource: &str) -> Result<()> {
        let req = AclRemoveRequest {
            user: user.to_string(),
            resource: resource.to_string(),
        };
        self.conn.call(&req, &[]).await?;
        Ok(())
    }

    /// The broker's replication state: role, epoch, master, watermarks, replicas and lag.
    ///
    /// # Errors
    /// Connection failures.
    pub async fn cluster_status(&self) -> Result<protocol::cluster::ClusterStatusResponse> {
        let req = protocol::cluster::ClusterStatusRequest {};
        Ok(self.conn.call(&req, &[]).await?.0)
    }

    /// Turns this broker, a replica, into its group's master with an epoch of at least
    /// `min_epoch`.
    ///
    /// # Errors
    /// `Broker` with `BadRequest` (standalone, already master, or the epoch could not be
    /// written); connection failures.
    pub async fn cluster_promote(
        &self,
        min_epoch: u64,
    ) -> Result<protocol::cluster::ClusterPromoteResponse> {
        let req = protocol::cluster::ClusterPromoteRequest { min_epoch };
        Ok(self.conn.call(&req, &[]).await?.0)
    }
}
