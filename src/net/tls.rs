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
    server_config_from(load_chain(cert)?, load_key(key)?).map_err(|e| named_mismatch(e, cert))
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
pub fn server_config_from(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
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
