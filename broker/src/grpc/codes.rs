//! In-body statuses: every RocketMQ 5 response carries `Status{code, message}` and ends the
//! call with gRPC OK; the clients decide on the in-body code. Broker statuses map onto the
//! codes of `definition.proto` here, in one place.

use protocol::Status as Broker;

use super::pb::{Code, Status};
use crate::server::response::HandlerError;

/// `code` with a sentence for humans.
pub(super) fn status(code: Code, message: impl Into<String>) -> Status {
    Status {
        code: code as i32,
        message: message.into(),
    }
}

/// The OK status.
pub(super) fn ok() -> Status {
    status(Code::Ok, "OK")
}

/// The code the clients expect for a broker status.
pub(super) fn code_of(s: Broker) -> Code {
    match s {
        Broker::Ok => Code::Ok,
        Broker::MessageTooLarge => Code::MessageBodyTooLarge,
        Broker::TopicNotFound => Code::TopicNotFound,
        Broker::NotFound => Code::NotFound,
        Broker::Forbidden | Broker::GroupModeConflict => Code::Forbidden,
        Broker::Busy => Code::TooManyRequests,
        Broker::InvalidReceiptHandle => Code::InvalidReceiptHandle,
        Broker::BadRequest
        | Broker::BatchTooLarge
        | Broker::InvalidName
        | Broker::OffsetOutOfRange
        | Broker::TopicExists
        | Broker::TopicLimit => Code::BadRequest,
        _ => Code::InternalServerError,
    }
}

impl From<HandlerError> for Status {
    fn from(e: HandlerError) -> Self {
        status(code_of(e.status), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_clients_handle_specially_keep_their_codes() {
        assert_eq!(code_of(Broker::InvalidReceiptHandle) as i32, 40013);
        assert_eq!(code_of(Broker::TopicNotFound) as i32, 40402);
        assert_eq!(code_of(Broker::MessageTooLarge) as i32, 41301);
        assert_eq!(code_of(Broker::Busy) as i32, 42900);
        assert_eq!(code_of(Broker::StorageError) as i32, 50001);
    }
}
