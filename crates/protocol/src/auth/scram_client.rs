//! SCRAM-SHA-256, client side, with the keys instead of the password: how pgrouter logs in to a
//! server for a user configured only by its verifier. `ClientKey` comes from that user's own
//! client login ([`super::scram::ScramServer::client_key`]); it works when the server holds the
//! same verifier (same salt and iteration count), as PgBouncer requires too.
//!
//! It must not accept a server that does not prove it knows `ServerKey`, and never sends a
//! proof for a salt or iteration count other than the verifier's.

use super::scram::{hmac, ScramSecret};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a key-based client exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyClientError {
    /// The server's message does not follow the SCRAM grammar, or its nonce is not ours.
    #[error("malformed SCRAM message from the server")]
    Malformed,
    /// The server's salt or iteration count is not the configured verifier's.
    #[error("the server's SCRAM verifier for this user is not the configured one (salt or iteration count differ): copy the verifier from the servers' pg_authid")]
    OtherVerifier,
    /// The server's signature is wrong: it does not hold this verifier.
    #[error("the server's SCRAM signature is wrong")]
    BadServerSignature,
    /// A message in the wrong state.
    #[error("unexpected SCRAM message from the server")]
    OutOfOrder,
}

enum State {
    Started,
    Proved { auth_message: Vec<u8> },
    Done,
}

/// One client-side exchange.
pub struct ScramKeyClient<'a> {
    secret: &'a ScramSecret,
    client_key: [u8; 32],
    gs2_header: String,
    /// Channel binding data sent in `c=` (PLUS only).
    binding: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    state: State,
}

impl<'a> ScramKeyClient<'a> {
    /// Starts an exchange. `binding`: the server certificate's `tls-server-end-point` data when
    /// the mechanism is `SCRAM-SHA-256-PLUS`; `tls`: the connection is on TLS (without PLUS the
    /// client says it could bind, `y`).
    pub fn new(
        secret: &'a ScramSecret,
        client_key: [u8; 32],
        binding: Option<Vec<u8>>,
        tls: bool,
    ) -> Self {
        let nonce = B64.encode(rand::random::<[u8; 18]>());
        let gs2_header = match (&binding, tls) {
            (Some(_), _) => "p=tls-server-end-point,,",
            (None, true) => "y,,",
            (None, false) => "n,,",
        }
        .to_owned();
        Self {
            secret,
            client_key,
            gs2_header,
            binding: binding.unwrap_or_default(),
            client_first_bare: format!("n=,r={nonce}"),
            nonce,
            state: State::Started,
        }
    }

    /// The client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// Takes the server-first message; returns the client-final message (with the proof).
    pub fn server_first(&mut self, message: &[u8]) -> Result<Vec<u8>, KeyClientError> {
        if !matches!(self.state, State::Started) {
            return Err(KeyClientError::OutOfOrder);
        }
        self.state = State::Done;
        let text = std::str::from_utf8(message).map_err(|_| KeyClientError::Malformed)?;
        let mut attrs = text.split(',');
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(KeyClientError::Malformed)?;
        let salt = attrs
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .and_then(|s| B64.decode(s).ok())
            .ok_or(KeyClientError::Malformed)?;
        let iterations: u32 = attrs
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .ok_or(KeyClientError::Malformed)?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(KeyClientError::Malformed);
        }
        if salt != self.secret.salt() || iterations != self.secret.iterations() {
            return Err(KeyClientError::OtherVerifier);
        }
        let mut binding = self.gs2_header.as_bytes().to_vec();
        binding.extend_from_slice(&self.binding);
        let without_proof = format!("c={},r={nonce}", B64.encode(&binding));
        let auth_message =
            format!("{},{text},{without_proof}", self.client_first_bare).into_bytes();
        let stored_key: [u8; 32] = Sha256::digest(self.client_key).into();
        let signature = hmac(&stored_key, &auth_message);
        let proof: Vec<u8> = self
            .client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.state = State::Proved { auth_message };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message.
    pub fn server_final(&mut self, message: &[u8]) -> Result<(), KeyClientError> {
        let State::Proved { auth_message } = std::mem::replace(&mut self.state, State::Done) else {
            return Err(KeyClientError::OutOfOrder);
        };
        let text = std::str::from_utf8(message).map_err(|_| KeyClientError::Malformed)?;
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or(KeyClientError::Malformed)?;
        let expected = hmac(self.secret.server_key(), &auth_message);
        if signature.len() == 32 && bool::from(signature.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(KeyClientError::BadServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::ScramServer;

    /// The verifier PostgreSQL 15 stored for password `app` (salt and iterations as stored).
    fn verifier_for(password: &str) -> (String, ScramSecret) {
        let salt = b"0123456789abcdef";
        let secret = ScramSecret::derive(password, salt, 4096);
        let text = format!(
            "SCRAM-SHA-256$4096:{}${}:{}",
            B64.encode(salt),
            B64.encode(stored_key_of(password, salt)),
            B64.encode(secret.server_key())
        );
        (text, secret)
    }

    fn stored_key_of(password: &str, salt: &[u8]) -> [u8; 32] {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, 4096, &mut salted);
        Sha256::digest(hmac(&salted, b"Client Key")).into()
    }

    /// A client that knows the password logs in to pgrouter; the key recovered from its proof
    /// logs pgrouter in to a server holding the same verifier.
    fn recovered_key(secret: &ScramSecret, password: &str) -> [u8; 32] {
        let mut server = ScramServer::new(secret);
        let mut client = postgres_protocol::authentication::sasl::ScramSha256::new(
            password.as_bytes(),
            postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
        );
        let first = server.client_first(client.message()).unwrap();
        client.update(&first).unwrap();
        let last = server.client_final(client.message()).unwrap();
        client.finish(&last).unwrap();
        server.client_key().unwrap()
    }

    #[test]
    fn verifier_text_round_trips() {
        let (text, secret) = verifier_for("app");
        assert_eq!(ScramSecret::from_verifier(&text), Some(secret));
        for bad in [
            "app",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:!!$AAAA:AAAA",
        ] {
            assert_eq!(ScramSecret::from_verifier(bad), None, "{bad}");
        }
    }

    #[test]
    fn key_client_logs_in_where_the_verifier_is_the_same() {
        let (_, secret) = verifier_for("app");
        let client_key = recovered_key(&secret, "app");
        assert!(secret.matches_client_key(&client_key));
        for tls in [false, true] {
            let mut server = ScramServer::new(&secret);
            let mut client = ScramKeyClient::new(&secret, client_key, None, tls);
            let first = server.client_first(&client.client_first()).unwrap();
            let last = server
                .client_final(&client.server_first(&first).unwrap())
                .unwrap();
            client.server_final(&last).unwrap();
        }
        // With channel binding: the server checks the same end-point data.
        let end_point = vec![7u8; 32];
        let mut server = ScramServer::new(&secret).with_channel_binding(end_point.clone(), true);
        let mut client = ScramKeyClient::new(&secret, client_key, Some(end_point), true);
        let first = server.client_first(&client.client_first()).unwrap();
        let last = server
            .client_final(&client.server_first(&first).unwrap())
            .unwrap();
        client.server_final(&last).unwrap();
    }

    #[test]
    fn another_verifier_or_a_false_server_is_refused() {
        let (_, secret) = verifier_for("app");
        let client_key = recovered_key(&secret, "app");
        // Same password, another salt: the proof would not match; none is sent.
        let other = ScramSecret::derive("app", b"another salt....", 4096);
        let mut server = ScramServer::new(&other);
        let mut client = ScramKeyClient::new(&secret, client_key, None, false);
        let first = server.client_first(&client.client_first()).unwrap();
        assert_eq!(
            client.server_first(&first),
            Err(KeyClientError::OtherVerifier)
        );
        // A server that does not know ServerKey cannot sign.
        let mut client = ScramKeyClient::new(&secret, client_key, None, false);
        let nonce = String::from_utf8(client.client_first()).unwrap();
        let nonce = nonce.rsplit_once("r=").unwrap().1.to_owned();
        let first = format!("r={nonce}xyz,s={},i=4096", B64.encode(secret.salt()));
        client.server_first(first.as_bytes()).unwrap();
        assert_eq!(
            client.server_final(format!("v={}", B64.encode([0u8; 32])).as_bytes()),
            Err(KeyClientError::BadServerSignature)
        );
        // Garbage in any state is an error, never a panic.
        let mut client = ScramKeyClient::new(&secret, client_key, None, false);
        assert_eq!(
            client.server_final(b"v=AAAA"),
            Err(KeyClientError::OutOfOrder)
        );
        for garbage in [&b"\xff"[..], b"r=", b"r=x,s=!!,i=1", b"", b"s=AAAA,r=x,i=1"] {
            let mut client = ScramKeyClient::new(&secret, client_key, None, false);
            assert_eq!(client.server_first(garbage), Err(KeyClientError::Malformed));
        }
    }
}
