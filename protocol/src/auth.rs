//! Authentication and user administration requests.
//!
//! # The handshake
//!
//! A broker started with `--auth on` serves nothing but `Hello` and these two requests
//! until the connection has authenticated:
//!
//! 1. `AuthChallenge { access_key }` → `{ server_nonce }`: 32 fresh random bytes.
//! 2. `Authenticate { access_key, client_nonce, proof }` → `{ admin }`, where
//!    `proof = HMAC-SHA256(secret, proof_message(server_nonce, client_nonce, access_key))`.
//!
//! The secret never crosses the wire, a recorded proof is useless on another connection
//! (the server nonce differs), and the client's nonce keeps the broker from choosing the
//! whole signed message. A failed proof answers `AuthFailed` and closes the connection.

use serde::{Deserialize, Serialize};

use crate::messages::{Empty, Request};
use crate::RequestCode;

/// Bytes of each nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_BYTES: usize = 32;
/// What the proof signs first, so that it can never be mistaken for another signature.
const PROOF_DOMAIN: &[u8] = b"FerroMQ-auth-v1\n";

/// The message a proof signs: the domain, then each part prefixed by its length (u32 LE),
/// so that no two different triples sign the same bytes.
pub fn proof_message(server_nonce: &[u8], client_nonce: &[u8], access_key: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(PROOF_DOMAIN.len() + 12 + 2 * NONCE_BYTES + access_key.len());
    m.extend_from_slice(PROOF_DOMAIN);
    for part in [server_nonce, client_nonce, access_key.as_bytes()] {
        m.extend_from_slice(&(part.len() as u32).to_le_bytes());
        m.extend_from_slice(part);
    }
    m
}

/// Starts the handshake for one access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthChallengeRequest {
    /// The user's access key (its name).
    pub access_key: String,
}

/// The broker's nonce for this connection. Answered for unknown keys too, so that the
/// answer does not tell which users exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthChallengeResponse {
    /// [`NONCE_BYTES`] random bytes, valid for the next `Authenticate` on this connection.
    pub server_nonce: Vec<u8>,
}
request!(AuthChallengeRequest, AuthChallenge, AuthChallengeResponse);

/// Proves the secret of `access_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateRequest {
    /// The same access key as the challenge.
    pub access_key: String,
    /// [`NONCE_BYTES`] random bytes of the client's.
    pub client_nonce: Vec<u8>,
    /// HMAC-SHA256 of [`proof_message`] keyed by the secret.
    pub proof: Vec<u8>,
}

/// Who the connection now is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateResponse {
    /// Whether the user is an administrator (every request allowed).
    pub admin: bool,
    /// Whether the broker checks authentication at all (`--auth on`); when off the
    /// handshake is accepted without a check.
    pub auth_enabled: bool,
}
request!(AuthenticateRequest, Authenticate, AuthenticateResponse);

/// Adds a user; the broker generates its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAddRequest {
    /// The user's name, which is its access key.
    pub name: String,
    /// An administrator may do everything, user and rule management included.
    pub admin: bool,
}

/// The new user's keys. The secret is shown this once; the broker never answers it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAddResponse {
    /// The access key (the name).
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
}
request!(UserAddRequest, UserAdd, UserAddResponse);

/// Lists every user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserListRequest {}

/// One user, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// The access key (the name).
    pub access_key: String,
    /// Whether it is an administrator.
    pub admin: bool,
    /// How many access rules it has.
    pub rules: u32,
}

/// The users, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserListResponse {
    /// Sorted by access key.
    pub users: Vec<UserEntry>,
}
request!(UserListRequest, UserList, UserListResponse);

/// Removes a user and its rules; its open connections are refused from their next request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRemoveRequest {
    /// The access key.
    pub name: String,
}
request!(UserRemoveRequest, UserRemove, Empty);

/// One access rule as it travels: words the broker parses and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    /// The user the rule belongs to.
    pub user: String,
    /// `topic:NAME`, `group:NAME`, or a prefix with a trailing `*` (`topic:orders-*`).
    pub resource: String,
    /// Any of `pub`, `sub`, `admin`.
    pub actions: Vec<String>,
    /// `allow` or `deny` (a matching deny wins over any allow).
    pub decision: String,
}

/// Adds a rule, or replaces the user's rule on the same resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclSetRequest {
    /// The rule.
    pub rule: AclEntry,
}
request!(AclSetRequest, AclSet, Empty);

/// Lists rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclListRequest {
    /// Only this user's rules; `None` for everyone's.
    pub user: Option<String>,
}

/// Rules, by user and then in the order they were set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclListResponse {
    /// The rules.
    pub rules: Vec<AclEntry>,
}
request!(AclListRequest, AclList, AclListResponse);

/// Removes a user's rule on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRemoveRequest {
    /// The user.
    pub user: String,
    /// The resource, written as when it was set.
    pub resource: String,
}
request!(AclRemoveRequest, AclRemove, Empty);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_message_frames_each_part_so_shifted_bytes_differ() {
        let a = proof_message(b"ab", b"c", "k");
        let b = proof_message(b"a", b"bc", "k");
        assert_ne!(a, b);
        assert!(a.starts_with(PROOF_DOMAIN));
    }
}
