//! The webhook signature: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! The timestamp is inside the signed text, so a captured delivery cannot be
//! replayed with a fresh timestamp, and a receiver rejects stale ones.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Stovepipe-Signature";

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// The header is not `t=<unix>,v1=<hex>`.
    #[error("malformed signature header: {0}")]
    Malformed(String),
    /// The timestamp is further than the tolerance from now.
    #[error("signature timestamp {timestamp} is outside the tolerance around {now}")]
    Stale { timestamp: i64, now: i64 },
    /// No `v1` signature matches the body under this secret.
    #[error("signature does not match")]
    Mismatch,
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Stovepipe-Signature` header value for `body` sent at `timestamp`
/// (Unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Checks a `Stovepipe-Signature` header against the raw `body`: the
/// timestamp must be within `tolerance` of `now_unix`, and one of its `v1`
/// values must be the HMAC of `"<t>.<body>"` under `secret`. The comparison
/// is constant-time.
pub fn verify_signature(
    secret: &str,
    header_value: &str,
    body: &[u8],
    now_unix: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let malformed = || VerifyError::Malformed(header_value.chars().take(200).collect());
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header_value.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or_else(malformed)?;
        match key {
            "t" => timestamp = Some(value.parse::<i64>().map_err(|_| malformed())?),
            "v1" => candidates.push(hex::decode(value).map_err(|_| malformed())?),
            // Unknown schemes are ignored, so a future scheme can be added
            // beside v1 without breaking receivers.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(malformed)?;
    if candidates.is_empty() {
        return Err(malformed());
    }
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now_unix.abs_diff(timestamp) > tolerance.unsigned_abs() {
        return Err(VerifyError::Stale {
            timestamp,
            now: now_unix,
        });
    }
    let expected = mac(secret, timestamp, body);
    if candidates
        .iter()
        // `verify_slice` compares in constant time.
        .any(|c| expected.clone().verify_slice(c).is_ok())
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Duration = Duration::from_mins(5);

    #[test]
    fn round_trip() {
        let h = sign("k", 1000, b"{}");
        assert!(h.starts_with("t=1000,v1="));
        assert_eq!(h.len(), "t=1000,v1=".len() + 64);
        assert_eq!(verify_signature("k", &h, b"{}", 1000, TOL), Ok(()));
        assert_eq!(verify_signature("k", &h, b"{}", 1300, TOL), Ok(()));
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256("key", "1.body"), computed independently.
        let h = sign("key", 1, b"body");
        let tag = h.split_once("v1=").unwrap().1;
        let mut m = HmacSha256::new_from_slice(b"key").unwrap();
        m.update(b"1.body");
        assert_eq!(tag, hex::encode(m.finalize().into_bytes()));
    }

    #[test]
    fn refusals() {
        let h = sign("k", 1000, b"{}");
        assert_eq!(
            verify_signature("other", &h, b"{}", 1000, TOL),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_signature("k", &h, b"{ }", 1000, TOL),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify_signature("k", &h, b"{}", 1301, TOL),
            Err(VerifyError::Stale { .. })
        ));
        assert!(matches!(
            verify_signature("k", &h, b"{}", 699, TOL),
            Err(VerifyError::Stale { .. })
        ));
        // The timestamp is signed: moving it breaks the signature.
        let moved = h.replacen("t=1000", "t=1001", 1);
        assert_eq!(
            verify_signature("k", &moved, b"{}", 1000, TOL),
            Err(VerifyError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert!(
                matches!(
                    verify_signature("k", bad, b"{}", 1, TOL),
                    Err(VerifyError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn any_v1_may_match_and_unknown_schemes_are_ignored() {
        let good = sign("k", 5, b"x");
        let tag = good.split_once("v1=").unwrap().1;
        let header = format!("t=5,v0=abc,v1={},v1={tag}", "00".repeat(32));
        assert_eq!(verify_signature("k", &header, b"x", 5, TOL), Ok(()));
    }
}
