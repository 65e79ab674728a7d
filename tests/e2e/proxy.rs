use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::Full;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

#[tokio::test]
async fn h1_forwarding_strips_hop_by_hop_and_overwrites_proxy_headers() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "").await;
    let req = get(&t, "/leaky?q=1")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("x-tether-decision", "allow")
        .header("x-tether-score", "0")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "gopher")
        .header("forwarded", "for=6.6.6.6")
        .header("proxy-authorization", "Basic eDp5")
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    let (parts, body) = h1(&t, req).await;
    assert_eq!(parts.status, 200);
    let echo = json(&body);
    assert_eq!(echo["path"], "/leaky?q=1");
    assert_eq!(echo["version"], "HTTP/1.1");
    for gone in ["x-private", "x-tether-decision", "x-tether-score", "forwarded", "proxy-authorization", "te", "connection"] {
        assert!(seen(&echo, gone).is_empty(), "{gone} reached the upstream: {echo}");
    }
    // Spoofed XFF from an untrusted peer is replaced by the socket peer.
    assert_eq!(seen(&echo, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), vec!["https"]);
    let host = format!("localhost:{}", t.addr().port());
    assert_eq!(seen(&echo, "x-forwarded-host"), vec![host.as_str()]);
    assert_eq!(seen(&echo, "host"), vec![host.as_str()]);
    // The upstream's hop-by-hop headers do not reach the client.
    assert!(parts.headers.get("x-up-secret").is_none());
    assert!(parts.headers.get("keep-alive").is_none());
    assert_eq!(parts.headers["x-kept"], "1");
}

#[tokio::test]
async fn h2_downstream_is_forwarded_as_h1() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "forward_fingerprint = true").await;
    let req = Request::get(format!("https://localhost:{}/h2path", t.addr().port())).body(empty()).unwrap();
    let (parts, body) = h2(&t, req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.version, http::Version::HTTP_2);
    let echo = json(&body);
    assert_eq!(echo["version"], "HTTP/1.1");
    let host = format!("localhost:{}", t.addr().port());
    assert_eq!(seen(&echo, "host"), vec![host.as_str()]);
    assert_eq!(seen(&echo, "x-forwarded-host"), vec![host.as_str()]);
    // The live connection was fingerprinted (a rustls client: TLS 1.3, SNI, h2).
    let ja4 = seen(&echo, "x-tether-ja4");
    assert_eq!(ja4.len(), 1, "{echo}");
    assert_eq!(ja4[0].len(), 36);
    assert!(ja4[0].starts_with("t13d") && ja4[0][8..10].eq("h2"), "{}", ja4[0]);
    assert_eq!(t.metric("tether_client_hello_total{result=\"parsed\"}").await, 1.0);
    assert_eq!(t.metric("tether_requests_total{protocol=\"http2\",status=\"2xx\"}").await, 1.0);
}

#[tokio::test]
async fn xff_believed_only_from_trusted_peers() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "trusted_proxies = [\"127.0.0.0/8\"]", "").await;
    let req = get(&t, "/").header("x-forwarded-for", "1.1.1.1, 203.0.113.9, 127.0.0.9").body(empty()).unwrap();
    let (_, body) = h1(&t, req).await;
    // Rightmost untrusted hop: the balancer at 127.0.0.9 vouches for 203.0.113.9 only.
    assert_eq!(seen(&json(&body), "x-forwarded-for"), vec!["203.0.113.9"]);
}

#[tokio::test]
async fn websocket_echo_through_the_tunnel() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "").await;
    let tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let url = format!("wss://localhost:{}/ws", t.addr().port());
    let (mut ws, resp) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::client_async(url, tls)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["hello", "through tether"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(HANG_GUARD, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    assert_eq!(t.metric("tether_upgrades_total").await, 1.0);
}

#[tokio::test]
async fn upgrade_declined_by_upstream_stays_plain_http() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "").await;
    let req = get(&t, "/not-ws").header("connection", "upgrade").header("upgrade", "websocket").body(empty()).unwrap();
    let (parts, body) = h1(&t, req).await;
    assert_eq!(parts.status, 200);
    // The upstream was asked to upgrade, and said no with a normal answer.
    assert_eq!(seen(&json(&body), "upgrade"), vec!["websocket"]);
    assert_eq!(t.metric("tether_upgrades_total").await, 0.0);
}

#[tokio::test]
async fn upstream_down_is_502_without_internals() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let t = start_tls(&format!("http://{dead}"), "", "").await;
    let (parts, body) = h1(&t, get(&t, "/").body(empty()).unwrap()).await;
    assert_eq!(parts.status, 502);
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("127.0.0.1") && !text.to_lowercase().contains("refused"), "{text}");
    assert_eq!(t.metric("tether_upstream_errors_total{kind=\"connect\"}").await, 1.0);
}

#[tokio::test]
async fn sni_host_mismatch_is_421_and_own_paths_are_not_forwarded() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "").await;
    let req = Request::get("/").header("host", "other.example").body(empty()).unwrap();
    let (parts, _) = h1(&t, req).await;
    assert_eq!(parts.status, 421);
    let (parts, _) = h1(&t, get(&t, "/.tether/nothing").body(empty()).unwrap()).await;
    assert_eq!(parts.status, 404);
    let req = get(&t, "/").header("host", "localhost").body(empty()).unwrap();
    let (parts, _) = h1(&t, req).await;
    assert_eq!(parts.status, 400, "duplicate Host");
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "[limits]\nmax_body_bytes = \"1KiB\"").await;
    let small = Request::post("/").header("host", format!("localhost:{}", t.addr().port())).body(Full::new(Bytes::from(vec![b'a'; 1000]))).unwrap();
    let (parts, body) = h1(&t, small).await;
    assert_eq!(parts.status, 200);
    assert_eq!(json(&body)["body_len"], 1000);
    let big = Request::post("/").header("host", format!("localhost:{}", t.addr().port())).body(Full::new(Bytes::from(vec![b'a'; 4096]))).unwrap();
    let (parts, _) = h1(&t, big).await;
    assert_eq!(parts.status, 413);
    assert_eq!(parts.headers["connection"], "close");
    // Streamed (no Content-Length) over h2: caught while streaming.
    let streamed = Request::post(format!("https://localhost:{}/", t.addr().port()))
        .body(Full::new(Bytes::from(vec![b'a'; 4096])))
        .unwrap();
    let (parts, _) = h2(&t, streamed).await;
    assert_eq!(parts.status, 413);
}

#[tokio::test]
async fn https_upstream_with_extra_ca() {
    let up_certs = certs();
    let up = spawn_upstream(Some(&up_certs)).await;
    let rest = format!("ca_file = \"{}\"", up_certs.cert.display());
    let t = start_tls(&format!("https://localhost:{}", up.port()), "", "").await;
    // Without the CA the upstream's certificate is not trusted: 502.
    let (parts, _) = h1(&t, get(&t, "/").body(empty()).unwrap()).await;
    assert_eq!(parts.status, 502);
    let certs = crate::support::certs();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"https://localhost:{}\"\n{rest}\n",
        certs.cert.display(),
        certs.key.display(),
        up.port()
    );
    let t = start_text(&text, certs).await;
    let (parts, body) = h1(&t, get(&t, "/secure").body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    assert_eq!(json(&body)["version"], "HTTP/1.1");
}

#[tokio::test]
async fn proxy_protocol_from_trusted_balancer_on_plaintext_listener() {
    use tokio::io::AsyncWriteExt;
    let up = spawn_upstream(None).await;
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\nproxy_protocol = true\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n"
    );
    let t = start_text(&text, certs()).await;
    let mut tcp = tokio::net::TcpStream::connect(t.addr()).await.unwrap();
    tcp.write_all(b"PROXY TCP4 198.51.100.23 10.0.0.1 40000 443\r\nGET /pp HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n").await.unwrap();
    let out = read_to_close(&mut tcp).await;
    let text = String::from_utf8_lossy(&out);
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    // The PROXY source is the client; its own XFF is not believed (198.51.100.23 is not a trusted hop).
    assert_eq!(seen(&echo, "x-forwarded-for"), vec!["198.51.100.23"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(t.metric("tether_proxy_protocol_total{result=\"ok\"}").await, 1.0);
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "").await;
    let (parts, _) = h1(&t, get(&t, "/").body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    let addr = t.addr();
    tokio::time::timeout(HANG_GUARD, t.running.shutdown()).await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_real_curl_gets_its_golden_ja4() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "forward_fingerprint = true").await;
    let url = format!("https://localhost:{}/curl", t.addr().port());
    let cacert = t.certs.cert.clone();
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(&cacert)
        .arg(&url)
        .output()
        .await
        .expect("curl is part of the machine image");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let echo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The fixture hello-2 was captured from this curl with the same command line.
    let golden = std::fs::read_to_string(format!("{}/../shared/fixtures/clienthello/EXPECTED_JA4.txt", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let expected = golden.lines().find(|l| l.starts_with("hello-2.hex")).unwrap().split_whitespace().nth(1).unwrap().to_owned();
    let version = std::process::Command::new("curl").arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    if version.starts_with("curl 7.88.1") {
        assert_eq!(seen(&echo, "x-tether-ja4"), vec![expected.as_str()]);
    } else {
        // Another curl build has another hello; it must still be a TLS 1.3 h2 JA4 with SNI.
        assert!(seen(&echo, "x-tether-ja4")[0].starts_with("t13d"), "{echo}");
    }
}

#[tokio::test]
async fn ja4_header_is_believed_only_from_trusted_balancers() {
    use tokio::io::AsyncWriteExt;
    let up = spawn_upstream(None).await;
    let start = |trusted: &'static str| {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\ntrusted_proxies = [\"{trusted}\"]\nja4_header = \"x-client-ja4\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\nforward_fingerprint = true\n"
        );
        async move { start_text(&text, certs()).await }
    };
    let request = b"GET / HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nX-Client-Ja4: t13d1516h2_8daaf6152771_e5627efa2ab1\r\n\r\n";
    for (trusted, expect) in [("127.0.0.1", Some("t13d1516h2_8daaf6152771_e5627efa2ab1")), ("10.0.0.0/8", None)] {
        let t = start(trusted).await;
        let mut tcp = tokio::net::TcpStream::connect(t.addr()).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let out = read_to_close(&mut tcp).await;
        let text = String::from_utf8_lossy(&out);
        let echo: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(seen(&echo, "x-tether-ja4"), expect.into_iter().collect::<Vec<_>>(), "trusted {trusted}");
        // The balancer's header itself never reaches the upstream.
        assert!(seen(&echo, "x-client-ja4").is_empty());
    }
}

/// An upstream that answers each request as if it kept the connection (a length, no
/// `Connection: close`) and then closes it: what a console's keep-alive timeout does to a
/// pooled connection. Returns its address, the request lines it read and the number of
/// connections it accepted.
async fn closing_upstream() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen, count) = (lines.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let head = read_head(&mut tcp).await;
                let text = String::from_utf8_lossy(&head).into_owned();
                let line = text.lines().next().unwrap_or_default().to_owned();
                let host = text.lines().any(|l| l.to_ascii_lowercase().starts_with("host: "));
                seen.lock().unwrap().push(format!("{line} host={host}"));
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").await;
                // Closed at once, unannounced.
            });
        }
    });
    (addr, lines, accepted)
}

#[tokio::test]
async fn an_upstream_closing_its_connections_silently_costs_no_request() {
    let (up, lines, accepted) = closing_upstream().await;
    let t = std::sync::Arc::new(start_tls(&format!("http://{up}"), "", "").await);
    // One after another (a closed pooled connection is found closed, or the request
    // comes back unwritten and goes on a new one), then many at once.
    for i in 0..30 {
        let (parts, body) = h1(&t, get(&t, &format!("/seq/{i}?q=1")).body(empty()).unwrap()).await;
        assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"ok\n"[..]), "request {i}");
    }
    let parallel: Vec<_> = (0..40)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move { h1(&t, get(&t, &format!("/par/{i}")).body(empty()).unwrap()).await.0.status.as_u16() })
        })
        .collect();
    for task in parallel {
        assert_eq!(tokio::time::timeout(HANG_GUARD, task).await.expect("a request never completed").unwrap(), 200);
    }
    assert_eq!(t.metric("tether_requests_total{protocol=\"http1\",status=\"5xx\"}").await, 0.0);
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 70, "{lines:?}");
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 70);
    // The request line is origin-form, and the upstream is named in Host.
    assert!(lines.contains(&"GET /seq/7?q=1 HTTP/1.1 host=true".to_owned()), "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("GET /") && l.ends_with("HTTP/1.1 host=true")), "{lines:?}");
}
