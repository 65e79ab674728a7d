//! Reloads: a broken file or database keeps the snapshot in force.

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
    for _ in 0..500 {
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
    assert_eq!(t.running.shared.snapshot().detector.mode(), tether::config::Mode::Monitor);
    assert_eq!(t.running.shared.snapshot().generation, 2, "exactly one reload");

    // A broken edit is refused and the running config stays.
    std::fs::write(dir.join("..v2/tether.toml"), "[listen\n").unwrap();
    for _ in 0..100 {
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
