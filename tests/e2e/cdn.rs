//! Behind a CDN: a TLS listener that believes the CDN's JA4 and client-address headers
//! from trusted peers only, trusted ranges read from a file, authenticated origin pulls
//! (a client certificate), and a shared-secret header.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::support::*;

const CDN_JA4: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";

/// tether on TLS with `listen_extra`, echoing upstream with the fingerprint forwarded.
async fn tether_behind_cdn(listen_extra: &str) -> Tether {
    let up = spawn_upstream(None).await;
    start_tls(&format!("http://{up}"), listen_extra, "forward_fingerprint = true\n").await
}

/// A request as the CDN sends it: the client's JA4 and address in the CDN's headers.
fn from_cdn(t: &Tether, extra: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = get(t, "/").header("cf-ja4", CDN_JA4).header("cf-connecting-ip", "203.0.113.77").header("x-forwarded-for", "198.51.100.1");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// What the upstream saw: (JA4, client address) as tether forwarded them, and whether
/// any of the CDN's own headers (or the secret) reached it.
fn upstream_saw(body: &Bytes) -> (String, String, bool) {
    let echo = json(body);
    let ja4 = seen(&echo, "x-tether-ja4").first().map_or(String::new(), |s| s.to_string());
    let ip = seen(&echo, "x-tether-client-ip").first().map_or(String::new(), |s| s.to_string());
    let leaked = ["cf-ja4", "cf-connecting-ip", "x-origin-secret"].iter().any(|h| !seen(&echo, h).is_empty());
    (ja4, ip, leaked)
}

#[tokio::test]
async fn a_cdns_headers_are_believed_on_a_tls_listener_from_trusted_peers_only() {
    let listen = "ja4_header = \"cf-ja4\"\nclient_ip_header = \"cf-connecting-ip\"\ntrusted_proxies = [\"127.0.0.1\"]";
    let t = tether_behind_cdn(listen).await;
    // From the CDN (a trusted peer): the client's JA4 and address.
    let (parts, body) = h1_from(&t, "127.0.0.1", from_cdn(&t, &[])).await;
    assert_eq!(parts.status, 200);
    assert_eq!(upstream_saw(&body), (CDN_JA4.to_owned(), "203.0.113.77".to_owned(), false));
    // From anyone else: the connection's own JA4 and address, the headers ignored (and
    // still never forwarded).
    let (_, body) = h1_from(&t, "127.0.0.9", from_cdn(&t, &[])).await;
    let (ja4, ip, leaked) = upstream_saw(&body);
    assert!(!ja4.is_empty() && ja4 != CDN_JA4, "{ja4}");
    assert_eq!((ip.as_str(), leaked), ("127.0.0.9", false));
    // Two JA4 headers are two claims: the connection's own.
    let (_, body) = h1_from(&t, "127.0.0.1", from_cdn(&t, &[("cf-ja4", "t13d0000h2_000000000000_000000000000")])).await;
    assert_ne!(upstream_saw(&body).0, CDN_JA4);
}

#[tokio::test]
async fn trusted_ranges_come_from_a_file_that_a_reload_rereads() {
    let up = spawn_upstream(None).await;
    let certs = certs();
    let dir = certs.dir.path().to_path_buf();
    let file = dir.join("cdn-ranges.txt");
    std::fs::write(&file, "# the CDN's published ranges\n127.0.0.0/24   # loopback edge\n\n2001:db8::/32\n").unwrap();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\nclient_ip_header = \"cf-connecting-ip\"\ntrusted_proxies_file = \"cdn-ranges.txt\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\nforward_fingerprint = true\n"
    );
    let path = dir.join("tether.toml");
    std::fs::write(&path, &text).unwrap();
    let t = start_text(&text, certs).await;
    let (_, body) = h1_from(&t, "127.0.0.1", from_cdn(&t, &[])).await;
    assert_eq!(upstream_saw(&body).1, "203.0.113.77");
    // The CDN drops the range: after a reload the header is no longer believed.
    std::fs::write(&file, "2001:db8::/32\n").unwrap();
    t.running.reload(&path).expect("reload");
    let (_, body) = h1_from(&t, "127.0.0.1", from_cdn(&t, &[])).await;
    assert_eq!(upstream_saw(&body).1, "127.0.0.1");
    // A bad line refuses the reload, naming the file's line; the ranges in force stay.
    std::fs::write(&file, "127.0.0.0/24\nnot-a-range\n").unwrap();
    let err = t.running.reload(&path).unwrap_err().to_string();
    assert!(err.contains("listen.trusted_proxies_file:2"), "{err}");
    let (_, body) = h1_from(&t, "127.0.0.1", from_cdn(&t, &[])).await;
    assert_eq!(upstream_saw(&body).1, "127.0.0.1");
}

#[tokio::test]
async fn a_shared_secret_header_is_required_before_a_trusted_peer_is_believed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "origin-secret-0123456789abcdef";
    std::fs::write(dir.path().join("origin.secret"), format!("{secret}\n")).unwrap();
    let listen = format!(
        "ja4_header = \"cf-ja4\"\nclient_ip_header = \"cf-connecting-ip\"\ntrusted_proxies = [\"127.0.0.1\"]\nproxy_secret_header = \"x-origin-secret\"\nproxy_secret_file = \"{}\"",
        dir.path().join("origin.secret").display()
    );
    let t = tether_behind_cdn(&listen).await;
    // (secret header values, believed?)
    let rows: [(&[&str], bool); 5] = [
        (&[secret], true),
        (&[], false),
        (&["origin-secret-0123456789abcdeX"], false),
        (&["origin-secret"], false),
        (&[secret, secret], false),
    ];
    for (values, believed) in rows {
        let extra: Vec<(&str, &str)> = values.iter().map(|v| ("x-origin-secret", *v)).collect();
        let (_, body) = h1_from(&t, "127.0.0.1", from_cdn(&t, &extra)).await;
        let (ja4, ip, leaked) = upstream_saw(&body);
        assert_eq!((ja4 == CDN_JA4, ip == "203.0.113.77"), (believed, believed), "{values:?}");
        assert!(!leaked, "the secret and the CDN headers never reach the console");
    }
    // A short secret is refused by the config.
    std::fs::write(dir.path().join("short.secret"), "short").unwrap();
    let text = "[listen]\naddr = \"127.0.0.1:0\"\nproxy_secret_header = \"x-origin-secret\"\nproxy_secret_file = \"short.secret\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let err = tether::config::Config::parse(text, dir.path()).unwrap_err();
    assert!(err.to_string().contains("listen.proxy_secret_file"), "{err}");
}

#[tokio::test]
async fn authenticated_origin_pulls_require_the_cdns_client_certificate() {
    // A CA for the CDN's client certificates, and one certificate it issued.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["origin-pull.cdn.example".into()]).unwrap().signed_by(&client_key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cdn-ca.pem"), ca.pem()).unwrap();
    let t = tether_behind_cdn(&format!("client_ca = \"{}\"", dir.path().join("cdn-ca.pem").display())).await;

    let connect = |with_cert: bool| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(t.certs.der.clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(tether::net::tls::provider()).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots);
        let mut cfg = if with_cert {
            let key = rustls::pki_types::PrivateKeyDer::try_from(client_key.serialize_der()).unwrap();
            b.with_client_auth_cert(vec![client.der().clone()], key).unwrap()
        } else {
            b.with_no_client_auth()
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let addr = t.addr();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = TlsConnector::from(Arc::new(cfg)).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
            let mut out = Vec::new();
            tls.read_to_end(&mut out).await?;
            Ok::<Vec<u8>, std::io::Error>(out)
        }
    };
    let ok = connect(true).await.expect("the CDN's certificate is accepted");
    assert!(ok.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&ok));
    // Without it the handshake (TLS 1.3: the first read) fails: nothing is served.
    let refused = connect(false).await;
    assert!(refused.as_ref().map_or(true, |out| out.is_empty()), "{:?}", refused.map(|o| String::from_utf8_lossy(&o).into_owned()));
}

#[tokio::test]
async fn consoles_get_hardened_session_cookies_and_may_do_without_http2() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "http2 = false", "harden_session_cookies = true\n[session]\ncookies = [\"sessionid\"]\n").await;
    // Offered h2 and HTTP/1.1, the listener picks HTTP/1.1.
    let tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let req = get(&t, "/login").header("x-test-set-cookie", "sessionid=abc; Path=/").header("x-test-set-cookie", "csrftoken=x; Path=/").body(Full::new(Bytes::new())).unwrap();
    let (parts, _) = h1(&t, req).await;
    let cookies: Vec<&str> = parts.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(cookies, ["sessionid=abc; Path=/; Secure; HttpOnly", "csrftoken=x; Path=/"]);
}
