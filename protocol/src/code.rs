//! Request codes and response statuses, both `u16` on the wire.

use crate::ProtocolError;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, $err:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl TryFrom<u16> for $name {
            type Error = ProtocolError;

            fn try_from(value: u16) -> Result<Self, ProtocolError> {
                match value {
                    $($value => Ok(Self::$variant),)+
                    other => Err(ProtocolError::$err(other)),
                }
            }
        }

        impl From<$name> for u16 {
            fn from(value: $name) -> u16 {
                value as u16
            }
        }
    };
}

wire_enum!(
    /// What a request asks for. Each code has one header type in [`crate::messages`].
    RequestCode, UnknownCode {
        /// Version handshake; the first request on a connection.
        Hello = 1,
        /// Creates a topic.
        CreateTopic = 10,
        /// Grows a topic's queues or changes its permissions.
        UpdateTopic = 11,
        /// Removes a topic and its messages.
        DeleteTopic = 12,
        /// Reads one topic.
        GetTopic = 13,
        /// Lists topics, a page at a time.
        ListTopics = 14,
        /// One message or a batch, to one queue of a topic.
        Send = 20,
        /// Reads messages of one queue.
        Pull = 30,
        /// Records a group's progress.
        CommitOffset = 40,
        /// Reads a group's progress on one queue.
        QueryOffset = 41,
        /// Joins a group or keeps a member alive; answers its queues.
        Heartbeat = 42,
        /// A member leaves its group.
        LeaveGroup = 43,
        /// Reads a group's members and lag.
        GroupInfo = 44,
        /// Moves a group's offsets on a topic.
        ResetOffset = 45,
        /// A consumer hands back a message it failed to process (a nack).
        SendBack = 46,
        /// Removes a group's offsets and its retry and dead-letter topics.
        DeleteGroup = 47,
        /// Finds the queue offset of a point in time.
        SearchOffset = 50,
        /// Reads one message by id.
        GetMessage = 51,
        /// Reads the broker's counters.
        BrokerStats = 52,
        /// Receives messages under an invisibility lease ([`crate::receive`]).
        Receive = 60,
        /// Acknowledges received messages by their receipt handles.
        AckMessages = 61,
        /// Moves a lease's deadline; answers a new handle.
        ChangeInvisibility = 62,
        /// Sends a received (or pulled) message straight to the group's dead-letter queue.
        Reject = 63,
        /// In-flight leases of a group, per queue.
        LeaseInfo = 64,
        /// A message or batch delivered to its queue at a given time (timer messages).
        SendTimer = 21,
        /// Removes a timer message that is not yet due.
        Recall = 22,
        /// Sets or removes a consumer group's retry policy ([`crate::group_policy`]).
        SetGroupPolicy = 90,
        /// Reads a consumer group's retry policy.
        GetGroupPolicy = 91,
        /// Takes or renews queue locks for ordered consumption ([`crate::ordered`]).
        LockBatch = 85,
        /// Releases queue locks ([`crate::ordered`]).
        UnlockBatch = 86,
        /// Names the connection a live producer of a producer group (check-backs go there).
        TxRegister = 70,
        /// Opens a transaction ([`crate::tx`]).
        TxBegin = 71,
        /// Adds messages (half messages, invisible until commit) to a transaction.
        TxSend = 72,
        /// Adds acknowledgements of consumed messages to a transaction.
        TxAck = 73,
        /// Commits a transaction: its sends and acks take effect together.
        TxCommit = 74,
        /// Rolls a transaction back: none of it takes effect.
        TxRollback = 75,
        /// Lists the broker's open transactions.
        TxList = 76,
        /// Broker to client: asks a live producer of the group for a transaction's outcome.
        TxCheck = 77,
        /// Finds the messages of a topic that carry a key (the key index).
        QueryMessage = 92,
        /// Starts the authentication handshake: answers a fresh server nonce
        /// ([`crate::auth`]).
        AuthChallenge = 100,
        /// Proves the secret over the nonces (an HMAC; the secret never crosses the wire).
        Authenticate = 101,
        /// Adds a user and answers its generated secret, once.
        UserAdd = 102,
        /// Lists users (never their secrets).
        UserList = 103,
        /// Removes a user and its access rules.
        UserRemove = 104,
        /// Sets (adds or replaces) one access rule of a user.
        AclSet = 105,
        /// Lists access rules, of one user or all.
        AclList = 106,
        /// Removes one access rule of a user.
        AclRemove = 107,
        /// A broker's replication state ([`crate::cluster`]).
        ClusterStatus = 110,
        /// Turns a replica into its group's master ([`crate::cluster`]).
        ClusterPromote = 111,
    }
);

wire_enum!(
    /// The outcome of a request. Anything but `Ok` carries an
    /// [`crate::messages::ErrorResponse`] header with a sentence for humans.
    Status, UnknownStatus {
        /// Done; the header is the request's response type.
        Ok = 0,
        /// The header or body does not decode, or a field is out of range.
        BadRequest = 1,
        /// The frame's protocol version is not spoken here.
        UnsupportedVersion = 2,
        /// The request code is not served.
        UnknownCode = 3,
        /// The frame is over the broker's frame limit.
        FrameTooLarge = 4,
        /// A message body is over the broker's limit.
        MessageTooLarge = 5,
        /// A send holds more messages than the broker's limit.
        BatchTooLarge = 6,
        /// A topic or group name breaks the naming rules.
        InvalidName = 7,
        /// No such topic (and it is not created on demand).
        TopicNotFound = 8,
        /// The topic exists already.
        TopicExists = 9,
        /// No such message (by id) or no such group.
        NotFound = 10,
        /// The offset is outside the queue's stored range.
        OffsetOutOfRange = 11,
        /// Writes are refused until disk space is freed.
        DiskFull = 12,
        /// The store failed (I/O or corruption); see the sentence.
        StorageError = 13,
        /// Too many requests in flight on this connection, or too many connections.
        Busy = 14,
        /// A reserved name or a topic without the needed permission.
        Forbidden = 15,
        /// An offset reset refused while the group has live members.
        GroupHasMembers = 16,
        /// The broker or the connection is closing.
        ShuttingDown = 17,
        /// A bug in the broker; see its log.
        Internal = 18,
        /// A member's commit made before its group's offsets were reset: it must drop its
        /// queues and start them again from the reset position (learnt by heartbeat).
        OffsetsReset = 19,
        /// Creating the topic would pass the broker's topic limit (`--max-topics`).
        TopicLimit = 20,
        /// A receipt handle that names no current lease: it expired, was changed or ended,
        /// or it is not a handle of this broker run.
        InvalidReceiptHandle = 21,
        /// The group consumes by offsets and the request is a receive, or the other way
        /// round; one group does not mix the two.
        GroupModeConflict = 22,
        /// No transaction has that id (never begun, or forgotten after it ended long ago).
        TxNotFound = 23,
        /// The transaction is already committed or rolled back (or being ended).
        TxFinished = 24,
        /// The transaction would pass the broker's size limit (messages or bytes).
        TxTooLarge = 25,
        /// Authentication failed: unknown access key or wrong proof (the two are not told
        /// apart on the wire). The connection closes.
        AuthFailed = 30,
        /// The broker requires authentication and the connection has not authenticated.
        /// The connection closes.
        Unauthenticated = 31,
        /// Too many failed authentications from this address; wait and retry.
        TooManyAttempts = 32,
        /// The user's access rules do not allow this request.
        AccessDenied = 33,
        /// The listener requires TLS and the connection spoke plaintext.
        TlsRequired = 34,
        /// This broker is a replica and takes no writes; the sentence names the master.
        NotMaster = 35,
        /// Fewer brokers than `--min-sync-replicas` hold the data (retriable; a send
        /// refused so was not stored, one failed while waiting was stored and may still
        /// be delivered).
        NotEnoughReplicas = 36,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_values_are_errors() {
        for code in [
            RequestCode::Hello,
            RequestCode::Pull,
            RequestCode::BrokerStats,
        ] {
            assert_eq!(RequestCode::try_from(u16::from(code)).unwrap(), code);
        }
        assert!(matches!(
            RequestCode::try_from(999),
            Err(ProtocolError::UnknownCode(999))
        ));
        assert!(matches!(
            Status::try_from(999),
            Err(ProtocolError::UnknownStatus(999))
        ));
    }
}
