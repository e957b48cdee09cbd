//! The security gate every request frame passes before it is dispatched: with auth on,
//! the handshake is answered here (on the read loop, no task: it is one HMAC), anything
//! else from a connection that has not authenticated closes it, and the access rules of
//! the user decide the rest. With auth off only the handshake requests are answered here
//! (accepted without a check, so a client with credentials still connects).

use std::sync::Arc;

use protocol::auth::{
    AuthChallengeRequest, AuthChallengeResponse, AuthenticateRequest, AuthenticateResponse,
    NONCE_BYTES,
};
use protocol::{Frame, FrameKind, RequestCode, Status};

use super::request::decode;
use super::response::Response;
use super::services::Services;
use super::session::Session;
use crate::security::{classify, named, NativeAuth, SecurityError};

/// What the read loop does with a frame.
pub(crate) enum Gate {
    /// Dispatch it.
    Pass(Frame),
    /// Answered here; read on.
    Answered,
    /// Answered here; close the connection.
    Close,
}

/// The wire status of a security refusal.
pub(crate) fn status_of(e: &SecurityError) -> Status {
    match e {
        SecurityError::AuthFailed
        | SecurityError::BadSignature(_)
        | SecurityError::ClockSkew { .. } => Status::AuthFailed,
        SecurityError::Unauthenticated => Status::Unauthenticated,
        SecurityError::TooManyAttempts { .. } => Status::TooManyAttempts,
        SecurityError::AccessDenied { .. } => Status::AccessDenied,
        SecurityError::UserExists(_) => Status::BadRequest,
        SecurityError::NoSuchUser(_) | SecurityError::NoSuchRule { .. } => Status::NotFound,
        SecurityError::Invalid(_) => Status::BadRequest,
        _ => Status::Internal,
    }
}

fn refusal(e: &SecurityError) -> Response {
    Response::error(status_of(e), e.to_string())
}

/// Decides what happens to `frame`; see [`Gate`].
pub(crate) async fn admit(
    services: &Arc<Services>,
    conn: &Arc<Session>,
    auth: Option<&mut NativeAuth>,
    frame: Frame,
) -> Gate {
    let id = frame.request_id;
    if frame.kind != FrameKind::Request {
        return Gate::Pass(frame);
    }
    let code = RequestCode::try_from(frame.code).ok();
    let Some(auth) = auth else {
        return match code {
            Some(RequestCode::AuthChallenge | RequestCode::Authenticate) => {
                conn.respond(id, handshake_without_auth(&frame)).await;
                Gate::Answered
            }
            _ => Gate::Pass(frame),
        };
    };
    let security = &services.security;
    match code {
        Some(RequestCode::Hello) => Gate::Pass(frame),
        Some(RequestCode::AuthChallenge) => {
            let answer = decode::<AuthChallengeRequest>(&frame)
                .map_err(Response::from)
                .and_then(|_| auth.challenge(security).map_err(|e| refusal(&e)));
            match answer {
                Ok(server_nonce) => {
                    conn.respond(id, Response::ok(&AuthChallengeResponse { server_nonce }))
                        .await;
                    Gate::Answered
                }
                Err(response) => {
                    conn.respond(id, response).await;
                    Gate::Close
                }
            }
        }
        Some(RequestCode::Authenticate) => {
            let answer = decode::<AuthenticateRequest>(&frame)
                .map_err(Response::from)
                .and_then(|req| {
                    auth.authenticate(security, &req)
                        .map(|p| AuthenticateResponse {
                            admin: p.is_admin(),
                            auth_enabled: true,
                        })
                        .map_err(|e| refusal(&e))
                });
            match answer {
                Ok(ok) => {
                    conn.respond(id, Response::ok(&ok)).await;
                    Gate::Answered
                }
                Err(response) => {
                    conn.respond(id, response).await;
                    Gate::Close
                }
            }
        }
        _ => {
            let Some(principal) = auth.principal_mut() else {
                tracing::warn!(peer = %conn.peer, code = frame.code, "request before authentication; closing");
                conn.respond(id, refusal(&SecurityError::Unauthenticated))
                    .await;
                return Gate::Close;
            };
            let Some(code) = code else {
                // Unknown codes are answered by dispatch, as without auth.
                return Gate::Pass(frame);
            };
            let Some(requirement) = classify(code) else {
                let msg = format!("request code {code:?} has no access rule; refused");
                conn.respond(id, Response::error(Status::AccessDenied, msg))
                    .await;
                return Gate::Answered;
            };
            if principal.is_admin() {
                return Gate::Pass(frame);
            }
            // A header that does not decode is answered by its handler, which decodes it
            // the same way and refuses it.
            let Ok(names) = named(code, &frame.header) else {
                return Gate::Pass(frame);
            };
            match security.authorize(principal, requirement, &names) {
                Ok(()) => Gate::Pass(frame),
                Err(e @ SecurityError::Unauthenticated) => {
                    conn.respond(id, refusal(&e)).await;
                    Gate::Close
                }
                Err(e) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "request refused by access rules");
                    conn.respond(id, refusal(&e)).await;
                    Gate::Answered
                }
            }
        }
    }
}

/// The handshake on a broker without auth: a nonce, then acceptance of any proof.
fn handshake_without_auth(frame: &Frame) -> Response {
    if frame.code == u16::from(RequestCode::AuthChallenge) {
        let mut server_nonce = vec![0u8; NONCE_BYTES];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut server_nonce)
            .is_err()
        {
            return refusal(&SecurityError::Random);
        }
        Response::ok(&AuthChallengeResponse { server_nonce })
    } else {
        Response::ok(&AuthenticateResponse {
            admin: true,
            auth_enabled: false,
        })
    }
}
