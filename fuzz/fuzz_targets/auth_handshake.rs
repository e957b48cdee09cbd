//! The authentication handshake's request headers (what an unauthenticated peer may send):
//! arbitrary bytes never panic the decoder, and what decodes re-encodes to an equal value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::auth::{proof_message, AuthChallengeRequest, AuthenticateRequest};
use protocol::header;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = header::decode::<AuthenticateRequest>(data) {
        let again = header::encode(&req).expect("a decoded header re-encodes");
        assert_eq!(header::decode::<AuthenticateRequest>(&again).ok(), Some(req.clone()));
        let _ = proof_message(&req.proof, &req.client_nonce, &req.access_key);
    }
    if let Ok(req) = header::decode::<AuthChallengeRequest>(data) {
        let again = header::encode(&req).expect("a decoded header re-encodes");
        assert_eq!(header::decode::<AuthChallengeRequest>(&again).ok(), Some(req));
    }
});
