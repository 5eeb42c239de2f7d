//! `pool_hba.conf` (the lines of PostgreSQL's `pg_hba.conf`) to pgrouter's `access:` rules.

use crate::{Outcome, ReportLine};
use serde_yaml_ng::{Mapping, Value};

/// The access rules `text` describes, in order, and a report line for each line of it.
pub fn rules(text: &str) -> (Vec<Value>, Vec<ReportLine>) {
    let mut rules = Vec::new();
    let mut report = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let what = format!("pool_hba.conf:{}", i + 1);
        let outcome = match rule(line) {
            Ok(rule) => {
                rules.push(Value::Mapping(rule));
                Outcome::Mapped(format!("access[{}]: {line}", rules.len() - 1))
            }
            Err(why) => Outcome::Unsupported(format!("{line}: {why}")),
        };
        report.push(ReportLine { what, outcome });
    }
    (rules, report)
}

fn rule(line: &str) -> Result<Mapping, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (kind, rest) = fields.split_first().ok_or("empty line")?;
    let kind = match *kind {
        "local" | "host" | "hostssl" | "hostnossl" => *kind,
        other => {
            return Err(format!(
                "connection type {other} (pgrouter has local, host, hostssl, hostnossl)"
            ))
        }
    };
    let (database, user, rest) = match rest {
        [d, u, rest @ ..] => (*d, *u, rest),
        _ => return Err("expected a database and a user".into()),
    };
    let (address, rest) = if kind == "local" {
        ("all".to_owned(), rest)
    } else {
        match rest {
            [addr, mask, rest @ ..]
                if addr.parse::<std::net::IpAddr>().is_ok()
                    && mask.parse::<std::net::IpAddr>().is_ok() =>
            {
                (format!("{addr}/{}", prefix(mask)?), rest)
            }
            [addr, rest @ ..] => (address(addr)?, rest),
            [] => return Err("expected an address".into()),
        }
    };
    let method = match rest.first().copied() {
        Some(m @ ("trust" | "reject" | "md5" | "scram-sha-256")) => m,
        Some("cert") if kind == "hostssl" => "cert",
        Some("password") => {
            return Err("method password (a cleartext password): use md5 or scram-sha-256".into())
        }
        Some(other) => {
            return Err(format!(
                "method {other} (pgrouter has trust, reject, md5, scram-sha-256, cert)"
            ))
        }
        None => return Err("expected a method".into()),
    };
    if rest.len() > 1 {
        return Err(format!("options {:?} (pgrouter takes none)", &rest[1..]));
    }
    let mut m = Mapping::new();
    m.insert("type".into(), kind.into());
    m.insert("database".into(), names(database).into());
    m.insert("user".into(), names(user).into());
    m.insert("address".into(), address.into());
    m.insert("method".into(), method.into());
    Ok(m)
}

/// A database or user list: `all`, or names separated by commas (quotes removed).
fn names(list: &str) -> String {
    list.split(',')
        .map(|n| n.trim_matches('"'))
        .collect::<Vec<_>>()
        .join(",")
}

/// `all`, a CIDR range or one address; host names and `samehost`/`samenet` are not supported.
fn address(text: &str) -> Result<String, String> {
    if text == "all" || text == "0.0.0.0/0" || text == "::/0" {
        return Ok(text.to_owned());
    }
    let ip = text.split('/').next().unwrap_or(text);
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "address {text} (pgrouter takes IP addresses and CIDR ranges)"
        ));
    }
    Ok(text.to_owned())
}

/// A netmask's prefix length (`255.255.255.0` → 24); refused unless its ones are contiguous.
fn prefix(mask: &str) -> Result<u32, String> {
    let bits = match mask.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => u128::from(u32::from(v4)) << 96,
        Ok(std::net::IpAddr::V6(v6)) => u128::from(v6),
        Err(_) => return Err(format!("netmask {mask}")),
    };
    let ones = bits.leading_ones();
    let width = if mask.contains(':') { 128 } else { 32 };
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(format!("netmask {mask} is not contiguous"));
    }
    Ok(ones.min(width))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_rules_or_say_why_not() {
        let text = "# TYPE DATABASE USER ADDRESS METHOD\n\
                    local all all trust\n\
                    host all all 127.0.0.1/32 trust\n\
                    host app,reports app 10.0.0.0 255.255.0.0 md5\n\
                    hostssl all all ::1/128 scram-sha-256\n\
                    host all all 0.0.0.0/0 password\n\
                    host all all db.example md5\n\
                    host all all all pam\n";
        let (rules, report) = rules(text);
        assert_eq!(rules.len(), 4, "{report:?}");
        let yaml = serde_yaml_ng::to_string(&rules).unwrap();
        assert!(yaml.contains("address: 10.0.0.0/16"), "{yaml}");
        assert!(yaml.contains("database: app,reports"), "{yaml}");
        assert!(yaml.contains("type: local"), "{yaml}");
        let unsupported: Vec<_> = report
            .iter()
            .filter(|l| matches!(l.outcome, Outcome::Unsupported(_)))
            .map(|l| l.what.as_str())
            .collect();
        assert_eq!(
            unsupported,
            ["pool_hba.conf:6", "pool_hba.conf:7", "pool_hba.conf:8"]
        );
        assert_eq!(prefix("255.255.255.0"), Ok(24));
        assert!(prefix("255.0.255.0").is_err());
    }
}
