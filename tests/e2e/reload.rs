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
