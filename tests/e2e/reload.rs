//! Reloads: a broken file or database keeps the snapshot in force.

use bytes::Bytes;
use http_body_util::Full;

use crate::support::*;

#[tokio::test]
async fn a_corrupt_database_at_reload_keeps_the_last_good_reader() {
    let up = spawn_upstream(None).await;
    let certs = certs();
    let dir = certs.dir.path().to_path_buf();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("GeoLite-fixtures");
    std::fs::copy(fixtures.join("GeoLite2-ASN.mmdb"), dir.join("asn.mmdb")).unwrap();
    std::fs::write(dir.join("iocs.txt"), "192.0.2.66\n").unwrap();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n[intel]\nasn_db = \"asn.mmdb\"\nioc_files = [\"iocs.txt\"]\n"
    );
    let path = dir.join("tether.toml");
    std::fs::write(&path, &text).unwrap();
    let t = start_text(&text, certs).await;
    let shared = &t.running.shared;
    let ioc = |shared: &tether::state::Shared, ip: &str| shared.snapshot().intel.as_ref().unwrap().lookup(ip.parse().unwrap()).ioc.any();
    assert!(ioc(shared, "192.0.2.66"));

    // Corrupt database: refused, the old reader stays.
    std::fs::write(dir.join("asn.mmdb"), b"garbage").unwrap();
    std::fs::write(dir.join("iocs.txt"), "192.0.2.77\n").unwrap();
    let err = t.running.reload(&path).unwrap_err().to_string();
    assert!(err.contains("asn.mmdb"), "{err}");
    assert_eq!(shared.snapshot().generation, 1);
    assert!(ioc(shared, "192.0.2.66") && !ioc(shared, "192.0.2.77"));
    assert_eq!(shared.snapshot().intel.as_ref().unwrap().lookup("127.0.2.1".parse().unwrap()).asn.map(|a| a.0), Some(39351));

    // A broken IoC line: refused too, naming file and line.
    std::fs::copy(fixtures.join("GeoLite2-ASN.mmdb"), dir.join("asn.mmdb")).unwrap();
    std::fs::write(dir.join("iocs.txt"), "192.0.2.77\nnonsense\n").unwrap();
    let err = t.running.reload(&path).unwrap_err().to_string();
    assert!(err.contains("iocs.txt:2"), "{err}");

    // Fixed: the new lists are in force under a new generation.
    std::fs::write(dir.join("iocs.txt"), "192.0.2.77\n").unwrap();
    assert_eq!(t.running.reload(&path).unwrap(), 2);
    assert!(!ioc(shared, "192.0.2.66") && ioc(shared, "192.0.2.77"));
    assert_eq!(t.metric("tether_config_reloads_total{result=\"failure\"}").await, 2.0);
    assert_eq!(t.metric("tether_config_reloads_total{result=\"success\"}").await, 1.0);
    assert_eq!(t.metric("tether_config_generation").await, 2.0);
    assert_eq!(t.metric("tether_intel_database_build_timestamp_seconds{database=\"asn\"}").await, 1_793_491_200.0);
}

/// Waits (bounded) until the snapshot generation reaches `n`.
async fn generation_reaches(shared: &tether::state::Shared, n: u64) -> bool {
    // Bounded by the hang guard; on a loaded machine the watcher's debounce and the
    // reload itself can take a while.
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while std::time::Instant::now() < deadline {
        if shared.snapshot().generation >= n {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    let up = spawn_upstream(None).await;
    let certs = certs();
    let dir = certs.dir.path().to_path_buf();
    // The kubelet's layout: tether.toml -> ..data/tether.toml, ..data -> ..v1
    let body = |mode: &str| {
        format!(
            "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n[policy]\nmode = \"{mode}\"\n",
            dir.join("tls.crt").display(),
            dir.join("tls.key").display()
        )
    };
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/tether.toml"), body("enforce")).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tether.toml", dir.join("tether.toml")).unwrap();
    let path = dir.join("tether.toml");
    let t = start_text(&std::fs::read_to_string(&path).unwrap(), certs).await;
    tether::watch::spawn(t.running.shared.clone(), path.clone(), t.running.stop.subscribe());
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    // An unrelated write in the directory does not reload.
    std::fs::write(dir.join("audit.jsonl"), "x\n").unwrap();
    // The swap: a new version directory, then ..data re-pointed atomically.
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/tether.toml"), body("monitor")).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    assert!(generation_reaches(&t.running.shared, 2).await, "the swap was not picked up");
    assert_eq!(t.running.shared.snapshot().detector.mode(), tether::policy::Mode::Monitor);
    assert_eq!(t.running.shared.snapshot().generation, 2, "exactly one reload");

    // A broken edit is refused and the running config stays.
    std::fs::write(dir.join("..v2/tether.toml"), "[listen\n").unwrap();
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while std::time::Instant::now() < deadline {
        if t.metric("tether_config_reloads_total{result=\"failure\"}").await >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(t.metric("tether_config_reloads_total{result=\"failure\"}").await, 1.0);
    assert_eq!(t.running.shared.snapshot().generation, 2);
}

#[test]
fn sighup_reloads_a_running_process() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let cfg = dir.path().join("tether.toml");
    let text = |mode: &str| format!("[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"{admin_addr}\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[policy]\nmode = \"{mode}\"\n");
    std::fs::write(&cfg, text("enforce")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("TETHER_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // A hang guard: a stuck process is killed, which ends the line reader below.
    let pid = child.id();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    });
    let mut wait_for = |needle: &str| {
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.contains(needle) {
                return true;
            }
        }
        false
    };
    assert!(wait_for("tether listening"));
    assert!(wait_for("watching configuration files"));
    // Write through a temporary file so the watcher sees one complete change.
    std::fs::write(dir.path().join("next.toml"), text("monitor")).unwrap();
    std::fs::rename(dir.path().join("next.toml"), &cfg).unwrap();
    // The file watcher reloads on its own...
    assert!(wait_for("generation=2"));
    // ...and SIGHUP reloads on demand.
    let pid = child.id().to_string();
    std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(wait_for("generation=3"));
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(wait_for("draining"));
    assert!(child.wait().unwrap().success());
}

/// Writes one variant of the reload test's config.
fn write_config(dir: &std::path::Path, up: std::net::SocketAddr, threshold: u32, cert: &str, ioc: &str) {
    let g = geolite();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"{cert}.crt\"\ntls_key = \"{cert}.key\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n\
         [intel]\nasn_db = \"asn.mmdb\"\ncity_db = \"{}\"\nioc_files = [\"iocs.txt\"]\n[session]\ncookies = [\"session\"]\n[policy]\nstep_up_threshold = {threshold}\n[audit]\npath = \"audit.jsonl\"\n",
        g.join("GeoLite2-City.mmdb").display()
    );
    std::fs::write(dir.join("iocs.txt"), ioc).unwrap();
    std::fs::write(dir.join("tether.toml"), text).unwrap();
}

#[tokio::test]
async fn a_hundred_reloads_under_traffic_drop_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let up = spawn_upstream(None).await;
    let certs_a = certs();
    let dir = certs_a.dir.path().to_path_buf();
    // A second certificate, swapped in and out by reloads.
    let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("b.crt"), b.cert.pem()).unwrap();
    std::fs::write(dir.join("b.key"), b.signing_key.serialize_pem()).unwrap();
    std::fs::copy(dir.join("tls.crt"), dir.join("a.crt")).unwrap();
    std::fs::copy(dir.join("tls.key"), dir.join("a.key")).unwrap();
    std::fs::copy(geolite().join("GeoLite2-ASN.mmdb"), dir.join("asn.mmdb")).unwrap();
    write_config(&dir, up, 50, "a", "192.0.2.200\n");
    let path = dir.join("tether.toml");
    let t = std::sync::Arc::new(start_text(&std::fs::read_to_string(&path).unwrap(), certs_a).await);

    // Traffic: fresh TLS connections, each one request with a session, trusting both
    // certificates.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (ok, failed) = (std::sync::Arc::new(AtomicU64::new(0)), std::sync::Arc::new(AtomicU64::new(0)));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(t.certs.der.clone()).unwrap();
    roots.add(b.cert.der().clone()).unwrap();
    let client_cfg = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(tether::net::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut workers = Vec::new();
    for w in 0..2 {
        let (t, stop, ok, failed, cfg) = (t.clone(), stop.clone(), ok.clone(), failed.clone(), client_cfg.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let attempt = async {
                    let tcp = tokio::net::TcpStream::connect(t.addr()).await.ok()?;
                    let sni = rustls::pki_types::ServerName::try_from("localhost").ok()?;
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone()).connect(sni, tcp).await.ok()?;
                    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.ok()?;
                    tokio::spawn(conn);
                    let req = get(&t, "/").header("cookie", format!("session=worker-{w}-{}", n % 5)).body(Full::new(Bytes::new())).ok()?;
                    let resp = send.send_request(req).await.ok()?;
                    Some(resp.status().as_u16())
                };
                match tokio::time::timeout(HANG_GUARD, attempt).await {
                    Ok(Some(200)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let shared = &t.running.shared;
    let mut expected_threshold = 50;
    let mut generation = 1;
    for i in 0..100u32 {
        let before = ok.load(Ordering::Relaxed);
        if i % 4 == 3 {
            // Invalid, four ways: syntax, a missing database, a bad IoC line, a bad certificate.
            match i % 16 {
                3 => std::fs::write(&path, "[listen\n").unwrap(),
                7 => {
                    write_config(&dir, up, 99, "a", "192.0.2.200\n");
                    let text = std::fs::read_to_string(&path).unwrap().replace("asn.mmdb", "missing.mmdb");
                    std::fs::write(&path, text).unwrap();
                }
                11 => write_config(&dir, up, 99, "a", "192.0.2.200\nnot-an-address\n"),
                _ => {
                    std::fs::write(dir.join("broken.crt"), "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n").unwrap();
                    std::fs::copy(dir.join("a.key"), dir.join("broken.key")).unwrap();
                    write_config(&dir, up, 99, "broken", "192.0.2.200\n");
                }
            }
            assert!(t.running.reload(&path).is_err(), "reload {i} should fail");
            assert_eq!(shared.snapshot().generation, generation, "reload {i}: the old snapshot stays");
            assert_eq!(shared.snapshot().detector.policy.step_up_threshold, expected_threshold);
        } else {
            expected_threshold = 40 + (i % 20);
            let cert = if (i / 10) % 2 == 0 { "a" } else { "b" };
            let ioc = format!("192.0.2.{}\n", i + 1);
            // A fresh copy of the database: a new file, as an update would bring.
            std::fs::copy(geolite().join("GeoLite2-ASN.mmdb"), dir.join("asn.mmdb.new")).unwrap();
            std::fs::rename(dir.join("asn.mmdb.new"), dir.join("asn.mmdb")).unwrap();
            write_config(&dir, up, expected_threshold, cert, &ioc);
            generation = t.running.reload(&path).unwrap_or_else(|e| panic!("reload {i}: {e}"));
            let snap = shared.snapshot();
            assert_eq!(snap.detector.policy.step_up_threshold, expected_threshold, "reload {i}: the new policy is in force");
            let intel = snap.intel.as_ref().unwrap();
            assert!(intel.lookup(format!("192.0.2.{}", i + 1).parse().unwrap()).ioc.any(), "reload {i}: the new list is in force");
            assert!(!intel.lookup("192.0.2.200".parse().unwrap()).ioc.any());
        }
        // Let traffic flow across every reload.
        for _ in 0..200 {
            if ok.load(Ordering::Relaxed) > before {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} requests failed across 100 reloads", ok + failed);
    assert!(ok >= 100, "traffic flowed: {ok}");
    assert_eq!(generation, 76, "75 valid reloads after the first snapshot");
    assert_eq!(t.metric("tether_config_reloads_total{result=\"failure\"}").await, 25.0);
}

#[tokio::test]
async fn a_websocket_is_closed_when_a_reload_makes_its_session_unwelcome() {
    use futures_util::{SinkExt, StreamExt};
    let (t, dir, path, up, mut ws) = websocket_behind_reloads("live-socket").await;

    // A harmless reload keeps the socket.
    write_config(&dir, up, 60, "a", "192.0.2.200\n");
    t.running.reload(&path).unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("still here")).await.unwrap();
    let echoed = tokio::time::timeout(HANG_GUARD, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "still here");

    // The client's address lands on an IoC list: the open tunnel is cut.
    write_config(&dir, up, 60, "a", "127.0.0.1\n");
    t.running.reload(&path).unwrap();
    let next = tokio::time::timeout(HANG_GUARD, ws.next()).await.expect("the tunnel was not closed");
    assert!(!matches!(next, Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))), "{next:?}");
}

#[tokio::test]
async fn a_websocket_judged_again_after_a_reload_counts_its_decision() {
    use futures_util::{SinkExt, StreamExt};
    const ALLOW: &str = "tether_decisions_total{action=\"allow\",mode=\"enforce\"}";
    const TIMED: &str = "tether_decision_duration_seconds_count";
    let (t, dir, path, up, mut ws) = websocket_behind_reloads("counted-socket").await;
    // The upgrade request itself was judged and allowed.
    assert_eq!(t.metric(ALLOW).await, 1.0);
    assert_eq!(t.metric(TIMED).await, 1.0);

    // A harmless reload: the tunnel is judged again, allowed, and counted like a request.
    write_config(&dir, up, 60, "a", "192.0.2.200\n");
    t.running.reload(&path).unwrap();
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while t.metric(ALLOW).await < 2.0 {
        assert!(std::time::Instant::now() < deadline, "the re-judged tunnel's allow was not counted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(t.metric(ALLOW).await, 2.0);
    assert_eq!(t.metric(TIMED).await, 2.0);
    ws.send(tokio_tungstenite::tungstenite::Message::text("still here")).await.unwrap();
    let echoed = tokio::time::timeout(HANG_GUARD, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "still here");
}

/// tether with a reloadable config in front of an echo upstream, and an open WebSocket
/// through it carrying `session=<cookie>`, checked with one echo.
async fn websocket_behind_reloads(
    cookie: &str,
) -> (
    Tether,
    std::path::PathBuf,
    std::path::PathBuf,
    std::net::SocketAddr,
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
) {
    use futures_util::{SinkExt, StreamExt};
    let up = spawn_upstream(None).await;
    let c = certs();
    let dir = c.dir.path().to_path_buf();
    std::fs::copy(geolite().join("GeoLite2-ASN.mmdb"), dir.join("asn.mmdb")).unwrap();
    std::fs::copy(dir.join("tls.crt"), dir.join("a.crt")).unwrap();
    std::fs::copy(dir.join("tls.key"), dir.join("a.key")).unwrap();
    write_config(&dir, up, 50, "a", "192.0.2.200\n");
    let path = dir.join("tether.toml");
    let t = start_text(&std::fs::read_to_string(&path).unwrap(), c).await;

    let tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("wss://localhost:{}/ws", t.addr().port())).unwrap();
    req.headers_mut().insert("cookie", format!("session={cookie}").parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::client_async(req, tls)).await.unwrap().unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("before")).await.unwrap();
    assert!(ws.next().await.unwrap().is_ok());
    (t, dir, path, up, ws)
}
