//! Refuses values the database would reject or that exceed the adapter's
//! limits, before any write starts, so bad input is a typed
//! `InvalidValue` and never a panic, a backend error or a partial write.
//!
//! Postgres refuses NUL in `text` and `\u0000` in `jsonb`; SQLite would store
//! them but other replicas could not read them back, so both backends refuse
//! them. The entity types already bound names, ids and URIs; these limits
//! bound the free-form values (reasons, URLs, metadata, payloads).

use serde::Serialize;
use stovepipe_entity::InvalidValue;

/// Longest free-text value (failure reasons, URLs, change subjects…).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest topic, partition key or message id.
pub const MAX_KEY_BYTES: usize = 2048;
/// Largest JSON document (payloads, metadata, configuration).
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

pub(crate) fn invalid(
    kind: &'static str,
    value: &str,
    expected: impl Into<String>,
) -> InvalidValue {
    InvalidValue {
        kind,
        value: value.chars().take(120).collect(),
        expected: expected.into(),
    }
}

/// A text value of at most `max` bytes without NUL.
pub(crate) fn text(kind: &'static str, value: &str, max: usize) -> Result<(), InvalidValue> {
    if value.len() > max {
        return Err(invalid(kind, value, format!("at most {max} bytes")));
    }
    if value.contains('\0') {
        return Err(invalid(kind, value, "no NUL character"));
    }
    Ok(())
}

pub(crate) fn opt_text(
    kind: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<(), InvalidValue> {
    value.map_or(Ok(()), |v| text(kind, v, max))
}

/// Serialises `value` as JSON, refusing NUL in any string or key and
/// documents over [`MAX_JSON_BYTES`].
pub(crate) fn json<T: Serialize + ?Sized>(
    kind: &'static str,
    value: &T,
) -> Result<serde_json::Value, InvalidValue> {
    let json = serde_json::to_value(value)
        .map_err(|e| invalid(kind, "(unserialisable)", format!("a JSON value ({e})")))?;
    check_json(kind, &json)?;
    Ok(json)
}

/// Checks an already built JSON value (message payloads, change data).
pub(crate) fn check_json(kind: &'static str, json: &serde_json::Value) -> Result<(), InvalidValue> {
    if has_nul(json) {
        return Err(invalid(kind, "(json)", "no NUL character in any string"));
    }
    // Serialising a Value cannot fail (keys are strings); size it anyway.
    // Counted as written, not written out: every payload passes here.
    let mut counted = ByteCount(0);
    let size = serde_json::to_writer(&mut counted, json).map_or(usize::MAX, |()| counted.0);
    if size > MAX_JSON_BYTES {
        return Err(invalid(
            kind,
            &format!("({size} bytes of json)"),
            format!("at most {MAX_JSON_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Counts the bytes written to it, keeping none.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Diagnostic text the caller cannot fix (a handler's error message): kept
/// rather than refused, so a retry or reject is never lost to its own
/// error text. NUL becomes U+FFFD and the text is cut at the limit.
pub(crate) fn diagnostic(text: &str) -> String {
    let mut out: String = text.replace('\0', "\u{fffd}");
    if out.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nul_and_oversize() {
        assert!(text("t", "ok", 10).is_ok());
        assert!(text("t", "a\0b", 10).is_err());
        assert!(text("t", &"x".repeat(11), 10).is_err());
        assert!(check_json("j", &serde_json::json!({"a": ["b\u{0}"]})).is_err());
        assert!(check_json("j", &serde_json::json!({"a\u{0}": 1})).is_err());
        assert!(check_json("j", &serde_json::json!({"a": "\\u0000"})).is_ok());
        let big = serde_json::Value::String("x".repeat(MAX_JSON_BYTES));
        assert!(check_json("j", &big).is_err());
        // With its two quotes, exactly the limit, then one byte past it.
        let at_limit = serde_json::Value::String("x".repeat(MAX_JSON_BYTES - 2));
        assert!(check_json("j", &at_limit).is_ok());
        let past = serde_json::Value::String("x".repeat(MAX_JSON_BYTES - 1));
        let err = check_json("j", &past).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{} bytes", MAX_JSON_BYTES + 1)),
            "{err}"
        );
    }

    #[test]
    fn diagnostics_are_kept_clean() {
        assert_eq!(diagnostic("a\0b"), "a\u{fffd}b");
        let long = "é".repeat(MAX_TEXT_BYTES);
        let cut = diagnostic(&long);
        assert!(cut.len() <= MAX_TEXT_BYTES);
    }
}
