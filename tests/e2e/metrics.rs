//! The metrics a platform team scrapes first: build, process, upstream latency, the
//! listener certificate's expiry and decisions by named route, read from a live scrape
//! (and linted by `promtool check metrics` when it is installed).

use bytes::Bytes;
use http_body_util::Full;

use crate::support::*;

const ROUTES: &str = "[[policy.routes]]\nname = \"admin-write\"\npath_prefix = \"/admin\"\nsensitivity = 2.0\n\
                      [[policy.routes]]\npath_prefix = \"/reports\"\n";

fn with_session(t: &Tether, path: &str) -> http::Request<Full<Bytes>> {
    get(t, path).header("cookie", "session=metrics-e2e").header("user-agent", "curl/8.5.0").body(Full::new(Bytes::new())).unwrap()
}

/// The value of the one series of an unlabelled family.
fn sample(text: &str, family: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(family).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{family} not in the scrape"))
}

#[tokio::test]
async fn a_live_scrape_carries_build_process_upstream_certificate_and_route_metrics() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", &detector_sections("monitor", ROUTES)).await;

    // Before any request: the build, the process, every route label at zero, the certificate.
    let text = t.metrics().await;
    let build = format!("tether_build_info{{commit=\"{}\",version=\"{}\"}} 1", tether::metrics::COMMIT, env!("CARGO_PKG_VERSION"));
    assert!(text.lines().any(|l| l == build), "{build}");
    for family in ["process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
        assert!(sample(&text, family) > 0.0, "{family}");
    }
    for route in ["admin-write", "unnamed", "none"] {
        let line = format!("tether_route_decisions_total{{action=\"allow\",mode=\"monitor\",route=\"{route}\"}} 0");
        assert!(text.lines().any(|l| l == line), "{line}");
    }
    let not_after = tether::net::tls::not_after(&t.certs.der).expect("the test certificate's notAfter");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as f64;
    let left = sample(&text, "tether_tls_certificate_expiry_seconds");
    assert!((left - (not_after as f64 - now)).abs() < 60.0, "{left} vs notAfter {not_after}");
    assert_eq!(sample(&text, "tether_upstream_response_duration_seconds_count"), 0.0);

    for path in ["/admin/users", "/reports/q3", "/elsewhere", "/admin/groups"] {
        let (parts, _) = h1(&t, with_session(&t, path)).await;
        assert_eq!(parts.status, 200, "{path}");
    }
    let text = t.metrics().await;
    let decided = |route: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("tether_route_decisions_total{") && l.contains(&format!("route=\"{route}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!((decided("admin-write"), decided("unnamed"), decided("none")), (2.0, 1.0, 1.0));
    // The contract's family keeps its labels: no route on it.
    assert!(text.lines().filter(|l| l.starts_with("tether_decisions_total{")).all(|l| !l.contains("route=")));
    // No label value is a path.
    assert!(!text.contains("/admin") && !text.contains("/reports"), "a path leaked into a label");
    assert_eq!(sample(&text, "tether_upstream_response_duration_seconds_count"), 4.0);
    let upstream_sum = sample(&text, "tether_upstream_response_duration_seconds_sum");
    assert!(upstream_sum > 0.0);
    let request_sum: f64 = text
        .lines()
        .filter(|l| l.starts_with("tether_request_duration_seconds_sum{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(upstream_sum <= request_sum, "upstream time {upstream_sum} is part of the request time {request_sum}");

    promtool_check(&text);
}

#[tokio::test]
async fn the_certificate_gauge_follows_a_reloaded_certificate_and_is_absent_without_tls() {
    let up = spawn_upstream(None).await;
    let certs = certs();
    let dir = certs.dir.path().to_path_buf();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n"
    );
    let path = dir.join("tether.toml");
    std::fs::write(&path, &text).unwrap();
    let t = start_text(&text, certs).await;
    let before = sample(&t.metrics().await, "tether_tls_certificate_expiry_seconds");

    // A renewed certificate that expires in about 30 days.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let in_30_days = time_of(now + 30 * 86_400);
    params.not_after = rcgen::date_time_ymd(in_30_days.0, in_30_days.1, in_30_days.2);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    t.running.reload(&path).unwrap();
    let after = sample(&t.metrics().await, "tether_tls_certificate_expiry_seconds");
    assert!(after < before, "{after} should be below {before}");
    assert!((29.0 * 86_400.0..=31.0 * 86_400.0).contains(&after), "{after}");

    // A plaintext listener has no certificate, so no series (not a zero that would alert).
    let plain = start_text(
        &format!("[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n"),
        crate::support::certs(),
    )
    .await;
    assert!(!plain.metrics().await.contains("tether_tls_certificate_expiry_seconds "));
}

/// (year, month, day) of a Unix time, for rcgen's date constructor.
fn time_of(unix: i64) -> (i32, u8, u8) {
    // Civil-from-days (the inverse of the proleptic Gregorian day count).
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

/// `promtool check metrics` over a scrape, when promtool is installed (the deploy
/// validation installs it; a machine without it skips this part, saying so).
fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("promtool not installed: `promtool check metrics` skipped");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
