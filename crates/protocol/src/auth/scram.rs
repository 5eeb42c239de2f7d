//! SCRAM-SHA-256, server side, as PostgreSQL speaks it (the user name is taken from the start-up
//! packet, not from the SCRAM message). Over TLS, `SCRAM-SHA-256-PLUS` with `tls-server-end-point`
//! channel binding ([`ScramServer::with_channel_binding`], [`tls_server_end_point`]).
//!
//! The exchange is a small state machine: [`ScramServer::new`] → [`ScramServer::client_first`]
//! (returns the server-first message) → [`ScramServer::client_final`] (returns the server-final
//! message, or [`ScramError::InvalidProof`] for a wrong password).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The mechanism name offered in `AuthenticationSASL`.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// The mechanism with channel binding, offered over TLS.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// The `tls-server-end-point` channel binding data (RFC 5929) of a server certificate (DER): its
/// hash with the hash function of its signature algorithm, SHA-256 for MD5, SHA-1 and SHA-256
/// signatures (and any other, as for Ed25519, which RFC 5929 leaves open).
pub fn tls_server_end_point(certificate: &[u8]) -> Vec<u8> {
    // The DER of the signature algorithm's OID; the certificate names it twice (in and after
    // tbsCertificate), nothing else in a certificate has these bytes.
    const SHA384: [&[u8]; 2] = [
        &[
            0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C,
        ],
        &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03],
    ];
    const SHA512: [&[u8]; 2] = [
        &[
            0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0D,
        ],
        &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04],
    ];
    let names = |oids: [&[u8]; 2]| {
        oids.iter()
            .any(|oid| certificate.windows(oid.len()).any(|w| w == *oid))
    };
    if names(SHA512) {
        sha2::Sha512::digest(certificate).to_vec()
    } else if names(SHA384) {
        sha2::Sha384::digest(certificate).to_vec()
    } else {
        Sha256::digest(certificate).to_vec()
    }
}
/// PostgreSQL's default iteration count.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Length of the random part of the server nonce, before base64 (PostgreSQL uses 18).
pub const SERVER_NONCE_LEN: usize = 18;

/// What the server keeps instead of the password: the SCRAM verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramSecret {
    /// Derives the verifier from a password (SASLprep-normalised when possible, as PostgreSQL does).
    /// This runs PBKDF2 and is meant to be called once per user, not per login.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Self {
        let normalized = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_owned());
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(normalized.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, b"Server Key");
        Self {
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        }
    }

    /// Derives a verifier with a fresh random 16-byte salt.
    pub fn generate(password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        Self::derive(password, &salt, DEFAULT_ITERATIONS)
    }

    /// A verifier for a user that does not exist, so that its login fails exactly like a wrong
    /// password: the salt is derived from `name` and a per-process `secret` (the same for a
    /// name every time, different between names, as PostgreSQL's `scram_mock_salt`), so the
    /// server-first message does not tell an unknown name from a known one. Its keys match no
    /// proof a client could compute.
    pub fn mock(secret: &[u8; 32], name: &str) -> Self {
        let mut salt_input = b"salt\0".to_vec();
        salt_input.extend_from_slice(name.as_bytes());
        Self {
            salt: hmac(secret, &salt_input)[..16].to_vec(),
            iterations: DEFAULT_ITERATIONS,
            stored_key: hmac(secret, b"stored key"),
            server_key: hmac(secret, b"server key"),
        }
    }

    /// Parses a verifier as PostgreSQL stores it (`pg_authid.rolpassword`):
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 parts. `None` when
    /// `text` is not one (PostgreSQL then takes it for a plaintext password).
    pub fn from_verifier(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|&i| i > 0)?;
        let salt = B64.decode(salt).ok().filter(|s| !s.is_empty())?;
        let key = |b64: &str| -> Option<[u8; 32]> { B64.decode(b64).ok()?.try_into().ok() };
        Some(Self {
            salt,
            iterations,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
        })
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The PBKDF2 iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// `ServerKey`: proves the server to the client.
    pub fn server_key(&self) -> &[u8; 32] {
        &self.server_key
    }

    /// Whether `client_key` belongs to this verifier (`H(ClientKey) = StoredKey`).
    pub fn matches_client_key(&self, client_key: &[u8; 32]) -> bool {
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        bool::from(stored.ct_eq(&self.stored_key))
    }
}

pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // invariant: HMAC accepts keys of any length.
    #[allow(clippy::unwrap_used)]
    let mut mac = HmacSha256::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's message does not follow the SCRAM grammar (PostgreSQL: 08P01).
    #[error("malformed SCRAM message")]
    Malformed,
    /// The client asked for channel binding, which is not offered (PostgreSQL: 08P01).
    #[error("channel binding is not supported by this server")]
    ChannelBindingUnsupported,
    /// The client said it supports channel binding but thinks the server does not, while the
    /// server offered it: a downgrade (PostgreSQL: 08P01).
    #[error("SCRAM channel binding negotiation error: the client supports channel binding but thinks the server does not, yet this server offered it")]
    ChannelBindingDowngrade,
    /// The client chose SCRAM-SHA-256-PLUS but did not bind, or bound with other data.
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The client used an authorization identity, which PostgreSQL does not support (08P01).
    #[error("client uses authorization identity, but it is not supported")]
    AuthzidUnsupported,
    /// The proof does not match: wrong password or unknown user (28P01).
    #[error("invalid SCRAM proof")]
    InvalidProof,
    /// A message arrived in the wrong state.
    #[error("unexpected SCRAM message")]
    OutOfOrder,
}

enum State {
    AwaitingClientFirst {
        server_nonce: String,
    },
    AwaitingClientFinal {
        gs2_header: Vec<u8>,
        nonce: String,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
    },
    Done,
}

/// One server-side SCRAM exchange.
pub struct ScramServer<'a> {
    secret: &'a ScramSecret,
    state: State,
    /// `tls-server-end-point` data when the connection is TLS (then PLUS is offered).
    binding: Option<Vec<u8>>,
    /// The client chose `SCRAM-SHA-256-PLUS`.
    plus: bool,
    /// The client's `ClientKey`, recovered from its proof once the proof is right.
    client_key: Option<[u8; 32]>,
}

impl<'a> ScramServer<'a> {
    /// Starts an exchange with a random server nonce.
    pub fn new(secret: &'a ScramSecret) -> Self {
        Self::with_nonce(secret, rand::random::<[u8; SERVER_NONCE_LEN]>())
    }

    /// Starts an exchange with a given nonce (deterministic tests).
    pub fn with_nonce(secret: &'a ScramSecret, nonce: [u8; SERVER_NONCE_LEN]) -> Self {
        Self {
            secret,
            state: State::AwaitingClientFirst {
                server_nonce: B64.encode(nonce),
            },
            binding: None,
            plus: false,
            client_key: None,
        }
    }

    /// After a successful exchange: the client's `ClientKey` (`ClientProof` XOR
    /// `ClientSignature`), with which pgrouter can log in to servers that hold the same verifier
    /// without knowing the password.
    pub fn client_key(&self) -> Option<[u8; 32]> {
        self.client_key
    }

    /// Over TLS: `data` is the connection's `tls-server-end-point` binding (PLUS was offered);
    /// `plus`: the client chose `SCRAM-SHA-256-PLUS`.
    pub fn with_channel_binding(mut self, data: Vec<u8>, plus: bool) -> Self {
        self.binding = Some(data);
        self.plus = plus;
        self
    }

    /// Handles the client-first message; returns the server-first message.
    pub fn client_first(&mut self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::AwaitingClientFirst { server_nonce } =
            std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed)?;
        // gs2-header = cbind-flag "," [authzid] ","
        let (flag, rest) = text.split_once(',').ok_or(ScramError::Malformed)?;
        match (flag, self.plus, self.binding.is_some()) {
            ("p=tls-server-end-point", true, true) => {}
            (f, _, _) if f.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            ("n" | "y", true, _) => return Err(ScramError::ChannelBindingMismatch),
            ("y", false, true) => return Err(ScramError::ChannelBindingDowngrade),
            ("n" | "y", false, _) => {}
            _ => return Err(ScramError::Malformed),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed)?;
        if !authzid.is_empty() {
            return Err(ScramError::AuthzidUnsupported);
        }
        let gs2_header = text.as_bytes()[..text.len() - bare.len()].to_vec();
        let mut attrs = bare.split(',');
        // PostgreSQL ignores the user name here (it was in the start-up packet) but requires the field.
        let user = attrs.next().ok_or(ScramError::Malformed)?;
        if !user.starts_with("n=") {
            return Err(ScramError::Malformed);
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed)?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ScramError::Malformed);
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.secret.salt),
            self.secret.iterations
        )
        .into_bytes();
        self.state = State::AwaitingClientFinal {
            gs2_header,
            nonce,
            client_first_bare: bare.as_bytes().to_vec(),
            server_first: server_first.clone(),
        };
        Ok(server_first)
    }

    /// Handles the client-final message; returns the server-final message when the proof is right.
    pub fn client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::AwaitingClientFinal {
            gs2_header,
            nonce,
            client_first_bare,
            server_first,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed)?;
        let binding = B64.decode(binding).map_err(|_| ScramError::Malformed)?;
        let mut expected = gs2_header;
        if self.plus {
            expected.extend_from_slice(self.binding.as_deref().unwrap_or_default());
        }
        if !bool::from(binding.ct_eq(&expected)) {
            return Err(if self.plus {
                ScramError::ChannelBindingMismatch
            } else {
                ScramError::Malformed
            });
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed)?;
        if client_nonce != nonce {
            return Err(ScramError::Malformed);
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::Malformed)?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed);
        }

        let mut auth_message = client_first_bare;
        auth_message.push(b',');
        auth_message.extend_from_slice(&server_first);
        auth_message.push(b',');
        auth_message.extend_from_slice(without_proof.as_bytes());

        let client_signature = hmac(&self.secret.stored_key, &auth_message);
        let mut client_key = [0u8; 32];
        for (i, k) in client_key.iter_mut().enumerate() {
            *k = proof[i] ^ client_signature[i];
        }
        let candidate: [u8; 32] = Sha256::digest(client_key).into();
        if !bool::from(candidate.ct_eq(&self.secret.stored_key)) {
            return Err(ScramError::InvalidProof);
        }
        self.client_key = Some(client_key);
        let server_signature = hmac(&self.secret.server_key, &auth_message);
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests;
