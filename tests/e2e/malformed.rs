//! Hostile and broken input: each gets a bounded, clean outcome.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn garbage_instead_of_tls_is_closed() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "").await;
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let out = read_to_close(&mut tcp).await;
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(t.metric("tether_client_hello_total{result=\"not_tls\"}").await, 1.0);
}

#[tokio::test]
async fn truncated_hello_is_closed() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "").await;
    let hello = fixture_hello(3);
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    tcp.write_all(&hello[..hello.len() / 2]).await.unwrap();
    tcp.shutdown().await.unwrap();
    read_to_close(&mut tcp).await;
    assert_eq!(t.metric("tether_client_hello_total{result=\"truncated\"}").await, 1.0);
}

#[tokio::test]
async fn stalled_hello_times_out() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "[limits]\nclient_hello_timeout = \"300ms\"").await;
    let hello = fixture_hello(3);
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    tcp.write_all(&hello[..20]).await.unwrap();
    // Never send the rest: tether must hang up by itself.
    read_to_close(&mut tcp).await;
    assert_eq!(t.metric("tether_client_hello_total{result=\"timeout\"}").await, 1.0);
}

/// Re-frames a hello's handshake message into records of `size` bytes of payload.
fn fragment(raw: &[u8], size: usize) -> Vec<u8> {
    let len = u16::from_be_bytes([raw[3], raw[4]]) as usize;
    let msg = &raw[5..5 + len];
    let mut out = Vec::new();
    for chunk in msg.chunks(size) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[tokio::test]
async fn fragmented_hello_in_tiny_segments_is_fingerprinted_and_replayed_to_rustls() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "").await;
    let bytes = fragment(&fixture_hello(3), 7);
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    for piece in bytes.chunks(3) {
        tcp.write_all(piece).await.unwrap();
        tcp.flush().await.unwrap();
    }
    // rustls, fed the replayed bytes, answers with a ServerHello record.
    let mut head = [0u8; 6];
    tokio::time::timeout(HANG_GUARD, tcp.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(head[0], 0x16, "handshake record");
    assert_eq!(head[5], 0x02, "ServerHello");
    assert_eq!(t.metric("tether_client_hello_total{result=\"parsed\"}").await, 1.0);
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "").await;
    let mut tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let huge = "a".repeat(100 << 10);
    let req = format!("GET / HTTP/1.1\r\nHost: localhost:{}\r\nX-Big: {huge}\r\n\r\n", t.addr().port());
    let _ = tls.write_all(req.as_bytes()).await;
    let out = read_head(&mut tls).await;
    assert!(out.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&out[..out.len().min(80)]));
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let req = format!("GET / HTTP/1.1\r\nHost: localhost:{}\r\n{many}\r\n", t.addr().port());
    let _ = tls.write_all(req.as_bytes()).await;
    let out = read_head(&mut tls).await;
    assert!(out.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&out[..out.len().min(80)]));
}

#[tokio::test]
async fn slow_header_sender_is_cut_off() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "[limits]\nheader_read_timeout = \"500ms\"").await;
    let mut tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    // The rest of the headers never comes; tether closes (hyper may first send 408).
    let out = read_to_close(&mut tls).await;
    assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&out));
}

#[tokio::test]
async fn stalled_request_body_is_cut_off() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "[limits]\nbody_idle_timeout = \"500ms\"").await;
    let mut tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let head = format!("POST / HTTP/1.1\r\nHost: localhost:{}\r\nContent-Length: 100\r\n\r\nonly-a-little", t.addr().port());
    tls.write_all(head.as_bytes()).await.unwrap();
    let out = read_to_close(&mut tls).await;
    assert!(out.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&out));
}

#[tokio::test]
async fn connection_cap_closes_excess_connections() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "[limits]\nmax_connections = 1").await;
    let _held = TcpStream::connect(t.addr()).await.unwrap();
    // Wait until the first connection is counted before opening the second.
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while t.metric("tether_connections_open").await != 1.0 {
        assert!(std::time::Instant::now() < deadline, "the first connection was never counted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut second = TcpStream::connect(t.addr()).await.unwrap();
    let out = read_to_close(&mut second).await;
    assert!(out.is_empty());
    assert_eq!(t.metric("tether_connections_rejected_total").await, 1.0);
}

#[tokio::test]
async fn a_hello_without_the_rest_of_the_handshake_times_out() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "[limits]\ntls_handshake_timeout = \"300ms\"").await;
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    // A whole, valid hello; then silence where the client's Finished should be.
    tcp.write_all(&fixture_hello(5)).await.unwrap();
    read_to_close(&mut tcp).await;
    assert_eq!(t.metric("tether_client_hello_total{result=\"parsed\"}").await, 1.0);
    assert_eq!(t.metric("tether_tls_handshakes_total{result=\"timeout\"}").await, 1.0);
}

#[tokio::test]
async fn a_silent_upstream_is_504() {
    // An upstream that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let t = start_tls(&format!("http://{addr}"), "", "[limits]\nupstream_response_timeout = \"300ms\"").await;
    let (parts, body) = h1(&t, get(&t, "/").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap()).await;
    assert_eq!(parts.status, 504);
    assert!(!String::from_utf8_lossy(&body).contains(&addr.to_string()));
    assert_eq!(t.metric("tether_upstream_errors_total{kind=\"timeout\"}").await, 1.0);
}
