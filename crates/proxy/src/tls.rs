//! TLS towards clients: the acceptor built from `tls:` (certificate chain and key read from their
//! PEM files), held by the context and rebuilt on every reload, so rotated certificates apply to
//! the next handshake while sessions on the old ones go on.
//!
//! What it must not do: read files on the session path (only at start and on reload), or accept
//! a protocol version below `tls.min_version`.

use pgrouter_config::{TlsConfig, TlsMode, TlsVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up (a message for operators, naming the file).
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsSetupError(String);

/// The handshake side of TLS towards clients.
#[derive(Clone)]
pub struct Acceptor {
    /// rustls' acceptor.
    pub tls: TlsAcceptor,
    /// The same certificate for the admin port's https (`admin.https`): ALPN `http/1.1`, no
    /// client certificates asked for.
    pub https: TlsAcceptor,
    /// The certificate's `tls-server-end-point` channel binding data (SCRAM-SHA-256-PLUS).
    pub end_point: Vec<u8>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

/// The acceptor `config` asks for: `None` when TLS is off.
pub fn acceptor(config: &TlsConfig) -> Result<Option<Acceptor>, TlsSetupError> {
    if config.mode == TlsMode::Disable {
        return Ok(None);
    }
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err(TlsSetupError("cert_file and key_file are required".into()));
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsSetupError(format!("reading {}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(TlsSetupError(format!(
            "{} holds no certificate",
            cert_file.display()
        )));
    }
    let end_point = pgrouter_protocol::auth::scram::tls_server_end_point(&certs[0]);
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| TlsSetupError(format!("reading {}: {e}", key_file.display())))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    // ring builds with a C compiler alone (aws-lc-rs, rustls' default, needs cmake); its
    // deprecation is about post-quantum key exchange, which PostgreSQL clients do not offer yet.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsSetupError(e.to_string()))?;
    let builder = match &config.ca_file {
        // As PostgreSQL with ssl_ca_file: a certificate is asked for, checked when one is
        // given, and required only by the `cert` method (a client without one still connects).
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| TlsSetupError(format!("reading {}: {e}", ca_file.display())))?;
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| TlsSetupError(format!("{}: {e}", ca_file.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsSetupError(format!("{}: {e}", ca_file.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let pair_error = |e: rustls::Error| {
        TlsSetupError(format!(
            "{} and {}: {e}",
            cert_file.display(),
            key_file.display()
        ))
    };
    let mut https = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsSetupError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(pair_error)?;
    https.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut server = builder.with_single_cert(certs, key).map_err(pair_error)?;
    // PostgreSQL 17 clients may offer ALPN; the only protocol spoken here is PostgreSQL's.
    server.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(Acceptor {
        tls: TlsAcceptor::from(Arc::new(server)),
        https: TlsAcceptor::from(Arc::new(https)),
        end_point,
    }))
}

/// TLS towards the servers as `server_tls:` asks (files read now).
pub fn server_tls(
    config: &pgrouter_config::ServerTlsConfig,
) -> Result<pgrouter_conn::ServerTls, pgrouter_conn::TlsSetupError> {
    pgrouter_conn::ServerTls::new(
        server_tls_policy(config.mode),
        pgrouter_conn::TlsFiles {
            ca_file: config.ca_file.as_deref(),
            cert_file: config.cert_file.as_deref(),
            key_file: config.key_file.as_deref(),
        },
        config.allow_cleartext_password,
    )
}

/// `server_tls.mode` as the connection crate's policy.
pub fn server_tls_policy(mode: pgrouter_config::ServerTlsMode) -> pgrouter_conn::TlsPolicy {
    use pgrouter_config::ServerTlsMode as M;
    use pgrouter_conn::TlsPolicy as P;
    match mode {
        M::Disable => P::Disable,
        M::Prefer => P::Prefer,
        M::Require => P::Require,
        M::VerifyCa => P::VerifyCa,
        M::VerifyFull => P::VerifyFull,
    }
}
