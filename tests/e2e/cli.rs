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
