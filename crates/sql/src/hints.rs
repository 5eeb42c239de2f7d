//! Routing hints in a leading comment.

/// A hint the client gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// `/* pgrouter: primary */` or Pgpool-II's `/*NO LOAD BALANCE*/`.
    Primary,
    /// `/* pgrouter: replica */`: a replica is wanted (only honoured for read-only statements).
    Replica,
}

/// Looks at the comments before the first token for a hint.
pub fn leading_hint(sql: &str) -> Option<Hint> {
    let mut rest = sql.trim_start();
    loop {
        if let Some(body) = rest.strip_prefix("/*") {
            let end = body.find("*/")?;
            let text = body[..end].trim();
            if text.eq_ignore_ascii_case("NO LOAD BALANCE") {
                return Some(Hint::Primary);
            }
            if let Some(target) = strip_prefix_ci(text, "pgrouter:") {
                match target.trim().to_ascii_lowercase().as_str() {
                    "primary" => return Some(Hint::Primary),
                    "replica" => return Some(Hint::Replica),
                    _ => {}
                }
            }
            rest = body[end + 2..].trim_start();
        } else if let Some(body) = rest.strip_prefix("--") {
            rest = body
                .split_once('\n')
                .map(|(_, r)| r)
                .unwrap_or("")
                .trim_start();
        } else {
            return None;
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        let cases = [
            ("/* pgrouter: primary */ SELECT 1", Some(Hint::Primary)),
            ("/*pgrouter:replica*/SELECT 1", Some(Hint::Replica)),
            ("  /* PGROUTER: Primary */\nSELECT 1", Some(Hint::Primary)),
            ("/*NO LOAD BALANCE*/ SELECT 1", Some(Hint::Primary)),
            (
                "-- note\n/* pgrouter: primary */ SELECT 1",
                Some(Hint::Primary),
            ),
            (
                "/* other */ /* pgrouter: replica */ SELECT 1",
                Some(Hint::Replica),
            ),
            ("SELECT 1 /* pgrouter: primary */", None),
            ("/* pgrouter: nowhere */ SELECT 1", None),
            ("/* unterminated", None),
            ("", None),
        ];
        for (sql, expected) in cases {
            assert_eq!(leading_hint(sql), expected, "{sql}");
        }
    }
}
