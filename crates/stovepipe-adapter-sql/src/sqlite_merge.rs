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

use std::collections::HashMap;
use std::fmt::Write as _;

use sea_orm::Value;

/// At most this many copies of a text in one call.
pub(crate) const MAX_COPIES: usize = 4;

/// One call of a merged batch: `sql` over `values`, standing for the
/// calls `members` of the batch (in order), each `statements` statements
/// of it.
#[derive(Debug)]
pub(crate) struct MergedCall {
    pub sql: String,
    pub values: Vec<Value>,
    pub members: Vec<usize>,
    pub statements: usize,
}

/// The calls that run `writes`: those with the same text merged, in
/// groups of a power of two up to [`MAX_COPIES`], in the order each text
/// first came.
pub(crate) fn merge(writes: &[(String, Vec<Value>)]) -> Vec<MergedCall> {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (sql, _)) in writes.iter().enumerate() {
        groups
            .entry(sql.as_str())
            .or_insert_with(|| {
                order.push(sql);
                Vec::new()
            })
            .push(i);
    }
    let mut calls = Vec::new();
    for sql in order {
        let members = &groups[sql];
        let statements = statement_count(sql);
        let mut rest = members.as_slice();
        while !rest.is_empty() {
            let take = chunk(rest.len());
            let (now, later) = rest.split_at(take);
            rest = later;
            calls.push(joined(sql, now, writes, statements));
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

fn joined(
    sql: &str,
    members: &[usize],
    writes: &[(String, Vec<Value>)],
    statements: usize,
) -> MergedCall {
    if let [only] = members {
        return MergedCall {
            sql: sql.to_owned(),
            values: writes[*only].1.clone(),
            members: vec![*only],
            statements,
        };
    }
    let mut text = String::with_capacity((sql.len() + 2) * members.len());
    let mut values = Vec::new();
    for (copy, &i) in members.iter().enumerate() {
        if copy > 0 {
            text.push_str(";\n");
        }
        renumber_into(&mut text, sql, values.len());
        values.extend(writes[i].1.iter().cloned());
    }
    MergedCall {
        sql: text,
        values,
        members: members.to_vec(),
        statements,
    }
}

/// What a lexer of SQL text meets at a byte.
#[derive(Clone, Copy, PartialEq, Eq)]
enum In {
    Code,
    Quoted(u8),
    LineComment,
    BlockComment,
}

/// Walks `sql`, calling `each` with its pieces in order: `(piece, true)`
/// outside quotes and comments, `(piece, false)` for a quoted name or
/// string or a comment, its delimiters included.
fn lex(sql: &str, mut each: impl FnMut(&str, bool)) {
    let bytes = sql.as_bytes();
    let mut state = In::Code;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        match state {
            In::Code => {
                let enter = match (b, next) {
                    (b'\'' | b'"' | b'`', _) => Some(In::Quoted(b)),
                    (b'-', Some(b'-')) => Some(In::LineComment),
                    (b'/', Some(b'*')) => Some(In::BlockComment),
                    _ => None,
                };
                if let Some(enter) = enter {
                    each(&sql[start..i], true);
                    start = i;
                    state = enter;
                    i += if enter == In::Quoted(b) { 1 } else { 2 };
                    continue;
                }
            }
            In::Quoted(q) if b == q => {
                // A doubled quote is the quote itself.
                if next == Some(q) {
                    i += 2;
                    continue;
                }
                each(&sql[start..=i], false);
                start = i + 1;
                state = In::Code;
            }
            In::LineComment if b == b'\n' => {
                each(&sql[start..=i], false);
                start = i + 1;
                state = In::Code;
            }
            In::BlockComment if b == b'*' && next == Some(b'/') => {
                each(&sql[start..i + 2], false);
                start = i + 2;
                state = In::Code;
                i += 2;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    each(&sql[start..], state == In::Code);
}

/// Appends `sql` to `out` with every `$n` placeholder outside quotes and
/// comments made `$(n + offset)`.
pub(crate) fn renumber_into(out: &mut String, sql: &str, offset: usize) {
    lex(sql, |piece, code| {
        if !code {
            out.push_str(piece);
            return;
        }
        let mut rest = piece;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            match rest[..digits].parse::<usize>() {
                Ok(n) => {
                    let _ = write!(out, "{}", n + offset);
                }
                Err(_) => out.push_str(&rest[..digits]),
            }
            rest = &rest[digits..];
        }
        out.push_str(rest);
    });
}

/// The statements SQLite finds in `sql`: its `;`-separated pieces that
/// hold more than blanks and comments.
pub(crate) fn statement_count(sql: &str) -> usize {
    let mut count = 0;
    // The statement being read holds more than blanks and comments.
    let mut open = false;
    lex(sql, |piece, code| {
        if !code {
            // A quoted piece is part of a statement; a comment is not.
            open |= !piece.starts_with("--") && !piece.starts_with("/*");
            return;
        }
        for (i, part) in piece.split(';').enumerate() {
            if i > 0 && std::mem::take(&mut open) {
                count += 1;
            }
            open |= !part.trim().is_empty();
        }
    });
    count + usize::from(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renumbered(sql: &str, offset: usize) -> String {
        let mut out = String::new();
        renumber_into(&mut out, sql, offset);
        out
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
        let shape: Vec<(&str, &[usize], usize, usize)> = calls
            .iter()
            .map(|c| {
                (
                    c.sql.as_str(),
                    c.members.as_slice(),
                    c.statements,
                    c.values.len(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("A $1; B $1;\nA $2; B $2", &[0, 2][..], 2, 2),
                ("A $1; B $1", &[3][..], 2, 1),
                ("C $1", &[1][..], 1, 1),
            ]
        );
        assert_eq!(calls[0].values, vec![Value::from(0i64), Value::from(2i64)]);
        assert_eq!([1, 2, 3, 4, 5, 7, 9].map(chunk), [1, 2, 2, 4, 4, 4, 4]);
    }
}
