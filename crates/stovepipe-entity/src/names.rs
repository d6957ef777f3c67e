//! Validated names: queues and projects.

use crate::error::InvalidValue;
use serde::{Deserialize, Serialize};

/// Shared boilerplate for string newtypes that validate on construction and
/// on deserialisation (a bad value in a stored row or a request body is an
/// error, never a half-valid value).
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident, $validate:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value`; the error names the value and what was expected.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                $validate(&value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidValue;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use validated_string;

/// Longest queue name in bytes.
pub const MAX_QUEUE_NAME: usize = 200;
/// Longest project name in bytes.
pub const MAX_PROJECT_NAME: usize = 100;

validated_string!(
    /// A validation namespace such as `monorepo/main`: 1..=200 bytes of
    /// `[A-Za-z0-9._/-]`, no `//`, no leading or trailing `/`.
    QueueName,
    validate_queue_name
);

validated_string!(
    /// A named slice of a repository. The empty name means "the whole
    /// repository" ([`ProjectName::whole_repo`]); otherwise 1..=100 bytes of
    /// `[A-Za-z0-9._-]` (no `/`, so it can name a ref `verified/<project>`).
    ProjectName,
    validate_project_name
);

fn validate_queue_name(v: &str) -> Result<(), InvalidValue> {
    let bad = |why: &str| Err(InvalidValue::new("queue name", v, why));
    if v.is_empty() {
        return bad("a non-empty name");
    }
    if v.len() > MAX_QUEUE_NAME {
        return bad("at most 200 bytes");
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return bad(&format!("only [A-Za-z0-9._/-], found {c:?}"));
    }
    if v.starts_with('/') || v.ends_with('/') {
        return bad("no leading or trailing '/'");
    }
    if v.contains("//") {
        return bad("no empty path segment ('//')");
    }
    if v.split('/').any(|seg| seg == "." || seg == "..") {
        return bad("no '.' or '..' segment");
    }
    Ok(())
}

pub(crate) fn validate_simple_name(
    kind: &'static str,
    v: &str,
    max: usize,
) -> Result<(), InvalidValue> {
    if v.len() > max {
        return Err(InvalidValue::new(kind, v, format!("at most {max} bytes")));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(InvalidValue::new(
            kind,
            v,
            format!("only [A-Za-z0-9._-], found {c:?}"),
        ));
    }
    if v.starts_with('.') {
        return Err(InvalidValue::new(kind, v, "no leading '.'"));
    }
    Ok(())
}

fn validate_project_name(v: &str) -> Result<(), InvalidValue> {
    validate_simple_name("project name", v, MAX_PROJECT_NAME)
}

impl ProjectName {
    /// The whole-repository scope (the empty project name).
    pub fn whole_repo() -> Self {
        Self(String::new())
    }

    pub fn is_whole_repo(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for ProjectName {
    fn default() -> Self {
        Self::whole_repo()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_queue(input: &str, ok: bool) {
        assert_eq!(QueueName::new(input).is_ok(), ok, "queue name {input:?}");
    }

    #[test]
    fn queue_names() {
        for (input, ok) in [
            ("monorepo/main", true),
            ("a", true),
            ("team.x/svc_1/release-2", true),
            ("", false),
            ("/main", false),
            ("main/", false),
            ("a//b", false),
            ("a b", false),
            ("a/../b", false),
            ("ünicode", false),
            (&"x".repeat(200), true),
            (&"x".repeat(201), false),
        ] {
            check_queue(input, ok);
        }
    }

    #[test]
    fn invalid_queue_name_names_value_and_expectation() {
        let err = QueueName::new("a b").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"a b\""), "{msg}");
        assert!(msg.contains("[A-Za-z0-9._/-]"), "{msg}");
    }

    #[test]
    fn project_names() {
        assert!(ProjectName::new("").unwrap().is_whole_repo());
        assert!(ProjectName::new("payments").is_ok());
        assert!(ProjectName::new("a/b").is_err());
        assert!(ProjectName::new(".hidden").is_err());
    }

    #[test]
    fn deserialisation_validates() {
        let bad: Result<QueueName, _> = serde_json::from_str("\"a//b\"");
        assert!(bad.is_err());
        let good: QueueName = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(good.as_str(), "a/b");
    }
}
