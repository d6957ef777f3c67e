//! Identifiers: request ids (ordered), commit URIs and build ids (opaque).

use crate::error::InvalidValue;
use crate::names::{QueueName, validated_string};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Longest URI in bytes.
pub const MAX_URI: usize = 2048;
/// Longest build id in bytes.
pub const MAX_BUILD_ID: usize = 512;

validated_string!(
    /// Opaque identity of a commit, minted and interpreted only by the
    /// `SourceControl` adapter. 1..=2048 bytes, no whitespace or control
    /// characters. Nothing outside the adapter parses it.
    Uri,
    validate_uri
);

validated_string!(
    /// A build's id, minted by the build runner; opaque. 1..=512 bytes,
    /// no whitespace or control characters.
    BuildId,
    validate_build_id
);

fn validate_opaque(kind: &'static str, v: &str, max: usize) -> Result<(), InvalidValue> {
    if v.is_empty() {
        return Err(InvalidValue::new(kind, v, "a non-empty value"));
    }
    if v.len() > max {
        return Err(InvalidValue::new(kind, v, format!("at most {max} bytes")));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidValue::new(
            kind,
            v,
            "no whitespace or control characters",
        ));
    }
    Ok(())
}

fn validate_uri(v: &str) -> Result<(), InvalidValue> {
    validate_opaque("uri", v, MAX_URI)
}

fn validate_build_id(v: &str) -> Result<(), InvalidValue> {
    validate_opaque("build id", v, MAX_BUILD_ID)
}

/// One validation of one queue head: `request/<queue>/<n>`, `n >= 1` from a
/// durable per-queue counter. Ordered by [`compare_request_id`], never
/// textually (`…/9` comes before `…/10`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId {
    text: String,
    /// Byte offset of the number inside `text`.
    number_at: usize,
    number: u64,
}

const REQUEST_PREFIX: &str = "request/";

impl RequestId {
    /// Mints the id of request number `n` of `queue`.
    pub fn new(queue: &QueueName, n: u64) -> Result<Self, InvalidValue> {
        if n == 0 {
            return Err(InvalidValue::new("request number", "0", "a number >= 1"));
        }
        Self::parse(&format!("{}{n}", Self::prefix(queue)))
    }

    /// What every id of `queue` starts with: request number `n`'s id is
    /// this followed by `n` in decimal (for a store that numbers and
    /// writes an id in one statement).
    pub fn prefix(queue: &QueueName) -> String {
        format!("{REQUEST_PREFIX}{queue}/")
    }

    /// Parses `request/<queue>/<n>`.
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let expected = "request/<queue>/<n> with n a decimal number >= 1";
        let rest = text
            .strip_prefix(REQUEST_PREFIX)
            .ok_or_else(|| InvalidValue::new("request id", text, expected))?;
        let (queue, number) = rest
            .rsplit_once('/')
            .ok_or_else(|| InvalidValue::new("request id", text, expected))?;
        QueueName::new(queue).map_err(|e| InvalidValue::new("request id", text, e.to_string()))?;
        let n = parse_request_number(number)
            .ok_or_else(|| InvalidValue::new("request id", text, expected))?;
        Ok(Self {
            text: text.to_owned(),
            number_at: REQUEST_PREFIX.len() + queue.len() + 1,
            number: n,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The per-queue sequence number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The queue part of the id.
    pub fn queue_str(&self) -> &str {
        &self.text[REQUEST_PREFIX.len()..self.number_at - 1]
    }

    /// True when this id belongs to `queue`.
    pub fn belongs_to(&self, queue: &QueueName) -> bool {
        self.queue_str() == queue.as_str()
    }
}

/// Decimal, no sign, no leading zero, fits u64, not zero.
fn parse_request_number(s: &str) -> Option<u64> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl TryFrom<String> for RequestId {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl std::str::FromStr for RequestId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<RequestId> for String {
    fn from(value: RequestId) -> Self {
        value.text
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Ingest order of two request ids of `queue`.
///
/// Equal ids compare equal; otherwise both must carry the prefix
/// `request/<queue>/` and their numbers compare as integers. An id of another
/// queue is an error, never silently ordered.
pub fn compare_request_id(
    queue: &QueueName,
    a: &RequestId,
    b: &RequestId,
) -> Result<Ordering, InvalidValue> {
    if a == b {
        return Ok(Ordering::Equal);
    }
    for id in [a, b] {
        if !id.belongs_to(queue) {
            return Err(InvalidValue::new(
                "request id",
                id.as_str(),
                format!("an id with prefix request/{queue}/"),
            ));
        }
    }
    Ok(a.number.cmp(&b.number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> QueueName {
        QueueName::new(s).unwrap()
    }

    fn id(s: &str) -> RequestId {
        RequestId::parse(s).unwrap()
    }

    #[test]
    fn numeric_not_textual_order() {
        let queue = q("monorepo/main");
        let nine = id("request/monorepo/main/9");
        let ten = id("request/monorepo/main/10");
        assert_eq!(compare_request_id(&queue, &nine, &ten), Ok(Ordering::Less));
        assert_eq!(
            compare_request_id(&queue, &ten, &nine),
            Ok(Ordering::Greater)
        );
        assert_eq!(compare_request_id(&queue, &ten, &ten), Ok(Ordering::Equal));
    }

    #[test]
    fn wrong_prefix_is_an_error() {
        let queue = q("monorepo/main");
        let mine = id("request/monorepo/main/1");
        let other = id("request/monorepo/dev/2");
        let err = compare_request_id(&queue, &mine, &other).unwrap_err();
        assert!(err.to_string().contains("request/monorepo/dev/2"));
        // A queue name that is a prefix of another is not confused with it.
        let longer = id("request/monorepo/main2/3");
        assert!(compare_request_id(&queue, &mine, &longer).is_err());
        let nested = id("request/monorepo/main/x/3");
        assert!(compare_request_id(&queue, &mine, &nested).is_err());
    }

    #[test]
    fn parsing_rejects_malformed_ids() {
        for bad in [
            "",
            "request/",
            "request/q",
            "request/q/",
            "request/q/0",
            "request/q/01",
            "request/q/-1",
            "request/q/+1",
            "request/q/1a",
            "request//1",
            "req/q/1",
            "request/q/99999999999999999999999",
        ] {
            assert!(RequestId::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(RequestId::new(&q("q"), 0).is_err());
    }

    #[test]
    fn accessors() {
        let r = RequestId::new(&q("monorepo/main"), 42).unwrap();
        assert_eq!(r.as_str(), "request/monorepo/main/42");
        assert_eq!(r.number(), 42);
        assert_eq!(r.queue_str(), "monorepo/main");
        assert!(r.belongs_to(&q("monorepo/main")));
    }

    #[test]
    fn opaque_values() {
        assert!(Uri::new("git://repo/main/abc").is_ok());
        assert!(Uri::new("").is_err());
        assert!(Uri::new("a b").is_err());
        assert!(Uri::new("x".repeat(MAX_URI + 1)).is_err());
        assert!(BuildId::new("gh-123").is_ok());
        assert!(BuildId::new("a\nb").is_err());
    }

    fn queue_strategy() -> impl Strategy<Value = QueueName> {
        "[a-z0-9._-]{1,12}(/[a-z0-9_-]{1,12}){0,3}"
            .prop_filter_map("valid queue", |s| QueueName::new(s).ok())
    }

    proptest! {
        #[test]
        fn request_id_round_trips(queue in queue_strategy(), n in 1u64..u64::MAX) {
            let minted = RequestId::new(&queue, n).unwrap();
            let parsed = RequestId::parse(minted.as_str()).unwrap();
            prop_assert_eq!(&parsed, &minted);
            prop_assert_eq!(parsed.number(), n);
            prop_assert_eq!(parsed.queue_str(), queue.as_str());
            let json = serde_json::to_string(&minted).unwrap();
            let back: RequestId = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, minted);
        }

        #[test]
        fn order_matches_numbers(queue in queue_strategy(), a in 1u64..1_000_000, b in 1u64..1_000_000) {
            let ia = RequestId::new(&queue, a).unwrap();
            let ib = RequestId::new(&queue, b).unwrap();
            prop_assert_eq!(compare_request_id(&queue, &ia, &ib).unwrap(), a.cmp(&b));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = RequestId::parse(&s);
            let _ = QueueName::new(s.clone());
            let _ = Uri::new(s);
        }

        #[test]
        fn queue_name_round_trips(queue in queue_strategy()) {
            let json = serde_json::to_string(&queue).unwrap();
            let back: QueueName = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, queue);
        }
    }
}
