//! The common name (CN) in a client certificate's subject, for the `cert` method: PostgreSQL
//! compares it with the user name the client logs in as.
//!
//! A small DER walk over the one path it needs (Certificate → tbsCertificate → subject), run
//! only on certificates rustls has already verified against `tls.ca_file`. It must not panic or
//! loop on any input: every length is checked against what is left.

/// The first common name in the certificate's subject, if it has one as a string.
pub fn subject_common_name(certificate: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let (tag, cert, _) = tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    // [0] version (optional), serialNumber, signature, issuer, validity, then subject.
    let mut fields = Vec::with_capacity(6);
    while fields.len() < 6 && !tbs.is_empty() {
        let (tag, value, rest) = tlv(tbs)?;
        if !(fields.is_empty() && tag == 0xa0) {
            fields.push((tag, value));
        }
        tbs = rest;
    }
    let &(tag, mut subject) = fields.get(4)?;
    if tag != SEQUENCE {
        return None;
    }
    while !subject.is_empty() {
        let (tag, mut rdn, rest) = tlv(subject)?;
        subject = rest;
        if tag != SET {
            return None;
        }
        while !rdn.is_empty() {
            let (tag, attribute, rest) = tlv(rdn)?;
            rdn = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = tlv(attribute)?;
            if tag == OID && oid == COMMON_NAME {
                let (tag, text, _) = tlv(value)?;
                return string_value(tag, text);
            }
        }
    }
    None
}

/// A directory string's text: UTF8String, PrintableString, IA5String, T61String (as Latin-1,
/// as OpenSSL prints it) or BMPString (UCS-2).
fn string_value(tag: u8, text: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 => std::str::from_utf8(text).ok().map(str::to_owned),
        0x14 => Some(text.iter().map(|&b| char::from(b)).collect()),
        0x1e => {
            if text.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = text
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// One DER element at the front of `input`: tag, contents, and what follows. Only the tag
/// numbers below 31 and definite lengths up to four bytes that DER certificates use.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A DER element with the given tag and contents.
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            let len = (contents.len() as u32).to_be_bytes();
            out.push(0x84);
            out.extend_from_slice(&len);
        }
        out.extend_from_slice(contents);
        out
    }

    fn name(attributes: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        let mut rdns = Vec::new();
        for (oid, tag, value) in attributes {
            let mut attribute = der(0x06, oid);
            attribute.extend(der(*tag, value));
            rdns.extend(der(0x31, &der(0x30, &attribute)));
        }
        der(0x30, &rdns)
    }

    fn certificate(with_version: bool, subject: &[u8]) -> Vec<u8> {
        let mut tbs = Vec::new();
        if with_version {
            tbs.extend(der(0xa0, &der(0x02, &[2])));
        }
        tbs.extend(der(0x02, &[0x01, 0x23]));
        tbs.extend(der(0x30, &der(0x06, &[0x2a, 0x86, 0x48])));
        tbs.extend(name(&[(&[0x55, 0x04, 0x03], 0x0c, b"issuer CA")]));
        tbs.extend(der(0x30, &[]));
        tbs.extend_from_slice(subject);
        tbs.extend(der(0x30, &[]));
        let mut cert = der(0x30, &tbs);
        cert.extend(der(0x30, &[]));
        der(0x30, &cert)
    }

    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const CN: &[u8] = &[0x55, 0x04, 0x03];

    #[test]
    fn common_names() {
        let cases: &[(&str, Vec<u8>, Option<&str>)] = &[
            (
                "UTF8String",
                certificate(true, &name(&[(O, 0x0c, b"org"), (CN, 0x0c, b"app")])),
                Some("app"),
            ),
            (
                "no version field",
                certificate(false, &name(&[(CN, 0x13, b"app")])),
                Some("app"),
            ),
            (
                "the subject's, not the issuer's",
                certificate(true, &name(&[(O, 0x0c, b"org")])),
                None,
            ),
            (
                "first of two",
                certificate(true, &name(&[(CN, 0x0c, b"a"), (CN, 0x0c, b"b")])),
                Some("a"),
            ),
            (
                "BMPString",
                certificate(true, &name(&[(CN, 0x1e, &[0, b'a', 0, b'p', 0, b'p'])])),
                Some("app"),
            ),
            (
                "T61String",
                certificate(true, &name(&[(CN, 0x14, &[b'a', 0xe9])])),
                Some("a\u{e9}"),
            ),
            (
                "not a string",
                certificate(true, &name(&[(CN, 0x02, &[1])])),
                None,
            ),
            (
                "invalid UTF-8",
                certificate(true, &name(&[(CN, 0x0c, &[0xff])])),
                None,
            ),
        ];
        for (what, cert, expected) in cases {
            assert_eq!(subject_common_name(cert).as_deref(), *expected, "{what}");
        }
        // Contents over 127 bytes: a long-form length.
        let long = "x".repeat(300);
        let cert = certificate(true, &name(&[(CN, 0x0c, long.as_bytes())]));
        assert_eq!(subject_common_name(&cert), Some(long));
    }

    #[test]
    fn truncated_certificates_have_no_name() {
        let cert = certificate(true, &name(&[(CN, 0x0c, b"app")]));
        for cut in 0..cert.len() {
            assert_eq!(subject_common_name(&cert[..cut]), None, "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = subject_common_name(&bytes);
        }

        #[test]
        fn any_mutation_is_safe(flip in 0usize..200, value in any::<u8>()) {
            let mut cert = certificate(true, &name(&[(O, 0x0c, b"org"), (CN, 0x0c, b"app")]));
            let at = flip % cert.len();
            cert[at] = value;
            let _ = subject_common_name(&cert);
        }
    }
}
