//! SQLite: the calls of a batch that share a statement text run as one
//! call, their copies of the text one after another with their
//! placeholders renumbered.
//!
//! Every call to the writer is a hand-over to its connection's thread and
//! back: a command sent, the thread woken, its rows sent back, the caller
//! woken, the next command sent. Under load the writer spent about a
//! third of each call running and the rest waiting for the next command
//! or for a core (`perf sched`, 128 queues: 49 µs running, 22 µs woken
//! but not yet running, 72 µs waiting per call, 25 calls a batch), and it
//! is the one connection every write of the process goes through. A batch
//! holds few distinct texts (each stage's write, the receives, the acks),
//! so the calls that share one run in one command.
//!
//! One call's text of `n` copies is the same for every batch, so sqlx
//! prepares it once and keeps it in its statement cache; copies are
//! grouped in powers of two up to [`MAX_COPIES`] so that a text has at
//! most three forms (1, 2 and 4 copies), each prepared statement kept in
//! memory (with up to 8 copies the pipeline bench's RSS grew from 47 to
//! 72 MB at 128 queues). (A batch's calls joined as they came would be a
//! new text each time, and preparing every statement anew cost more than
//! the hand-overs it saved: 6–25 µs a statement.)

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;

use sea_orm::Value;

/// At most this many copies of a text in one call.
pub(crate) const MAX_COPIES: usize = 4;

/// One call of a merged batch: `sql` over `values`, standing for the
/// writes `members` of the batch (in order), each `statements` statements
/// of it (`None`: one write's own text, all of it its).
#[derive(Debug)]
pub(crate) struct MergedCall<'a> {
    pub sql: Cow<'a, str>,
    pub values: Vec<Value>,
    pub members: Vec<usize>,
    pub statements: Option<usize>,
}

/// The calls that run `writes`: those with the same text merged, in
/// groups of a power of two up to [`MAX_COPIES`], in the order each text
/// first came.
pub(crate) fn merge(writes: &[(String, Vec<Value>)]) -> Vec<MergedCall<'_>> {
    // A batch holds a handful of texts: a list is quicker than hashing
    // each write's kilobytes of text.
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, (sql, _)) in writes.iter().enumerate() {
        match groups.iter_mut().find(|(text, _)| *text == sql) {
            Some((_, members)) => members.push(i),
            None => groups.push((sql, vec![i])),
        }
    }
    let mut calls = Vec::new();
    for (sql, members) in groups {
        let template = (members.len() > 1).then(|| Template::new(sql));
        let mut rest = members.as_slice();
        while !rest.is_empty() {
            let (now, later) = rest.split_at(chunk(rest.len()));
            rest = later;
            calls.push(match (&template, now) {
                (Some(template), [_, _, ..]) => template.joined(now, writes),
                _ => MergedCall {
                    sql: sql.into(),
                    values: writes[now[0]].1.clone(),
                    members: now.to_vec(),
                    statements: template.as_ref().map(|t| t.statements),
                },
            });
        }
    }
    calls
}

/// The largest power of two up to [`MAX_COPIES`] and `n`.
fn chunk(n: usize) -> usize {
    let mut size = 1;
    while size * 2 <= n.min(MAX_COPIES) {
        size *= 2;
    }
    size
}

/// A statement text cut at its placeholders (`$n` outside quotes and
/// comments), to be written out again with them renumbered, and the
/// statements SQLite finds in it (its `;`-separated pieces that hold more
/// than blanks and comments).
struct Template<'a> {
    /// The text around the placeholders: one more than `numbers`.
    texts: Vec<&'a str>,
    numbers: Vec<usize>,
    statements: usize,
}

impl<'a> Template<'a> {
    fn new(sql: &'a str) -> Self {
        let mut texts = Vec::new();
        let mut numbers = Vec::new();
        let mut statements = 0;
        // The statement being read holds more than blanks and comments.
        let mut open = false;
        let mut cut = 0;
        lex(sql, |range, code| {
            let piece = &sql[range.clone()];
            if !code {
                // A quoted piece is part of a statement; a comment is not.
                open |= !piece.starts_with("--") && !piece.starts_with("/*");
                return;
            }
            for (i, part) in piece.split(';').enumerate() {
                if i > 0 && std::mem::take(&mut open) {
                    statements += 1;
                }
                open |= !part.trim().is_empty();
            }
            let mut at = range.start;
            while let Some(found) = sql[at..range.end].find('$') {
                let digits_from = at + found + 1;
                let digits = sql[digits_from..range.end]
                    .bytes()
                    .take_while(u8::is_ascii_digit)
                    .count();
                at = digits_from + digits;
                if let Ok(n) = sql[digits_from..at].parse() {
                    texts.push(&sql[cut..digits_from]);
                    numbers.push(n);
                    cut = at;
                }
            }
        });
        texts.push(&sql[cut..]);
        Self {
            texts,
            numbers,
            statements: statements + usize::from(open),
        }
    }

    /// Appends the text to `out` with every placeholder `$n` made
    /// `$(n + offset)`.
    fn write(&self, out: &mut String, offset: usize) {
        for (text, n) in self.texts.iter().zip(&self.numbers) {
            out.push_str(text);
            let _ = write!(out, "{}", n + offset);
        }
        out.push_str(self.texts.last().copied().unwrap_or_default());
    }

    /// One call of the copies of this text for `members` of `writes`.
    fn joined(&self, members: &[usize], writes: &[(String, Vec<Value>)]) -> MergedCall<'a> {
        let length: usize = self.texts.iter().map(|t| t.len() + 4).sum();
        let mut sql = String::with_capacity(length * members.len());
        let mut values = Vec::new();
        for (copy, &i) in members.iter().enumerate() {
            if copy > 0 {
                sql.push_str(";\n");
            }
            self.write(&mut sql, values.len());
            values.extend(writes[i].1.iter().cloned());
        }
        MergedCall {
            sql: sql.into(),
            values,
            members: members.to_vec(),
            statements: Some(self.statements),
        }
    }
}

/// Walks `sql`, calling `each` with the ranges of its pieces in order:
/// `(range, true)` outside quotes and comments, `(range, false)` for a
/// quoted name or string or a comment, its delimiters included. It jumps
/// from one byte that matters to the next.
fn lex(sql: &str, mut each: impl FnMut(Range<usize>, bool)) {
    let bytes = sql.as_bytes();
    let next = |from: usize, hit: &dyn Fn(u8) -> bool| {
        bytes[from.min(bytes.len())..]
            .iter()
            .position(|&b| hit(b))
            .map_or(bytes.len(), |d| from + d)
    };
    let mut start = 0;
    let mut i = 0;
    loop {
        // Outside: the next byte that may open a quote or a comment.
        i = next(i, &|b| matches!(b, b'\'' | b'"' | b'`' | b'-' | b'/'));
        let Some(&b) = bytes.get(i) else { break };
        let end = match (b, bytes.get(i + 1)) {
            (b'\'' | b'"' | b'`', _) => {
                // The closing quote; a doubled one is the quote itself.
                let mut close = next(i + 1, &|c| c == b);
                while bytes.get(close + 1) == Some(&b) {
                    close = next(close + 2, &|c| c == b);
                }
                (close + 1).min(bytes.len())
            }
            (b'-', Some(b'-')) => (next(i + 2, &|c| c == b'\n') + 1).min(bytes.len()),
            (b'/', Some(b'*')) => sql[i + 2..].find("*/").map_or(bytes.len(), |d| i + d + 4),
            _ => {
                i += 1;
                continue;
            }
        };
        each(start..i, true);
        each(i..end, false);
        start = end;
        i = end;
    }
    each(start..bytes.len(), true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renumbered(sql: &str, offset: usize) -> String {
        let mut out = String::new();
        Template::new(sql).write(&mut out, offset);
        out
    }

    fn statement_count(sql: &str) -> usize {
        Template::new(sql).statements
    }

    #[test]
    fn placeholders_outside_quotes_and_comments_are_renumbered() {
        assert_eq!(
            renumbered("SELECT $1, '$2', \"$3\", $10 -- $4\n, /* $5 */ $2", 7),
            "SELECT $8, '$2', \"$3\", $17 -- $4\n, /* $5 */ $9"
        );
        assert_eq!(
            renumbered("SELECT 'it''s $1', $1", 2),
            "SELECT 'it''s $1', $3"
        );
        assert_eq!(renumbered("SELECT $name, $", 2), "SELECT $name, $");
        // Minus and slash alone open nothing; a doubled quote closes
        // nothing; a comment or a quote may run to the end.
        assert_eq!(
            renumbered("SELECT $1 - $2 / $3, 'a''$1''', $4 -- $5", 1),
            "SELECT $2 - $3 / $4, 'a''$1''', $5 -- $5"
        );
        assert_eq!(renumbered("SELECT $1, 'open $2", 1), "SELECT $2, 'open $2");
        assert_eq!(
            renumbered("SELECT $1 /* open $2", 1),
            "SELECT $2 /* open $2"
        );
    }

    #[test]
    fn statements_are_counted_as_sqlite_splits_them() {
        assert_eq!(statement_count("SELECT 1"), 1);
        assert_eq!(statement_count("SELECT 1;"), 1);
        assert_eq!(statement_count("SELECT 1; SELECT ';'; -- ;\n"), 2);
        assert_eq!(statement_count("BEGIN;\nSELECT 1 /* ; */;\nCOMMIT"), 3);
        assert_eq!(statement_count(" ; ;"), 0);
    }

    #[test]
    fn calls_of_one_text_merge_in_powers_of_two() {
        let w = |sql: &str, v: i64| (sql.to_owned(), vec![Value::from(v)]);
        let writes = vec![
            w("A $1; B $1", 0),
            w("C $1", 1),
            w("A $1; B $1", 2),
            w("A $1; B $1", 3),
        ];
        let calls = merge(&writes);
        let shape: Vec<(&str, &[usize], Option<usize>, usize)> = calls
            .iter()
            .map(|c| {
                (
                    c.sql.as_ref(),
                    c.members.as_slice(),
                    c.statements,
                    c.values.len(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("A $1; B $1;\nA $2; B $2", &[0, 2][..], Some(2), 2),
                ("A $1; B $1", &[3][..], Some(2), 1),
                ("C $1", &[1][..], None, 1),
            ]
        );
        assert_eq!(calls[0].values, vec![Value::from(0i64), Value::from(2i64)]);
        assert_eq!([1, 2, 3, 4, 5, 7, 9].map(chunk), [1, 2, 2, 4, 4, 4, 4]);
    }
}
