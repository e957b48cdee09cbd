//! Authentication of the HA handshake: HMAC-SHA256 challenge-response in both directions
//! over the whole transcript, with fresh nonces and a label per direction (no replay, no
//! reflection), and the broker's identity file.

use std::io;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted cluster secret.
pub(crate) const MIN_SECRET_BYTES: usize = 16;
/// Size of a nonce and of a MAC.
pub(crate) const NONCE_LEN: usize = 32;

const LABEL_MASTER: &[u8] = b"FMHA1 S";
const LABEL_REPLICA: &[u8] = b"FMHA1 C";

/// The master's MAC: over the Hello and the Challenge up to the MAC itself.
pub(crate) fn mac_master(secret: &[u8], hello: &[u8], challenge_head: &[u8]) -> [u8; 32] {
    mac(secret, &[LABEL_MASTER, hello, challenge_head])
}

/// The replica's MAC: over the Hello, the whole Challenge and the Proof's offset part.
pub(crate) fn mac_replica(
    secret: &[u8],
    hello: &[u8],
    challenge: &[u8],
    proof_head: &[u8],
) -> [u8; 32] {
    mac(secret, &[LABEL_REPLICA, hello, challenge, proof_head])
}

/// Constant-time check of a received MAC.
pub(crate) fn verify(secret: &[u8], parts: &[&[u8]], label_master: bool, tag: &[u8]) -> bool {
    let Ok(mut m) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    m.update(if label_master {
        LABEL_MASTER
    } else {
        LABEL_REPLICA
    });
    for p in parts {
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

fn mac(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let Ok(mut m) = HmacSha256::new_from_slice(secret) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// A fresh random nonce from the kernel.
///
/// # Errors
/// `/dev/urandom` unreadable.
pub(crate) fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    use std::io::Read;
    let mut n = [0u8; NONCE_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut n)?;
    Ok(n)
}

/// This broker's id: `<data>/config/identity` (JSON `{"broker_id": N}`), created with a
/// random id on first use and written atomically.
///
/// # Errors
/// The file cannot be read, parsed or written.
pub(crate) fn broker_id(data_dir: &Path) -> io::Result<u64> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Identity {
        broker_id: u64,
    }
    let dir = data_dir.join("config");
    let path = dir.join("identity");
    match std::fs::read(&path) {
        Ok(b) => {
            let id: Identity = serde_json::from_slice(&b)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            return Ok(id.broker_id);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let n = nonce()?;
    let mut a = [0u8; 8];
    a.copy_from_slice(&n[..8]);
    // Zero means "none" on the wire.
    let id = u64::from_le_bytes(a).max(1);
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_vec(&Identity { broker_id: id })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    commitlog::storage::Storage::write_atomic(&commitlog::storage::RealFs, &path, &json)?;
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn macs_bind_secret_transcript_and_direction() {
        let s = b"0123456789abcdef-secret";
        let m = mac_master(s, b"hello", b"challenge");
        assert!(verify(s, &[b"hello", b"challenge"], true, &m));
        // Wrong secret, tampered transcript, reflected direction: all refused.
        assert!(!verify(
            b"another-secret-16b",
            &[b"hello", b"challenge"],
            true,
            &m
        ));
        assert!(!verify(s, &[b"hellO", b"challenge"], true, &m));
        assert!(!verify(s, &[b"hello", b"challenge"], false, &m));
        let c = mac_replica(s, b"hello", b"challenge", b"proof");
        assert!(verify(s, &[b"hello", b"challenge", b"proof"], false, &c));
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }

    #[test]
    fn the_identity_is_created_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let a = broker_id(dir.path()).unwrap();
        assert_eq!(broker_id(dir.path()).unwrap(), a);
        assert_ne!(a, 0);
    }
}
