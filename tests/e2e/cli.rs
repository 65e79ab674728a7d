//! The `tether` binary's command line.

use std::process::Command;

fn tether() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

#[test]
fn check_config_names_every_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[listen]\naddr = \"nowhere\"\ntls_cert = \"missing.crt\"\ntrusted_proxies = [\"10.0.0.0/33\"]\n[upstream]\nurl = 5\nretries = 3\n[limits]\nmax_headers = -1\n[polcy]\nmode = \"enforce\"\n",
    )
    .unwrap();
    let out = tether().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["listen.addr", "listen.tls_cert", "listen.tls_key", "listen.trusted_proxies[0]", "upstream.url", "upstream.retries", "limits.max_headers", "polcy"] {
        assert!(stderr.contains(key), "{key} not named in:\n{stderr}");
    }
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, "[listen]\naddr = \"127.0.0.1:8443\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n").unwrap();
    let out = tether().arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn run_refuses_a_broken_config_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[listen]\naddr = 1\n").unwrap();
    let out = tether().args(["run", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen.addr"));
}

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("GeoLite-fixtures")
}

#[test]
fn lookup_json_matches_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("iocs.txt"), "# incident\n127.0.1.10\nAS39351\n").unwrap();
    let path = dir.path().join("tether.toml");
    let f = fixtures();
    std::fs::write(
        &path,
        format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[intel]\nasn_db = \"{}\"\ncity_db = \"{}\"\nioc_files = [\"iocs.txt\"]\n[intel.allow]\nprivacy_relay = [\"198.51.100.0/25\"]\n",
            f.join("GeoLite2-ASN.mmdb").display(),
            f.join("GeoLite2-City.mmdb").display()
        ),
    )
    .unwrap();
    let out = tether()
        .args(["lookup", "--json", "--config"])
        .arg(&path)
        .args(["127.0.1.10", "::ffff:127.0.2.1", "192.0.2.1", "198.51.100.7", "2001:db8:1::1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        for key in ["ip", "asn", "asn_org", "country", "category", "anonymizer", "ioc"] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
        let cat = l["category"].as_str().unwrap();
        assert!(["vpn", "hosting", "tor", "proxy", "privacy_relay", "corporate", "other"].contains(&cat));
        assert_eq!(l["anonymizer"].as_bool().unwrap(), ["vpn", "hosting", "tor", "proxy"].contains(&cat));
    }
    let datacamp = &lines[0];
    assert_eq!(datacamp["asn"], 60068);
    assert_eq!(datacamp["asn_org"], "Datacamp Limited");
    assert_eq!(datacamp["category"], "hosting");
    assert_eq!(datacamp["ioc"], serde_json::json!(["127.0.1.10"]));
    let mullvad = &lines[1];
    assert_eq!(mullvad["ip"], "127.0.2.1");
    assert_eq!(mullvad["category"], "vpn");
    assert_eq!(mullvad["ioc"], serde_json::json!(["AS39351"]));
    let home = &lines[2];
    assert_eq!((home["country"].as_str(), home["category"].as_str()), (Some("SE"), Some("other")));
    assert_eq!(home["ioc"], serde_json::json!([]));
    assert_eq!(lines[3]["category"], "privacy_relay");
    assert_eq!(lines[3]["anonymizer"], false);
    assert_eq!(lines[4]["asn"], 64496);
}

#[test]
fn lookup_refuses_a_bad_address_and_a_config_without_intel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n").unwrap();
    let out = tether().args(["lookup", "--config"]).arg(&path).arg("192.0.2.1").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[intel]"));
}

#[test]
fn demo_plays_its_story_to_completion() {
    let out = tether().args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--story-only"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // Home: allowed; VPN: redirected to the IdP; curl from a datacenter: RFC 9470;
    // the IoC address: blocked; home again: allowed.
    assert!(text.contains("Statuses: [200, 303, 401, 403, 200]"), "{text}");
}

#[test]
fn run_help_names_signals_environment_and_exit_codes() {
    let out = tether().args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["SIGHUP", "TETHER_LOG ", "TETHER_LOG_FORMAT", "Exit codes", "3  invalid config"] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}

#[test]
fn hunt_exit_code_says_matched_nothing_matched_or_error() {
    let dir = tempfile::tempdir().unwrap();
    let ioc = dir.path().join("iocs.txt");
    std::fs::write(&ioc, "178.249.214.10\n").unwrap();
    let audit = dir.path().join("audit.jsonl");
    std::fs::write(
        &audit,
        concat!(
            r#"{"ts":"2022-12-20T10:00:00Z","event":"decision","session":"s1","user":"eve","ip":"178.249.214.10","action":"allow"}"#,
            "\n",
            r#"{"ts":"2022-12-21T10:00:00Z","event":"decision","session":"s2","user":"ann","ip":"192.0.2.1","action":"allow"}"#,
            "\n"
        ),
    )
    .unwrap();
    let hunt = |extra: &[&str]| tether().arg("hunt").arg("--ioc").arg(&ioc).args(extra).arg(&audit).output().unwrap().status.code();
    assert_eq!(hunt(&[]), Some(0), "a session touched an indicator");
    assert_eq!(hunt(&["--until", "2022-12-01T00:00:00Z"]), Some(1), "nothing in the window");
    assert_eq!(hunt(&["--since", "yesterday"]), Some(2), "a bad time is an error");
    let out = tether().arg("hunt").arg("--ioc").arg(dir.path().join("absent.txt")).arg(&audit).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unreadable IoC file is an error");
}
