//! The RocketMQ 5 gRPC `authorization` header:
//! `MQv2-HMAC-SHA1 Credential=AK, SignedHeaders=x-mq-date-time, Signature=HEX`, where the
//! signature is HMAC-SHA1 keyed by the secret over the exact `x-mq-date-time` value
//! (`%Y%m%dT%H%M%SZ`). Clients differ in small ways that are all accepted: Go and C++ write
//! `Credential=AK//Rocketmq`, Node writes the hex in upper case.
//!
//! The Python client stamps its *local* time with a literal `Z`, so on a host whose zone is
//! not UTC its stamps are off by the zone's offset: the skew window must be widened by it
//! (or turned off) for such clients.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::SecurityError;

/// The algorithm word the header starts with.
pub const ALGORITHM: &str = "MQv2-HMAC-SHA1";
/// The header holding the signed time.
pub const DATE_TIME_HEADER: &str = "x-mq-date-time";
/// The header holding the signature.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// The parts of an `authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key (what precedes any `/` in `Credential`).
    pub access_key: String,
    /// The decoded signature bytes.
    pub signature: Vec<u8>,
}

/// Splits an `authorization` header value.
///
/// # Errors
/// `BadSignature` naming what is missing or malformed.
pub fn parse_authorization(value: &str) -> Result<Authorization, SecurityError> {
    let bad = |why: &str| SecurityError::BadSignature(why.to_string());
    let (algorithm, rest) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| bad("the authorization header has no parameters"))?;
    if algorithm != ALGORITHM {
        return Err(bad(&format!("algorithm {algorithm:?} is not {ALGORITHM}")));
    }
    let (mut credential, mut signature) = (None, None);
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| bad("no Credential"))?;
    let access_key = credential.split('/').next().unwrap_or_default();
    if access_key.is_empty() {
        return Err(bad("an empty Credential (the client has no credentials)"));
    }
    let signature = hex::decode(signature.ok_or_else(|| bad("no Signature"))?)
        .map_err(|e| bad(&format!("the Signature is not hex: {e}")))?;
    Ok(Authorization {
        access_key: access_key.to_string(),
        signature,
    })
}

/// Reads `20231227T194619Z` as a point in time (taken as UTC).
///
/// # Errors
/// `BadSignature` when it is not that format.
pub fn parse_date_time(value: &str) -> Result<SystemTime, SecurityError> {
    let bad =
        || SecurityError::BadSignature(format!("x-mq-date-time {value:?} is not YYYYMMDDTHHMMSSZ"));
    let b = value.as_bytes();
    if !value.is_ascii() || b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, SecurityError> {
        value[r].parse::<i64>().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    let secs = u64::try_from(secs).map_err(|_| bad())?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Verifies a RocketMQ 5 request's `authorization` and `x-mq-date-time` headers.
/// `secret_of` looks the access key up; `max_skew` bounds how far the signed time may be
/// from `now` either way (`None`: no bound, as the Java proxy does).
///
/// Returns the access key the request is signed by.
///
/// # Errors
/// `BadSignature` for a missing or malformed header, `ClockSkew` outside the window,
/// `AuthFailed` for an unknown access key or a signature that does not verify.
pub fn verify_rocketmq_v2(
    authorization: Option<&str>,
    date_time: Option<&str>,
    secret_of: impl FnOnce(&str) -> Option<String>,
    now: SystemTime,
    max_skew: Option<Duration>,
) -> Result<String, SecurityError> {
    let auth = parse_authorization(
        authorization
            .ok_or_else(|| SecurityError::BadSignature("no authorization header".into()))?,
    )?;
    let date_time = date_time
        .ok_or_else(|| SecurityError::BadSignature(format!("no {DATE_TIME_HEADER} header")))?;
    let signed_at = parse_date_time(date_time)?;
    if let Some(max) = max_skew {
        let skew = now
            .duration_since(signed_at)
            .or_else(|e| Ok::<_, SecurityError>(e.duration()))?;
        if skew > max {
            return Err(SecurityError::ClockSkew {
                skew_secs: skew.as_secs(),
                max_secs: max.as_secs(),
            });
        }
    }
    let Some(secret) = secret_of(&auth.access_key) else {
        return Err(SecurityError::AuthFailed);
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    // Constant-time comparison.
    ring::hmac::verify(&key, date_time.as_bytes(), &auth.signature)
        .map_err(|_| SecurityError::AuthFailed)?;
    Ok(auth.access_key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Computed as the official Python client does (rocketmq-clients, python/rocketmq/v5,
    // signing the metadata):
    //   hmac.new(secret.encode("utf-8"), date_time.encode("utf-8"), hashlib.sha1).hexdigest()
    // with secret "ferro-secret-key" and date_time "20261130T141500Z".
    const SECRET: &str = "ferro-secret-key";
    const DATE_TIME: &str = "20261130T141500Z";
    const PYTHON_SIGNATURE: &str = "5b302c9989e01035ac56f5b539336e39f7485d0a";

    fn at(date_time: &str) -> SystemTime {
        parse_date_time(date_time).unwrap()
    }

    fn secret(ak: &str) -> Option<String> {
        (ak == "app").then(|| SECRET.to_string())
    }

    fn header(sig: &str) -> String {
        format!("MQv2-HMAC-SHA1 Credential=app, SignedHeaders=x-mq-date-time, Signature={sig}")
    }

    #[test]
    fn the_python_clients_signature_verifies_in_either_hex_case_and_credential_form() {
        let now = at(DATE_TIME);
        let skew = Some(Duration::from_secs(300));
        let h = header(PYTHON_SIGNATURE);
        assert_eq!(
            verify_rocketmq_v2(Some(&h), Some(DATE_TIME), secret, now, skew).unwrap(),
            "app"
        );
        let upper = header(&PYTHON_SIGNATURE.to_uppercase());
        assert!(verify_rocketmq_v2(Some(&upper), Some(DATE_TIME), secret, now, skew).is_ok());
        let go = h.replace("Credential=app", "Credential=app//Rocketmq");
        assert!(verify_rocketmq_v2(Some(&go), Some(DATE_TIME), secret, now, skew).is_ok());
    }

    #[test]
    fn wrong_secret_unknown_key_and_other_time_are_refused() {
        let now = at(DATE_TIME);
        let h = header(PYTHON_SIGNATURE);
        let wrong = |_: &str| Some("other".to_string());
        assert!(matches!(
            verify_rocketmq_v2(Some(&h), Some(DATE_TIME), wrong, now, None),
            Err(SecurityError::AuthFailed)
        ));
        let unknown = h.replace("Credential=app", "Credential=nobody");
        assert!(matches!(
            verify_rocketmq_v2(Some(&unknown), Some(DATE_TIME), secret, now, None),
            Err(SecurityError::AuthFailed)
        ));
        // The same signature over another second (a replay under a new stamp) fails.
        assert!(matches!(
            verify_rocketmq_v2(Some(&h), Some("20261130T141501Z"), secret, now, None),
            Err(SecurityError::AuthFailed)
        ));
    }

    #[test]
    fn a_stamp_outside_the_skew_window_is_refused_both_ways() {
        let h = header(PYTHON_SIGNATURE);
        let skew = Some(Duration::from_secs(300));
        let later = at(DATE_TIME) + Duration::from_secs(301);
        assert!(matches!(
            verify_rocketmq_v2(Some(&h), Some(DATE_TIME), secret, later, skew),
            Err(SecurityError::ClockSkew { .. })
        ));
        let earlier = at(DATE_TIME) - Duration::from_secs(301);
        assert!(verify_rocketmq_v2(Some(&h), Some(DATE_TIME), secret, earlier, skew).is_err());
        assert!(verify_rocketmq_v2(Some(&h), Some(DATE_TIME), secret, later, None).is_ok());
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let now = at(DATE_TIME);
        for h in [
            "",
            "MQv2-HMAC-SHA1",
            "Basic abc",
            "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=00",
            "MQv2-HMAC-SHA1 Credential=app, Signature=zz",
        ] {
            assert!(
                matches!(
                    verify_rocketmq_v2(Some(h), Some(DATE_TIME), secret, now, None),
                    Err(SecurityError::BadSignature(_))
                ),
                "{h}"
            );
        }
        assert!(verify_rocketmq_v2(None, Some(DATE_TIME), secret, now, None).is_err());
        for d in ["2026-11-30", "20261330T141500Z", "20261130T141500"] {
            assert!(parse_date_time(d).is_err(), "{d}");
        }
        assert_eq!(
            at("19700102T000001Z").duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_secs(86_401)
        );
    }

    proptest::proptest! {
        /// Whatever a peer puts in the two headers, the answer is a typed error or a
        /// verified key, never a panic.
        #[test]
        fn arbitrary_headers_never_panic(auth in ".{0,120}", date in ".{0,24}", tail in "[0-9a-fA-F, =/]{0,80}") {
            let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let shaped = format!("MQv2-HMAC-SHA1 {tail}");
            for h in [auth.as_str(), shaped.as_str()] {
                let _ = verify_rocketmq_v2(Some(h), Some(&date), secret, now, Some(Duration::from_secs(60)));
            }
            let _ = parse_date_time(&date);
        }
    }
}
