//! `pool_passwd` (`user:secret` lines) to pgrouter's `users:`. pgrouter logs in to the servers
//! with each user's password, so only entries that hold the password itself can be carried over.

use crate::{Outcome, ReportLine};
use serde_yaml_ng::{Mapping, Value};

/// The users `text` describes and a report line for each entry. `key` is Pgpool-II's AES key
/// (the `.pgpoolkey` file's text), for `AES` entries.
pub fn users(text: &str, key: Option<&str>) -> (Vec<Value>, Vec<ReportLine>) {
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
        // The stored forms pgrouter takes as they are (docs/security.md#no-plaintext-passwords).
        let stored = if secret.starts_with("md5")
            && secret.len() == 35
            && secret[3..].bytes().all(|b| b.is_ascii_hexdigit())
        {
            Some(("md5", "an md5 hash: clients log in with md5, and pgrouter answers md5 requests from the servers with it (not SCRAM ones)"))
        } else if secret.starts_with("SCRAM-SHA-256$") {
            Some(("scram-sha-256", "a SCRAM verifier: clients log in with SCRAM; pgrouter logs in to the servers with the key a client's proof reveals, so the servers must hold the same verifier, and health_check needs a password of its own"))
        } else {
            None
        };
        if let Some((auth, how)) = stored {
            let mut user = Mapping::new();
            user.insert("name".into(), name.into());
            user.insert("password".into(), secret.into());
            user.insert("auth".into(), auth.into());
            users.push(Value::Mapping(user));
            report.push(ReportLine {
                what,
                outcome: Outcome::Mapped(format!("users[{}] with {how}", users.len() - 1)),
            });
            continue;
        }
        let decrypted;
        let password = if let Some(text) = secret.strip_prefix("TEXT") {
            Ok(text)
        } else if let Some(encrypted) = secret.strip_prefix("AES") {
            match key.map(|k| aes_decrypt(encrypted, k)) {
                Some(Some(password)) => {
                    decrypted = password;
                    Ok(decrypted.as_str())
                }
                Some(None) => Err("an AES-encrypted password that this key does not decrypt: give the .pgpoolkey pg_enc used (--pgpool-key)"),
                None => Err("an AES-encrypted password: give Pgpool-II's key file (--pgpool-key, or PGPOOLKEYFILE) to decrypt it"),
            }
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

/// Decrypts a pool_passwd `AES` entry (base64 after the prefix) as Pgpool-II encrypts it:
/// AES-256-CBC with PKCS#7 padding, key and IV from OpenSSL's `EVP_BytesToKey` with SHA-1, no
/// salt and one round over the key text. `None`: not base64, or not this key.
pub fn aes_decrypt(encrypted: &str, key: &str) -> Option<String> {
    use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let data = base64::engine::general_purpose::STANDARD
        .decode(encrypted.trim())
        .ok()?;
    // EVP_BytesToKey: D1 = H(key), Di = H(Di-1 || key), concatenated to 32 + 16 bytes.
    let mut material = Vec::with_capacity(60);
    let mut previous: Vec<u8> = Vec::new();
    while material.len() < 48 {
        let mut hash = Sha1::new();
        hash.update(&previous);
        hash.update(key.as_bytes());
        previous = hash.finalize().to_vec();
        material.extend_from_slice(&previous);
    }
    let (aes_key, rest) = material.split_at(32);
    let iv = &rest[..16];
    let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(aes_key, iv)
        .ok()?
        .decrypt_padded_vec_mut::<Pkcs7>(&data)
        .ok()?;
    String::from_utf8(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_entries_decrypt_as_pgpool_encrypts_them() {
        // `pg_enc -k F s3cret` with F holding "my-secret-key" (Debian's pgpool2 4.3.5).
        let entry = "6aaYhmoPCwMDf61dEq9ilw==";
        assert_eq!(
            aes_decrypt(entry, "my-secret-key").as_deref(),
            Some("s3cret")
        );
        assert_eq!(aes_decrypt(entry, "another-key"), None);
        assert_eq!(aes_decrypt("not base64!", "my-secret-key"), None);
        let (users, report) = users(&format!("app:AES{entry}\n"), Some("my-secret-key"));
        assert_eq!(users.len(), 1, "{report:?}");
        assert!(serde_yaml_ng::to_string(&users)
            .unwrap()
            .contains("password: s3cret"));
    }

    #[test]
    fn entries_with_a_password_become_users() {
        let text = "app:TEXTs3cret\n\
                    old:md5e5e28a3c6b4a5a2c0b1f3a4a5a6a7a8a\n\
                    enc:AESxyz==\n\
                    scram:SCRAM-SHA-256$4096:c2FsdA==$a:b\n\
                    plain:pw:with:colons\n\
                    garbage\n";
        let (users, report) = users(text, None);
        let yaml = serde_yaml_ng::to_string(&users).unwrap();
        assert!(
            yaml.contains("name: app") && yaml.contains("password: s3cret"),
            "{yaml}"
        );
        assert!(yaml.contains("password: pw:with:colons"), "{yaml}");
        assert!(
            yaml.contains("password: md5e5e28a3c6b4a5a2c0b1f3a4a5a6a7a8a\n  auth: md5"),
            "{yaml}"
        );
        assert!(yaml.contains("auth: scram-sha-256"), "{yaml}");
        assert_eq!(users.len(), 4);
        let unsupported: Vec<&str> = report
            .iter()
            .filter(|l| matches!(l.outcome, Outcome::Unsupported(_)))
            .map(|l| l.what.as_str())
            .collect();
        assert_eq!(
            unsupported,
            ["pool_passwd:3 (enc)", "pool_passwd:6"],
            "{report:?}"
        );
    }
}
