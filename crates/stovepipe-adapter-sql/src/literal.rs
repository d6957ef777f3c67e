//! Postgres: values written into SQL text, for the statements that go out
//! as one message of the simple query protocol (a batch of statements
//! outside a transaction, `write_batch`), where there are no bind
//! parameters.
//!
//! A value is rendered with the Postgres type sqlx would have bound it as,
//! so that `PREPARE name (<types>) AS <statement>` followed by `EXECUTE
//! name(<literals>)` runs the statement as a bound one would. Strings are
//! escape-string constants (`E'…'`, backslash and quote escaped), so they
//! mean the same whatever `standard_conforming_strings` says.

use sea_orm::Value;
use std::fmt::Write;

/// `s` as a string constant.
pub(crate) fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A float constant: Rust's shortest text that reads back as the same
/// value (`shown`), quoted so the server reads it as the parameter's type
/// directly; the names Postgres gives the values that are not numbers.
fn float(x: f64, shown: &str) -> String {
    if x.is_nan() {
        "'NaN'".to_owned()
    } else if x.is_infinite() {
        if x > 0.0 { "'Infinity'" } else { "'-Infinity'" }.to_owned()
    } else {
        format!("'{shown}'")
    }
}

/// The Postgres type sqlx binds `value` as, and `value` as a constant of
/// it (`NULL` for none); `None` for a kind of value this does not render
/// (the caller binds it instead).
pub(crate) fn typed(value: &Value) -> Option<(&'static str, String)> {
    fn or_null<T>(v: Option<T>, show: impl FnOnce(T) -> String) -> String {
        v.map_or_else(|| "NULL".to_owned(), show)
    }
    Some(match value {
        Value::Bool(v) => ("boolean", or_null(*v, |b| b.to_string())),
        Value::SmallInt(v) => ("smallint", or_null(*v, |n| n.to_string())),
        Value::Int(v) => ("integer", or_null(*v, |n| n.to_string())),
        Value::BigInt(v) => ("bigint", or_null(*v, |n| n.to_string())),
        Value::Float(v) => ("real", or_null(*v, |x| float(f64::from(x), &x.to_string()))),
        Value::Double(v) => (
            "double precision",
            or_null(*v, |x| float(x, &x.to_string())),
        ),
        Value::String(v) => ("text", or_null(v.as_deref(), |s| text(s))),
        Value::Json(v) => ("jsonb", or_null(v.as_deref(), |j| text(&j.to_string()))),
        Value::Bytes(v) => (
            "bytea",
            or_null(v.as_deref(), |b| {
                let mut hex = String::with_capacity(b.len() * 2 + 6);
                hex.push_str("E'\\\\x");
                for byte in b {
                    let _ = write!(hex, "{byte:02x}");
                }
                hex.push('\'');
                hex
            }),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_quotes_and_backslashes() {
        assert_eq!(text("it's"), "E'it''s'");
        assert_eq!(text(r"a\b"), r"E'a\\b'");
        assert_eq!(text(""), "E''");
    }

    #[test]
    fn values_carry_the_type_sqlx_binds_them_as() {
        assert_eq!(typed(&Value::from(7_i64)), Some(("bigint", "7".into())));
        assert_eq!(typed(&Value::from(-3_i32)), Some(("integer", "-3".into())));
        assert_eq!(typed(&Value::from(true)), Some(("boolean", "true".into())));
        assert_eq!(typed(&Value::String(None)), Some(("text", "NULL".into())));
        assert_eq!(
            typed(&Value::from(serde_json::json!({"a": "b'c"}))),
            Some(("jsonb", r#"E'{"a":"b''c"}'"#.into()))
        );
        assert_eq!(
            typed(&Value::Bytes(Some(Box::new(vec![0, 255])))),
            Some(("bytea", r"E'\\x00ff'".into()))
        );
        assert_eq!(
            typed(&Value::Double(Some(0.1))),
            Some(("double precision", "'0.1'".into()))
        );
        assert_eq!(
            typed(&Value::Double(Some(f64::NEG_INFINITY))),
            Some(("double precision", "'-Infinity'".into()))
        );
        assert_eq!(
            typed(&Value::Float(Some(f32::NAN))),
            Some(("real", "'NaN'".into()))
        );
        assert_eq!(typed(&Value::BigUnsigned(Some(1))), None, "not rendered");
    }
}
