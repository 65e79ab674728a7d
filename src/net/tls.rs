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
    #[error("the client CA cannot verify certificates: {0}")]
    ClientCa(String),
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

pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for_clients(cert, key, None)
}

/// The listener's config; with `client_ca`, every client must present a certificate
/// issued by it (a CDN's authenticated origin pulls), or the handshake fails.
pub fn server_config_for_clients(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key { path: key.to_path_buf(), source })?;
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(path)? {
                roots.add(c)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
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
            roots.add(cert)?;
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
