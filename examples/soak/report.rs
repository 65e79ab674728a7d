//! The summary table and the checks that decide the soak's exit status.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::load::{Shared, Tally};
use crate::side::{family, sample, Memory, Peaks, Revocations};
use crate::{Settings, QUOTED_LOG_LINES};

pub(crate) struct Report<'a> {
    pub(crate) s: &'a Settings,
    pub(crate) tally: Tally,
    pub(crate) elapsed: Duration,
    pub(crate) hups: u64,
    pub(crate) revoked: Revocations,
    pub(crate) peaks: Peaks,
    pub(crate) memory: Memory,
    pub(crate) metrics: String,
    pub(crate) healthy: bool,
    pub(crate) exit: Result<(), String>,
    pub(crate) log: String,
    pub(crate) audit_bytes: u64,
    pub(crate) shared: &'a Shared,
}

impl Report<'_> {
    /// Prints the table and the checks; true when every check passed.
    pub(crate) fn print(&self) -> bool {
        let t = &self.tally;
        let m = |name: &str| sample(&self.metrics, name).unwrap_or(0.0);
        let secs = self.elapsed.as_secs_f64();
        let class = |lo: u16, hi: u16| t.statuses.range(lo..hi).map(|(_, n)| n).sum::<u64>();
        let mut rows: Vec<(String, String)> = vec![
            ("duration".into(), format!("{secs:.0} s")),
            ("requests".into(), t.requests.to_string()),
            ("requests/s".into(), format!("{:.0}", t.requests as f64 / secs.max(1.0))),
            ("client connections".into(), t.connections.to_string()),
            ("distinct sessions".into(), format!("{} ({} of the population of {}, {} fresh)", self.shared.distinct(), self.shared.distinct() - self.shared.fresh.load(Ordering::Relaxed), self.s.sessions, self.shared.fresh.load(Ordering::Relaxed))),
        ];
        for (status, n) in &t.statuses {
            rows.push((format!("answers {status}"), n.to_string()));
        }
        rows.push(("unanswered (errors, timeouts)".into(), t.errors.to_string()));
        let hwm = self.memory.hwm_kib.max(self.memory.peak_rss_kib);
        rows.push(("peak RSS (VmHWM)".into(), format!("{:.1} MiB (bound {} MiB)", hwm as f64 / 1024.0, self.s.rss_limit_mib)));
        let trace: Vec<String> = self.memory.trace.iter().map(|(t, kib)| format!("{t}s:{:.0}", *kib as f64 / 1024.0)).collect();
        rows.push(("RSS over the run (MiB)".into(), trace.join(" ")));
        rows.push(("store: sessions peak / cap / at end".into(), format!("{:.0} / {} / {:.0}", self.peaks.sessions, self.s.max_sessions, m("tether_sessions "))));
        let evictions: Vec<String> = self.metrics.lines().filter(|l| !l.starts_with('#') && l.contains("evict")).map(str::to_owned).collect();
        rows.push(("evictions (/metrics)".into(), if evictions.is_empty() { "not exported by this build".into() } else { evictions.join("; ") }));
        for name in ["tether_decisions_total", "tether_step_ups_total", "tether_signals_total"] {
            rows.push((name.into(), family(&self.metrics, name)));
        }
        let reload_ok = m("tether_config_reloads_total{result=\"success\"}");
        let reload_failed = m("tether_config_reloads_total{result=\"failure\"}");
        rows.push(("reloads: SIGHUP sent / succeeded / failed".into(), format!("{} / {reload_ok:.0} / {reload_failed:.0} (generation {:.0})", self.hups, m("tether_config_generation "))));
        rows.push(("admin revocations (of tracked sessions) / failed".into(), format!("{} ({}) / {}", self.revoked.calls, self.revoked.tracked, self.revoked.failures)));
        rows.push(("tether_revocations_total{source=\"admin\"}".into(), format!("{:.0}", m("tether_revocations_total{source=\"admin\"}"))));
        rows.push(("audit lines dropped / log size".into(), format!("{:.0} / {:.1} MiB", m("tether_audit_dropped_total "), self.audit_bytes as f64 / 1_048_576.0)));
        rows.push(("open client connections, peak".into(), format!("{:.0}", self.peaks.connections)));
        rows.push(("answers 2xx / 3xx / 4xx / 5xx".into(), format!("{} / {} / {} / {}", class(200, 300), class(300, 400), class(400, 500), class(500, 600))));

        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        println!("\n== tether soak ==");
        for (k, v) in &rows {
            println!("  {k:<width$}  {v}");
        }

        let bad_lines: Vec<&str> = self.log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked")).collect();
        let store_slack = self.s.max_sessions / 50 + 2 * self.s.conns;
        let checks: Vec<(String, bool)> = vec![
            (format!("every request answered ({} unanswered)", t.errors), t.errors == 0 && t.requests > 0),
            (format!("no 5xx answer ({})", class(500, 600)), class(500, 600) == 0),
            (format!("peak RSS {:.1} MiB <= {} MiB", hwm as f64 / 1024.0, self.s.rss_limit_mib), hwm > 0 && hwm <= self.s.rss_limit_mib * 1024),
            (format!("store within its cap ({:.0} <= {} + {store_slack} in flight)", self.peaks.sessions, self.s.max_sessions), self.peaks.sessions <= (self.s.max_sessions + store_slack) as f64),
            (format!("no WARN/ERROR/panic line in the log ({})", bad_lines.len()), bad_lines.is_empty()),
            (format!("reloads: none failed, at least one per SIGHUP ({reload_ok:.0} >= {})", self.hups), reload_failed == 0.0 && reload_ok >= self.hups as f64 && self.hups > 0),
            (format!("admin API answered every call ({} failed)", self.revoked.failures), self.revoked.failures == 0 && self.revoked.calls > 0),
            ("metrics scraped throughout".into(), self.peaks.failures == 0 && self.peaks.scrapes > 0),
            ("alive at the end (/healthz)".into(), self.healthy),
            (format!("clean exit on SIGTERM{}", self.exit.as_ref().err().map(|e| format!(": {e}")).unwrap_or_default()), self.exit.is_ok()),
        ];
        println!("\n== checks ==");
        for (what, ok) in &checks {
            println!("  {}  {what}", if *ok { "ok  " } else { "FAIL" });
        }
        for q in t.quoted.iter().chain(&self.revoked.quoted) {
            println!("  error: {q}");
        }
        for l in bad_lines.iter().take(QUOTED_LOG_LINES) {
            println!("  log: {l}");
        }
        checks.iter().all(|(_, ok)| *ok)
    }
}
