//! Reading `pgpool.conf`: `name = value` lines as PostgreSQL's configuration files write them
//! (`#` comments, values bare or in single quotes with `''` for a quote; the `=` optional).

use std::collections::BTreeMap;

/// A line that is not a parameter setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ConfError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Every parameter set in the file, by lower-case name, with its value and line; a parameter set
/// twice keeps its last value, as in Pgpool-II.
pub fn parse(text: &str) -> Result<BTreeMap<String, (String, usize)>, ConfError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let error = |reason: &str| ConfError {
            line,
            reason: reason.to_owned(),
        };
        let rest = raw.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        if name_len == 0 {
            return Err(error("expected a parameter name"));
        }
        let name = rest[..name_len].to_ascii_lowercase();
        let rest = rest[name_len..].trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
        let (value, after) = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((j, c)) = chars.next() {
                if c == '\'' {
                    if quoted[j + 1..].starts_with('\'') {
                        value.push('\'');
                        chars.next();
                        continue;
                    }
                    end = Some(j + 1);
                    break;
                }
                value.push(c);
            }
            let end = end.ok_or_else(|| error("unterminated quoted value"))?;
            (value, &quoted[end..])
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '#')
                .unwrap_or(rest.len());
            (rest[..end].to_owned(), &rest[end..])
        };
        let after = after.trim_start();
        if !(after.is_empty() || after.starts_with('#')) {
            return Err(error("unexpected text after the value"));
        }
        out.insert(name, (value, line));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn settings_as_pgpool_writes_them() {
        let text = "# comment\n\
                    backend_hostname0 = 'db0.example' # the primary\n\
                    Port = 9999\n\
                    load_balance_mode=on\n\
                    write_function_list = 'nextval,setval,''odd'''\n\
                    health_check_period 10\n\
                    port = 5433\n";
        let got = parse(text).unwrap();
        let value = |k: &str| got.get(k).map(|(v, _)| v.as_str());
        assert_eq!(value("backend_hostname0"), Some("db0.example"));
        assert_eq!(value("port"), Some("5433"), "the last setting wins");
        assert_eq!(value("load_balance_mode"), Some("on"));
        assert_eq!(value("write_function_list"), Some("nextval,setval,'odd'"));
        assert_eq!(value("health_check_period"), Some("10"));
        for bad in ["= 1", "a = 'open", "a = 1 2"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }
    }
}
