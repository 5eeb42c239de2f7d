//! TLS towards the servers (`server_tls:`): what to ask for and what to verify, with libpq's
//! `sslmode` meanings, and the rustls client configuration built once from the PEM files.
//!
//! What it must not do: read files on the connection path (a [`ServerTls`] is built at start
//! and on reload), or skip a check the policy asks for.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::WebPkiServerVerifier,
    crypto::CryptoProvider,
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_rustls::TlsConnector;

/// `server_tls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it; plain otherwise.
    Prefer,
    /// TLS or nothing.
    Require,
    /// TLS with a certificate chaining to the CA.
    VerifyCa,
    /// TLS with a certificate chaining to the CA and naming the host.
    VerifyFull,
}

/// The files `server_tls:` names.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    /// CA certificates the servers' certificates must chain to.
    pub ca_file: Option<&'a Path>,
    /// pgrouter's client certificate chain.
    pub cert_file: Option<&'a Path>,
    /// Its key.
    pub key_file: Option<&'a Path>,
}

/// Why TLS towards the servers could not be set up (names the file).
#[derive(Debug, thiserror::Error)]
#[error("server_tls: {0}")]
pub struct TlsSetupError(String);

/// How pgrouter's server connections use TLS: built once, shared by every connection.
#[derive(Clone)]
pub struct ServerTls {
    policy: TlsPolicy,
    connector: Option<TlsConnector>,
    /// Answer a cleartext-password request on a connection without TLS.
    pub allow_cleartext_password: bool,
    /// The policy and the files' bytes: two settings are equal when these are.
    fingerprint: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("policy", &self.policy)
            .field("allow_cleartext_password", &self.allow_cleartext_password)
            .finish()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for ServerTls {}

impl ServerTls {
    /// No TLS at all (tests, tools).
    pub fn disabled(allow_cleartext_password: bool) -> Self {
        Self {
            policy: TlsPolicy::Disable,
            connector: None,
            allow_cleartext_password,
            fingerprint: vec![u8::from(allow_cleartext_password)],
        }
    }

    /// Stands in for settings whose files could not be read at start: every connection fails
    /// (rather than falling back to less TLS than asked for).
    pub fn unavailable(policy: TlsPolicy, allow_cleartext_password: bool) -> Self {
        Self {
            policy,
            connector: None,
            allow_cleartext_password,
            fingerprint: vec![u8::from(allow_cleartext_password), policy as u8, 0xff],
        }
    }

    /// Reads the files and builds the rustls configuration the policy needs.
    pub fn new(
        policy: TlsPolicy,
        files: TlsFiles<'_>,
        allow_cleartext_password: bool,
    ) -> Result<Self, TlsSetupError> {
        if policy == TlsPolicy::Disable {
            return Ok(Self::disabled(allow_cleartext_password));
        }
        let mut fingerprint = vec![u8::from(allow_cleartext_password), policy as u8];
        let config = client_config(policy, files, b"postgresql", &mut fingerprint)?;
        Ok(Self {
            policy,
            connector: Some(TlsConnector::from(Arc::new(config))),
            allow_cleartext_password,
            fingerprint,
        })
    }

    /// The policy.
    pub fn policy(&self) -> TlsPolicy {
        self.policy
    }

    /// The connector, unless TLS is off.
    pub(crate) fn connector(&self) -> Option<&TlsConnector> {
        self.connector.as_ref()
    }
}

/// A rustls client configuration for `policy` from `files`, offering ALPN `alpn`; the files'
/// bytes are appended to `fingerprint`. Also used for HTTPS to an HA manager's API
/// (`verify-full`).
pub fn client_config(
    policy: TlsPolicy,
    files: TlsFiles<'_>,
    alpn: &[u8],
    fingerprint: &mut Vec<u8>,
) -> Result<ClientConfig, TlsSetupError> {
    // ring builds with a C compiler alone (aws-lc-rs needs cmake); see the proxy's tls.rs.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match files.ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, fingerprint)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsSetupError(format!("{}: {e}", path.display())))?;
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (policy, roots) {
        (TlsPolicy::VerifyCa | TlsPolicy::VerifyFull, None) => {
            return Err(TlsSetupError(
                "ca_file is required with verify-ca and verify-full".into(),
            ))
        }
        // libpq's prefer never checks; its require checks the chain when a CA is there.
        (TlsPolicy::Disable | TlsPolicy::Prefer, _) | (TlsPolicy::Require, None) => {
            Arc::new(PartialCheck {
                chain: None,
                provider: Arc::clone(&provider),
            })
        }
        (policy, Some(roots)) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| TlsSetupError(format!("ca_file: {e}")))?;
            if policy == TlsPolicy::VerifyFull {
                webpki
            } else {
                Arc::new(PartialCheck {
                    chain: Some(webpki),
                    provider: Arc::clone(&provider),
                })
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (files.cert_file, files.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let certs = read_certs(cert_file, fingerprint)?;
            let key_pem = std::fs::read(key_file)
                .map_err(|e| TlsSetupError(format!("reading {}: {e}", key_file.display())))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| TlsSetupError(format!("reading {}: {e}", key_file.display())))?;
            fingerprint.extend_from_slice(&key_pem);
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                TlsSetupError(format!(
                    "{} and {}: {e}",
                    cert_file.display(),
                    key_file.display()
                ))
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsSetupError("cert_file and key_file go together".into())),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The name checked against the certificate (and sent as SNI when it is a DNS name).
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).ok()
}

fn read_certs(
    path: &Path,
    fingerprint: &mut Vec<u8>,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = std::fs::read(path)
        .map_err(|e| TlsSetupError(format!("reading {}: {e}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError(format!("reading {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsSetupError(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    fingerprint.extend_from_slice(&pem);
    Ok(certs)
}

/// `prefer`, `require` and `verify-ca`: what libpq checks short of `verify-full`. Without a
/// chain verifier (`prefer`, `require` without a CA) nothing about the certificate is checked
/// (encryption without authentication of the server, as libpq); with one, the chain must lead to
/// the CA but the name is not checked. The handshake's signatures are checked either way (the
/// server holds the certificate's key).
#[derive(Debug)]
struct PartialCheck {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PartialCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name last, after the chain: this error means the chain held.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
