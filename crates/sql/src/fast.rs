//! A lexical fast path for the most common statement of all: a plain `SELECT` with no function
//! call, subquery, locking clause or `INTO`. Such a statement cannot write, so it is classified
//! without running the parser. pgbench's `SELECT abalance FROM pgbench_accounts WHERE aid = 42`
//! has a different literal every time, so it would otherwise be parsed every time.
//!
//! The scan is conservative: anything it does not fully understand (dollar quotes, escape
//! strings, parentheses, several statements, a suspicious keyword) falls back to the parser.

/// Keywords that may make a `SELECT` write, lock, or be something else.
const DENY: &[&str] = &["INTO", "FOR", "WITH", "LOCK", "NOWAIT"];

/// What the lexical scan recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fast {
    /// A plain read-only `SELECT`.
    PlainSelect,
    /// A single `INSERT`/`UPDATE`/`DELETE` that calls no advisory-lock function: a write with no
    /// effect on the session.
    PlainDml,
}

/// True when `sql` is a plain read-only `SELECT` by the rules above.
pub(crate) fn is_plain_select(sql: &str) -> bool {
    scan(sql) == Some(Fast::PlainSelect)
}

/// Recognises a plain `SELECT` or a plain single DML statement; `None` means "use the parser".
pub(crate) fn scan(sql: &str) -> Option<Fast> {
    let mut kind = None;
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut first_word = true;
    let mut ended = false;
    // The last word and the one before it, while nothing but whitespace follows: a word right
    // before `(` is a function call unless it is a keyword or the table after INTO.
    let mut last_word: Option<&str> = None;
    let mut word_before: Option<&str> = None;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                // Comments (hints are read elsewhere); nested comments fall back.
                let end = sql[i + 2..].find("*/")?;
                if sql[i + 2..i + 2 + end].contains("/*") {
                    return None;
                }
                i += end + 4;
            }
            _ if ended => return None,
            b';' => {
                ended = true;
                i += 1;
            }
            // A standard string ('' is an escaped quote; E'' strings start with a word character
            // and are rejected below) or a quoted identifier ("" is an escaped quote).
            b'\'' => {
                i = skip_quoted(bytes, i, b'\'')?;
                last_word = None;
            }
            // A zero-length identifier is an error; let the parser report it.
            b'"' if bytes.get(i + 1) == Some(&b'"') => return None,
            b'"' => {
                let start = i;
                i = skip_quoted(bytes, i, b'"')?;
                // A quoted name before `(` is a call unless it is the table after INTO.
                word_before = last_word;
                last_word = Some(&sql[start..i]);
            }
            // `$1`: a parameter. Any other `$` starts a dollar-quoted string.
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            // Function calls and subqueries: harmless in DML (it goes to the primary anyway).
            b'(' if kind == Some(Fast::PlainDml) => {
                if let Some(word) = last_word {
                    let into_table = word_before.is_some_and(|w| w.eq_ignore_ascii_case("INTO"));
                    if !into_table && !harmless_call(word) {
                        // A call that may change the session (set_config, a user function):
                        // let the parser look at it.
                        return None;
                    }
                }
                last_word = None;
                i += 1;
            }
            b')' | b'[' | b']' if kind == Some(Fast::PlainDml) => {
                last_word = None;
                i += 1;
            }
            b'(' | b'$' | b'\\' | b'[' => return None,
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &sql[start..i];
                word_before = last_word;
                last_word = Some(word);
                // E'...', U&'...', B'...', X'...' and similar prefixed strings: let the parser do it.
                if matches!(bytes.get(i), Some(b'\'') | Some(b'&')) {
                    return None;
                }
                if first_word {
                    kind = if word.eq_ignore_ascii_case("SELECT") {
                        Some(Fast::PlainSelect)
                    } else if ["INSERT", "UPDATE", "DELETE"]
                        .iter()
                        .any(|k| word.eq_ignore_ascii_case(k))
                    {
                        Some(Fast::PlainDml)
                    } else {
                        return None;
                    };
                    first_word = false;
                } else if kind == Some(Fast::PlainSelect)
                    && (DENY.iter().any(|d| word.eq_ignore_ascii_case(d))
                        || crate::functions::names_backends(word, true))
                {
                    return None;
                } else if kind == Some(Fast::PlainDml)
                    && word.to_ascii_lowercase().contains("advisory")
                {
                    // An advisory lock taken in a DML statement pins the session: parse it.
                    return None;
                }
            }
            _ if c.is_ascii_digit() => {
                last_word = None;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
            }
            // Operators and punctuation of a plain expression.
            b'=' | b'<' | b'>' | b'!' | b'+' | b'-' | b'*' | b'/' | b'%' | b',' | b'.' | b':'
            | b'|' | b'&' | b'~' | b'^' | b'#' | b'@' => {
                last_word = None;
                i += 1;
            }
            _ => return None,
        }
    }
    kind
}

/// A word before `(` in plain DML that cannot change the session: a keyword that takes a
/// parenthesised list, or a built-in known to be harmless (sequence functions included: their
/// per-session `currval` state is documented as not isolated).
fn harmless_call(word: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "VALUES",
        "IN",
        "ANY",
        "ALL",
        "SOME",
        "EXISTS",
        "ARRAY",
        "SET",
        "AND",
        "OR",
        "NOT",
        "WHERE",
        "SELECT",
        "FROM",
        "USING",
        "RETURNING",
        "ON",
        "CONFLICT",
        "DO",
        "UPDATE",
        "AS",
    ];
    const SEQUENCES: &[&str] = &["nextval", "currval", "setval", "lastval"];
    KEYWORDS.iter().any(|k| word.eq_ignore_ascii_case(k))
        || SEQUENCES.iter().any(|k| word.eq_ignore_ascii_case(k))
        || crate::functions::is_known_read(word)
}

/// The index just past the quoted text starting at `start` (a doubled quote is an escaped one);
/// `None` when it is not terminated.
fn skip_quoted(bytes: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match bytes.get(i)? {
            q if *q == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            q if *q == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_table() {
        let yes = [
            "SELECT 1",
            "select abalance from pgbench_accounts where aid = 4242;",
            "SELECT a, b FROM t WHERE c = 'x(y);FOR' AND d <> 3.5e3",
            "  -- comment\n SELECT * FROM \"My Table\" /* c */ ORDER BY 1 LIMIT 10",
            "SELECT a::text FROM t WHERE b = 'it''s'",
            "SELECT $1",
        ];
        let no = [
            "",
            "-- only a comment",
            "SELECT nextval('s')",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * INTO x FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT 1; SELECT 2",
            "SELECT 1; DELETE FROM t",
            "SELECT E'\\x41'",
            "SELECT $$x$$",
            "SELECT $a$x$a$",
            "SELECT \"\" FROM t",
            "SELECT * FROM t WHERE a IN (SELECT 1)",
            "INSERT INTO t VALUES (1)",
            "SELECT 'unterminated",
            "SELECT /* nested /* comment */ */ 1",
            "SELECT a FROM t WHERE b = ANY('{1}')",
            "SELECT ARRAY[1]",
            "selectx 1",
        ];
        for sql in yes {
            assert!(is_plain_select(sql), "should be fast: {sql}");
        }
        for sql in no {
            assert!(!is_plain_select(sql), "should not be fast: {sql}");
        }
        let dml = [
            (
                "UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 42;",
                Some(Fast::PlainDml),
            ),
            (
                "INSERT INTO t (a, b) VALUES (1, now())",
                Some(Fast::PlainDml),
            ),
            (
                "delete from t where id in (select id from u)",
                Some(Fast::PlainDml),
            ),
            ("UPDATE t SET a = pg_advisory_lock(1)", None),
            ("UPDATE t SET a = 1; SET search_path = x", None),
            ("INSERT INTO t VALUES ($$x$$)", None),
            (
                "INSERT INTO t(a) VALUES (nextval('s'))",
                Some(Fast::PlainDml),
            ),
            ("UPDATE t SET a = set_config('x.y', '1', false)", None),
            ("UPDATE t SET a = my_function(1)", None),
            ("UPDATE t SET a = \"set_config\"('x.y', '1', false)", None),
            ("INSERT INTO \"T\" (a) VALUES (1)", Some(Fast::PlainDml)),
            ("INSERT INTO t VALUES (lower ('X'))", Some(Fast::PlainDml)),
            ("TRUNCATE t", None),
        ];
        for (sql, expected) in dml {
            assert_eq!(scan(sql), expected, "{sql}");
        }
    }
}
