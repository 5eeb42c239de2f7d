use super::*;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

/// Runs a whole exchange between postgres-protocol's client and our server.
fn exchange(server_password: &str, client_password: &str) -> Result<(), ScramError> {
    exchange_with(
        server_password,
        client_password,
        None,
        false,
        ChannelBinding::unsupported(),
    )
}

/// The same over TLS: `server_binding` is the connection's `tls-server-end-point` data (PLUS
/// offered), `plus` whether the client chose it, `client` what the client binds with.
fn exchange_with(
    server_password: &str,
    client_password: &str,
    server_binding: Option<&[u8]>,
    plus: bool,
    client: ChannelBinding,
) -> Result<(), ScramError> {
    let secret = ScramSecret::generate(server_password);
    let mut server = ScramServer::new(&secret);
    if let Some(data) = server_binding {
        server = server.with_channel_binding(data.to_vec(), plus);
    }
    let mut client = ScramSha256::new(client_password.as_bytes(), client);
    let server_first = server.client_first(client.message())?;
    client
        .update(&server_first)
        .map_err(|_| ScramError::Malformed)?;
    let server_final = server.client_final(client.message())?;
    client
        .finish(&server_final)
        .map_err(|_| ScramError::InvalidProof)?;
    Ok(())
}

#[test]
fn right_password_is_accepted_and_server_is_verified() {
    assert_eq!(exchange("s3cret", "s3cret"), Ok(()));
    assert_eq!(exchange("pässwörd", "pässwörd"), Ok(()));
}

#[test]
fn wrong_password_is_rejected() {
    assert_eq!(exchange("s3cret", "other"), Err(ScramError::InvalidProof));
}

/// RFC 7677 section 3 test vector (user "user", password "pencil").
#[test]
fn rfc7677_vector() {
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let secret = ScramSecret::derive("pencil", &salt, 4096);
    // Server nonce "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0" is not base64 of 18 bytes; craft the state directly.
    let mut server = ScramServer {
        secret: &secret,
        state: State::AwaitingClientFirst {
            server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        },
        binding: None,
        plus: false,
        client_key: None,
    };
    let first = server
        .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    assert_eq!(
        first,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let fin = server
        .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        .unwrap();
    assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

#[test]
fn malformed_messages_are_rejected() {
    let secret = ScramSecret::derive("x", b"salt", 1);
    let firsts: [(&[u8], ScramError); 7] = [
        (b"", ScramError::Malformed),
        (b"n,,", ScramError::Malformed),
        (b"n,,n=,r=", ScramError::Malformed),
        (b"x,,n=,r=abc", ScramError::Malformed),
        (
            b"p=tls-server-end-point,,n=,r=abc",
            ScramError::ChannelBindingUnsupported,
        ),
        (b"n,a=admin,n=,r=abc", ScramError::AuthzidUnsupported),
        (b"n,,n=,r=a\xffb", ScramError::Malformed),
    ];
    for (msg, err) in firsts {
        let mut s = ScramServer::with_nonce(&secret, [0; SERVER_NONCE_LEN]);
        assert_eq!(s.client_first(msg), Err(err), "{msg:?}");
    }
    let finals: [&[u8]; 5] = [
        b"",
        b"c=biws,r=abc,p=",
        b"c=eSws,r=abcAAAAAAAAAAAAAAAAAAAAAAAA,p=AAAA",
        b"c=biws,r=wrong,p=AAAA",
        b"c=biws,r=abcAAAAAAAAAAAAAAAAAAAAAAAA,p=AAAA",
    ];
    for msg in finals {
        let mut s = ScramServer::with_nonce(&secret, [0; SERVER_NONCE_LEN]);
        s.client_first(b"n,,n=,r=abc").unwrap();
        assert_eq!(s.client_final(msg), Err(ScramError::Malformed), "{msg:?}");
    }
    let mut s = ScramServer::with_nonce(&secret, [0; SERVER_NONCE_LEN]);
    assert_eq!(s.client_final(b"c=biws"), Err(ScramError::OutOfOrder));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(a in proptest::collection::vec(any::<u8>(), 0..200),
                                        b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let secret = ScramSecret::derive("x", b"salt", 1);
            let mut s = ScramServer::with_nonce(&secret, [7; SERVER_NONCE_LEN]);
            let _ = s.client_first(&a);
            let _ = s.client_final(&b);
        }
    }
}

#[test]
fn channel_binding() {
    let end_point = tls_server_end_point(b"a certificate");
    let bound = || ChannelBinding::tls_server_end_point(end_point.clone());
    #[rustfmt::skip]
    // (what, the connection's binding, PLUS chosen, the client's binding, outcome)
    type Case<'a> = (&'a str, Option<&'a [u8]>, bool, ChannelBinding, Result<(), ScramError>);
    let cases: Vec<Case<'_>> = vec![
        (
            "PLUS with the connection's binding",
            Some(&end_point),
            true,
            bound(),
            Ok(()),
        ),
        (
            "PLUS with another certificate's binding",
            Some(&end_point),
            true,
            ChannelBinding::tls_server_end_point(tls_server_end_point(b"another")),
            Err(ScramError::ChannelBindingMismatch),
        ),
        (
            "plain SCRAM over TLS from a client without binding",
            Some(&end_point),
            false,
            ChannelBinding::unsupported(),
            Ok(()),
        ),
        (
            "a client that could bind but thinks the server cannot: downgrade",
            Some(&end_point),
            false,
            ChannelBinding::unrequested(),
            Err(ScramError::ChannelBindingDowngrade),
        ),
        (
            "without TLS a client that could bind is fine",
            None,
            false,
            ChannelBinding::unrequested(),
            Ok(()),
        ),
        (
            "binding asked for without TLS",
            None,
            false,
            bound(),
            Err(ScramError::ChannelBindingUnsupported),
        ),
    ];
    for (what, data, plus, client, want) in cases {
        assert_eq!(
            exchange_with("s3cret", "s3cret", data, plus, client),
            want,
            "{what}"
        );
    }
}

#[test]
fn end_point_hash_follows_the_signature_algorithm() {
    assert_eq!(tls_server_end_point(b"x").len(), 32);
    let mut sha384_signed = b"cert".to_vec();
    sha384_signed.extend_from_slice(&[
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C,
    ]);
    assert_eq!(tls_server_end_point(&sha384_signed).len(), 48);
    let mut sha512_signed = b"cert".to_vec();
    sha512_signed.extend_from_slice(&[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04]);
    assert_eq!(tls_server_end_point(&sha512_signed).len(), 64);
}
