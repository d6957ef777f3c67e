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
//!
//! Constants are written straight into the text being built
//! ([`write_typed`]), never into a string of their own: a batch renders
//! every value of every write, and a string per value (for JSON two: its
//! text, then that text escaped) was the largest share of the pipeline's
//! allocations on Postgres (docs/benchmarks.md, 2026-12-06, ninth session).

use sea_orm::Value;
use std::fmt::{self, Display, Write};

/// `s` as a string constant.
pub(crate) fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    write_text(&mut out, s);
    out
}

/// Appends what `shown` displays as a string constant.
fn write_text(out: &mut String, shown: impl Display) {
    out.push_str("E'");
    // Cannot fail: it only appends to a string.
    let _ = write!(Escaped(out), "{shown}");
    out.push('\'');
}

/// Appends what is written to it with each quote and backslash doubled.
struct Escaped<'a>(&'a mut String);

impl Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(['\'', '\\']) {
            let (plain, special) = rest.split_at(at);
            let (c, after) = special.split_at(1);
            self.0.push_str(plain);
            self.0.push_str(c);
            self.0.push_str(c);
            rest = after;
        }
        self.0.push_str(rest);
        Ok(())
    }
}

/// Appends a float constant: Rust's shortest text that reads back as the
/// same value (`shown`), quoted so the server reads it as the parameter's
/// type directly; the names Postgres gives the values that are not
/// numbers.
fn write_float(out: &mut String, x: f64, shown: impl Display) {
    if x.is_nan() {
        out.push_str("'NaN'");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "'Infinity'" } else { "'-Infinity'" });
    } else {
        let _ = write!(out, "'{shown}'");
    }
}

/// Appends `value` to `out` as a constant (`NULL` for none) of the Postgres
/// type sqlx binds it as, and returns that type; `None`, having appended
/// nothing, for a kind of value this does not render (the caller binds it
/// instead).
pub(crate) fn write_typed(out: &mut String, value: &Value) -> Option<&'static str> {
    /// Appends `v` by `show`, or NULL, and gives back `ty`.
    fn typed<T>(
        out: &mut String,
        v: Option<T>,
        ty: &'static str,
        show: impl FnOnce(&mut String, T),
    ) -> &'static str {
        match v {
            Some(v) => show(out, v),
            None => out.push_str("NULL"),
        }
        ty
    }
    fn shown(out: &mut String, v: impl Display) {
        let _ = write!(out, "{v}");
    }
    let ty = match value {
        Value::Bool(v) => typed(out, *v, "boolean", shown),
        Value::SmallInt(v) => typed(out, *v, "smallint", shown),
        Value::Int(v) => typed(out, *v, "integer", shown),
        Value::BigInt(v) => typed(out, *v, "bigint", shown),
        Value::Float(v) => typed(out, *v, "real", |out, x| {
            write_float(out, f64::from(x), x);
        }),
        Value::Double(v) => typed(out, *v, "double precision", |out, x| {
            write_float(out, x, x);
        }),
        Value::String(v) => typed(out, v.as_deref(), "text", write_text),
        Value::Json(v) => typed(out, v.as_deref(), "jsonb", write_text),
        Value::Bytes(v) => typed(out, v.as_deref(), "bytea", |out, bytes| {
            out.push_str("E'\\\\x");
            for byte in bytes {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('\'');
        }),
        _ => return None,
    };
    Some(ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `value`'s type and constant, as `write_typed` gives them.
    fn typed(value: &Value) -> Option<(&'static str, String)> {
        let mut out = String::new();
        let ty = write_typed(&mut out, value)?;
        Some((ty, out))
    }

    #[test]
    fn strings_escape_quotes_and_backslashes() {
        assert_eq!(text("it's"), "E'it''s'");
        assert_eq!(text(r"a\b"), r"E'a\\b'");
        assert_eq!(text(""), "E''");
        assert_eq!(text(r"'\'"), r"E'''\\'''", "each doubled, side by side too");
        assert_eq!(text("é'ü"), "E'é''ü'", "characters beyond ASCII kept whole");
    }

    #[test]
    fn values_carry_the_type_sqlx_binds_them_as() {
        assert_eq!(typed(&Value::from(7_i64)), Some(("bigint", "7".into())));
        assert_eq!(typed(&Value::from(-3_i32)), Some(("integer", "-3".into())));
        assert_eq!(typed(&Value::from(true)), Some(("boolean", "true".into())));
        assert_eq!(typed(&Value::String(None)), Some(("text", "NULL".into())));
        assert_eq!(
            typed(&Value::from(serde_json::json!({"a": "b'c", "d": "e\\f"}))),
            Some(("jsonb", r#"E'{"a":"b''c","d":"e\\\\f"}'"#.into())),
            "the JSON text's own escapes are escaped again"
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

    #[test]
    fn constants_append_to_what_is_there_and_nothing_when_not_rendered() {
        let mut out = String::from("EXECUTE s(");
        assert_eq!(write_typed(&mut out, &Value::from("x")), Some("text"));
        out.push_str(", ");
        assert_eq!(write_typed(&mut out, &Value::BigUnsigned(Some(1))), None);
        assert_eq!(out, "EXECUTE s(E'x', ");
    }
}
