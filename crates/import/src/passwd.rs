//! `pool_passwd` (`user:secret` lines) to pgrouter's `users:`. pgrouter logs in to the servers
//! with each user's password, so only entries that hold the password itself can be carried over.

use crate::{Outcome, ReportLine};
use serde_yaml_ng::{Mapping, Value};

/// The users `text` describes and a report line for each entry.
pub fn users(text: &str) -> (Vec<Value>, Vec<ReportLine>) {
    let mut users = Vec::new();
    let mut report = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, secret)) = line.split_once(':') else {
            report.push(ReportLine {
                what: format!("pool_passwd:{}", i + 1),
                outcome: Outcome::Unsupported("not a user:secret line".into()),
            });
            continue;
        };
        let what = format!("pool_passwd:{} ({name})", i + 1);
        let password = if let Some(text) = secret.strip_prefix("TEXT") {
            Ok(text)
        } else if secret.starts_with("md5") && secret.len() == 35 {
            Err("an md5 hash: pgrouter logs in to the servers with the password itself; give the user a password or password_file, or use auth_query")
        } else if secret.starts_with("AES") {
            Err("an AES-encrypted password: decrypt it with your .pgpoolkey (pg_enc cannot; the password is the one you gave pg_enc) and give it as password or password_file")
        } else if secret.starts_with("SCRAM-SHA-256$") {
            Err("a SCRAM verifier: pgrouter logs in to the servers with the password itself; give the user a password or password_file, or use auth_query")
        } else {
            // Pgpool-II reads an entry without a prefix as the password in clear text.
            Ok(secret)
        };
        let outcome = match password {
            Ok(password) => {
                let mut user = Mapping::new();
                user.insert("name".into(), name.into());
                user.insert("password".into(), password.into());
                user.insert("auth".into(), "scram-sha-256".into());
                users.push(Value::Mapping(user));
                Outcome::Mapped(format!(
                    "users[{}] with its password, SCRAM towards clients",
                    users.len() - 1
                ))
            }
            Err(why) => Outcome::Unsupported(why.into()),
        };
        report.push(ReportLine { what, outcome });
    }
    (users, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_with_a_password_become_users() {
        let text = "app:TEXTs3cret\n\
                    old:md5e5e28a3c6b4a5a2c0b1f3a4a5a6a7a8a\n\
                    enc:AESxyz==\n\
                    scram:SCRAM-SHA-256$4096:c2FsdA==$a:b\n\
                    plain:pw:with:colons\n\
                    garbage\n";
        let (users, report) = users(text);
        let yaml = serde_yaml_ng::to_string(&users).unwrap();
        assert!(
            yaml.contains("name: app") && yaml.contains("password: s3cret"),
            "{yaml}"
        );
        assert!(yaml.contains("password: pw:with:colons"), "{yaml}");
        assert_eq!(users.len(), 2);
        let unsupported = report
            .iter()
            .filter(|l| matches!(l.outcome, Outcome::Unsupported(_)))
            .count();
        assert_eq!(unsupported, 4, "{report:?}");
    }
}
