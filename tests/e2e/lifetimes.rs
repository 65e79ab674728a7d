//! Lifetimes under load: sessions that come back after their idle or absolute lifetime,
//! through `replay` (whose clock is the trace's) and through the live proxy.

use std::time::Duration;

use super::support::*;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";

/// A trace line for `session` at `ts`.
fn line(ts: &str, session: u32) -> String {
    format!(
        r#"{{"ts":"{ts}","ip":"192.0.2.10","method":"GET","path":"/","headers":{{"user-agent":"{CHROME}","cookie":"session=s{session}","accept":"text/html"}}}}"#
    )
}

#[tokio::test]
async fn replay_finishes_when_sessions_return_after_their_lifetimes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tether.toml");
    std::fs::write(&config, format!("[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n{}", detector_sections("enforce", ""))).unwrap();
    // Fifty sessions born on day 1; each comes back two days later (idle lifetime passed,
    // no sweep in replay), then one is used continuously across its absolute lifetime.
    let mut lines = Vec::new();
    for s in 0..50 {
        lines.push(line("2026-01-01T09:00:00Z", s));
    }
    for s in 0..50 {
        lines.push(line("2026-01-03T09:00:00Z", s));
    }
    for day in 3..=9 {
        for hour in [8, 14, 20] {
            lines.push(line(&format!("2026-01-{day:02}T{hour:02}:00:00Z"), 0));
        }
    }
    let n = lines.len();
    let trace = dir.path().join("trace.jsonl");
    std::fs::write(&trace, lines.join("\n")).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["replay", "--json", "--config"])
        .arg(&config)
        .arg(&trace)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("replay wedged on a returning session").unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let decisions: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(decisions.len(), n + 1, "one line per input and a summary");
    // Back after the idle lifetime: a new binding, at home, allowed.
    assert!(decisions[50..100].iter().all(|d| d["action"] == "allow"), "{:?}", &decisions[50..100]);
}
