//! rustls configurations: the listener's certificate, and client roots for HTTPS peers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {}: {source}", path.display())]
    Certs { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("no certificate found in {}", path.display())]
    NoCerts { path: PathBuf },
    #[error("cannot read private key from {}: {source}", path.display())]
    Key { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("certificate and key do not form a usable pair: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the private key is not the key of the first certificate in {}", cert.display())]
    KeyMismatch { cert: PathBuf },
    #[error("the first certificate in {} cannot be parsed: {source:?}", path.display())]
    Leaf { path: PathBuf, source: webpki::Error },
    #[error("cannot trust a certificate from {}: {source}", path.display())]
    Ca { path: PathBuf, source: rustls::Error },
    #[error("the client CA cannot verify certificates: {0}")]
    ClientCa(String),
    #[error("{0} cannot be named in a TLS handshake")]
    ServerName(String),
}

/// Who may connect to the listener, and in which protocols.
#[derive(Debug, Clone, Copy)]
pub struct Clients<'a> {
    /// Every client must present a certificate issued by this CA (a CDN's authenticated
    /// origin pulls), or the handshake fails.
    pub ca: Option<&'a Path>,
    /// Offer HTTP/2 (else HTTP/1.1 alone, for consoles that misbehave over HTTP/2).
    pub http2: bool,
}

impl Default for Clients<'_> {
    fn default() -> Self {
        Clients { ca: None, http2: true }
    }
}

/// One provider, named explicitly, so a dependency enabling another one can never make
/// rustls pick at random or panic.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// ALPN offered to clients; the negotiated value pins the HTTP version.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs { path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The listener's chain: parsed, its leaf certificate readable, so a garbage certificate
/// is named as such rather than as a key that does not fit it.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = load_certs(path)?;
    if let Some(leaf) = certs.first() {
        webpki::EndEntityCert::try_from(leaf).map_err(|source| TlsError::Leaf { path: path.to_path_buf(), source })?;
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Key { path: path.to_path_buf(), source })
}

pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_from(load_chain(cert)?, load_key(key)?, Clients::default()).map_err(|e| named_mismatch(e, cert))
}

/// Says which files do not fit together, instead of rustls's generic complaint.
pub fn named_mismatch(e: TlsError, cert: &Path) -> TlsError {
    match e {
        TlsError::Rustls(rustls::Error::InconsistentKeys(_)) => TlsError::KeyMismatch { cert: cert.to_path_buf() },
        other => other,
    }
}

/// The listener's config from a parsed chain and key; refuses a key that is not the
/// leaf certificate's.
pub fn server_config_from(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>, clients: Clients<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match clients.ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(path)? {
                roots.add(c).map_err(|source| TlsError::Ca { path: path.to_path_buf(), source })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = if clients.http2 { vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()] } else { vec![ALPN_HTTP11.to_vec()] };
    Ok(Arc::new(config))
}

/// Client config trusting the system roots plus an optional extra CA file.
pub fn client_config(extra_ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    // A missing or unreadable system store is not fatal: an extra CA may be all we need.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|source| TlsError::Ca { path: path.to_path_buf(), source })?;
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Whether `cert` (a leaf certificate, DER) names `host` (wildcards as TLS reads them).
/// A host that is not a DNS name or an address is named by no certificate.
pub fn names_host(cert: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(name) = rustls_pki_types::ServerName::try_from(host) else { return false };
    let Ok(leaf) = webpki::EndEntityCert::try_from(cert) else { return false };
    leaf.verify_is_valid_for_subject_name(&name).is_ok()
}

/// When `cert` (a certificate, DER) expires: its notAfter in seconds since the Unix
/// epoch; `None` when the encoding is not one tether can read. Read by hand (a handful
/// of DER headers) because rustls and webpki keep the validity to themselves and the
/// metric it feeds does not justify an X.509 parser.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0; // [0] EXPLICIT, optional
    let (certificate, _) = der_expect(cert.as_ref(), SEQUENCE)?;
    let (tbs, _) = der_expect(certificate, SEQUENCE)?;
    let (mut tag, _, mut rest) = der_next(tbs)?;
    if tag == VERSION {
        // That was the version; the serial number comes next.
        (tag, _, rest) = der_next(rest)?;
    }
    if tag != 0x02 {
        return None;
    }
    let (_signature, rest) = der_expect(rest, SEQUENCE)?;
    let (_issuer, rest) = der_expect(rest, SEQUENCE)?;
    let (validity, _) = der_expect(rest, SEQUENCE)?;
    let (_not_before_tag, _, rest) = der_next(validity)?;
    let (tag, time, _) = der_next(rest)?;
    der_time(tag, time)
}

/// One DER element: its tag, its contents and what follows it. Lengths of up to four
/// bytes (a certificate is never larger), definite form only, as DER requires.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn der_expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, contents, rest) = der_next(input)?;
    (tag == want).then_some((contents, rest))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the
/// two forms RFC 5280 allows in a certificate, as seconds since the epoch.
fn der_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0')))
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod expiry_tests {
    use super::*;

    fn cert_until(year: i32, month: u8, day: u8) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["tether.test".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn reads_not_after_in_both_time_forms() {
        // 2049 is written as UTCTime, 2050 and later as GeneralizedTime (RFC 5280).
        assert_eq!(not_after(&cert_until(2049, 12, 31)), Some(2_524_521_600));
        assert_eq!(not_after(&cert_until(2050, 1, 1)), Some(2_524_608_000));
        assert_eq!(not_after(&cert_until(2027, 3, 1)), Some(1_803_859_200));
    }

    #[test]
    fn every_prefix_and_garbage_is_none_not_a_panic() {
        let der = cert_until(2030, 6, 15);
        let bytes = der.as_ref();
        for n in 0..bytes.len() {
            assert_eq!(not_after(&CertificateDer::from(bytes[..n].to_vec())), None, "prefix {n}");
        }
        for garbage in [&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..], &[0x30, 0x80], &[0x30, 0x03, 0x30, 0x01, 0x02], b"not a certificate"] {
            assert_eq!(not_after(&CertificateDer::from(garbage.to_vec())), None);
        }
    }

    #[test]
    fn times_outside_the_calendar_are_refused() {
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x18, b"19700101000000Z"), Some(0));
        assert_eq!(der_time(0x17, b"701301000000Z"), None);
        assert_eq!(der_time(0x17, b"7001010000001"), None);
        assert_eq!(der_time(0x17, b"70010100000+Z"), None);
        assert_eq!(der_time(0x18, b"700101000000Z"), None);
        assert_eq!(der_time(0x04, b"700101000000Z"), None);
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_hosts_only() {
        let ck = rcgen::generate_simple_self_signed(vec!["admin.example.com".into(), "*.console.example".into(), "127.0.0.1".into()]).unwrap();
        let der = ck.cert.der().clone();
        for (host, want) in [
            ("admin.example.com", true),
            ("ADMIN.example.com", true),
            ("a.console.example", true),
            ("127.0.0.1", true),
            ("evil.example", false),
            ("a.b.console.example", false),
            ("admin.example.com.evil.example", false),
            ("", false),
            ("admin.example.com/x", false),
        ] {
            assert_eq!(names_host(&der, host), want, "{host}");
        }
    }
}
