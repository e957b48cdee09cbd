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
        CreateTopic = 10,
        UpdateTopic = 11,
        DeleteTopic = 12,
        GetTopic = 13,
        ListTopics = 14,
        /// One message or a batch, to one queue of a topic.
        Send = 20,
        Pull = 30,
        CommitOffset = 40,
        QueryOffset = 41,
        Heartbeat = 42,
        LeaveGroup = 43,
        GroupInfo = 44,
        ResetOffset = 45,
        /// A consumer hands back a message it failed to process (a nack).
        SendBack = 46,
        /// Removes a group's offsets and its retry and dead-letter topics.
        DeleteGroup = 47,
        SearchOffset = 50,
        GetMessage = 51,
        BrokerStats = 52,
        /// A message or batch delivered to its queue at a given time (timer messages).
        SendTimer = 21,
        /// Removes a timer message that is not yet due.
        Recall = 22,
    }
);

wire_enum!(
    /// The outcome of a request. Anything but `Ok` carries an
    /// [`crate::messages::ErrorResponse`] header with a sentence for humans.
    Status, UnknownStatus {
        Ok = 0,
        /// The header or body does not decode, or a field is out of range.
        BadRequest = 1,
        UnsupportedVersion = 2,
        UnknownCode = 3,
        FrameTooLarge = 4,
        MessageTooLarge = 5,
        BatchTooLarge = 6,
        /// A topic or group name breaks the naming rules.
        InvalidName = 7,
        TopicNotFound = 8,
        TopicExists = 9,
        /// No such message (by id) or no such group.
        NotFound = 10,
        OffsetOutOfRange = 11,
        DiskFull = 12,
        StorageError = 13,
        /// Too many requests in flight on this connection, or too many connections.
        Busy = 14,
        /// A reserved name or a topic without the needed permission.
        Forbidden = 15,
        /// An offset reset refused while the group has live members.
        GroupHasMembers = 16,
        ShuttingDown = 17,
        Internal = 18,
        /// A member's commit made before its group's offsets were reset: it must drop its
        /// queues and start them again from the reset position (learnt by heartbeat).
        OffsetsReset = 19,
        /// Creating the topic would pass the broker's topic limit (`--max-topics`).
        TopicLimit = 20,
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
