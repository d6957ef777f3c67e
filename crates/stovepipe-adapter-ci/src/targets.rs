//! Targets reports: per-target results a build leaves behind, so a broken
//! build can be attributed to projects without re-running anything.
//!
//! Two formats, chosen by `build.targets_report`:
//! - a path ending in `.json`: `[{"target": "...", "status": "passed|failed"}]`;
//! - anything else: a glob of JUnit XML files; each `<testcase>` is a target
//!   named `classname.name` (just `name` without a class), failed when it has
//!   a `<failure>` or `<error>` child. Skipped test cases ran nothing and are
//!   left out: they are evidence of neither green nor red.
//!
//! The report only adds detail: a malformed or missing report never changes
//! the build's own verdict (the caller notes the error in `reason`).

use quick_xml::events::{BytesStart, Event};
use std::collections::BTreeMap;
use std::path::Path;
use stovepipe_entity::{TargetResult, TargetStatus};

/// Parses the report `spec` (relative to `dir` unless absolute).
///
/// The error is a human-readable sentence for the build's `reason`.
pub fn parse_targets_report(dir: &Path, spec: &str) -> Result<Vec<TargetResult>, String> {
    let is_json = Path::new(spec)
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    if is_json {
        parse_json(&dir.join(spec), spec)
    } else {
        parse_junit_glob(dir, spec)
    }
}

fn parse_json(path: &Path, spec: &str) -> Result<Vec<TargetResult>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("targets report {spec} could not be read: {e}"))?;
    let targets: Vec<TargetResult> = serde_json::from_str(&text)
        .map_err(|e| format!("targets report {spec} is malformed: {e}"))?;
    Ok(merge(targets))
}

fn parse_junit_glob(dir: &Path, spec: &str) -> Result<Vec<TargetResult>, String> {
    let pattern = dir.join(spec);
    let pattern = pattern.to_string_lossy();
    let paths =
        glob::glob(&pattern).map_err(|e| format!("targets report glob {spec} is invalid: {e}"))?;
    let mut targets = Vec::new();
    let mut files = 0usize;
    for entry in paths {
        let path = entry.map_err(|e| format!("targets report {spec}: {e}"))?;
        if !path.is_file() {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("JUnit report {} could not be read: {e}", path.display()))?;
        targets.extend(
            parse_junit(&text)
                .map_err(|e| format!("JUnit report {} is malformed: {e}", path.display()))?,
        );
    }
    if files == 0 {
        return Err(format!("targets report: no file matches {spec}"));
    }
    Ok(merge(targets))
}

/// The `<testcase>` being read.
struct Case {
    name: String,
    failed: bool,
    skipped: bool,
}

impl Case {
    /// What a child element of the case says about it.
    fn child(&mut self, element: &[u8]) {
        match element {
            b"failure" | b"error" => self.failed = true,
            b"skipped" => self.skipped = true,
            _ => {}
        }
    }

    fn result(self) -> Option<TargetResult> {
        if self.skipped && !self.failed {
            return None;
        }
        let status = if self.failed {
            TargetStatus::Failed
        } else {
            TargetStatus::Passed
        };
        Some(TargetResult {
            target: self.name,
            status,
        })
    }
}

/// Test cases of one JUnit XML document.
fn parse_junit(text: &str) -> Result<Vec<TargetResult>, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut targets = Vec::new();
    let mut current: Option<Case> = None;
    let mut saw_element = false;
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                saw_element = true;
                if e.name().as_ref() == b"testcase" {
                    current = Some(Case {
                        name: target_name(&e)?,
                        failed: false,
                        skipped: false,
                    });
                } else if let Some(case) = current.as_mut() {
                    case.child(e.name().as_ref());
                }
            }
            Event::Empty(e) => {
                saw_element = true;
                if e.name().as_ref() == b"testcase" {
                    targets.push(TargetResult {
                        target: target_name(&e)?,
                        status: TargetStatus::Passed,
                    });
                } else if let Some(case) = current.as_mut() {
                    case.child(e.name().as_ref());
                }
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => {
                targets.extend(current.take().and_then(Case::result));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_element {
        return Err("no XML element found".to_owned());
    }
    if current.is_some() {
        return Err("unterminated <testcase>".to_owned());
    }
    Ok(targets)
}

fn target_name(e: &BytesStart<'_>) -> Result<String, String> {
    let attr = |key: &str| -> Result<Option<String>, String> {
        match e.try_get_attribute(key).map_err(|e| e.to_string())? {
            Some(a) => a
                .unescape_value()
                .map(|v| Some(v.into_owned()))
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    };
    let name = attr("name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| "a <testcase> has no name attribute".to_owned())?;
    Ok(match attr("classname")?.filter(|c| !c.is_empty()) {
        Some(class) => format!("{class}.{name}"),
        None => name,
    })
}

/// One result per target, sorted; a target reported twice is failed if any
/// report says so (a retry that passed does not hide the failure).
fn merge(targets: Vec<TargetResult>) -> Vec<TargetResult> {
    let mut by_name: BTreeMap<String, TargetStatus> = BTreeMap::new();
    for t in targets {
        let entry = by_name.entry(t.target).or_insert(t.status);
        if t.status == TargetStatus::Failed {
            *entry = TargetStatus::Failed;
        }
    }
    by_name
        .into_iter()
        .map(|(target, status)| TargetResult { target, status })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, status: TargetStatus) -> TargetResult {
        TargetResult {
            target: name.to_owned(),
            status,
        }
    }

    #[test]
    fn junit_cases() {
        let xml = r#"<?xml version="1.0"?>
<testsuites>
  <testsuite name="s">
    <testcase classname="pay.api" name="ok"/>
    <testcase classname="pay.api" name="bad"><failure message="x">boom</failure></testcase>
    <testcase classname="pay.api" name="err"><error/></testcase>
    <testcase classname="pay.api" name="skip"><skipped/></testcase>
    <testcase name="bare"><system-out>hi</system-out></testcase>
  </testsuite>
</testsuites>"#;
        assert_eq!(
            merge(parse_junit(xml).unwrap()),
            vec![
                t("bare", TargetStatus::Passed),
                t("pay.api.bad", TargetStatus::Failed),
                t("pay.api.err", TargetStatus::Failed),
                t("pay.api.ok", TargetStatus::Passed),
            ]
        );
    }

    #[test]
    fn malformed_junit_is_an_error() {
        for bad in [
            "",
            "not xml at all",
            "<testsuite><testcase name=\"a\"></testsuite>",
            "<testsuite><testcase classname=\"a\"/></testsuite>",
        ] {
            assert!(parse_junit(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn failure_wins_on_duplicates() {
        let merged = merge(vec![
            t("a", TargetStatus::Failed),
            t("a", TargetStatus::Passed),
            t("b", TargetStatus::Passed),
        ]);
        assert_eq!(
            merged,
            vec![t("a", TargetStatus::Failed), t("b", TargetStatus::Passed)]
        );
    }
}
