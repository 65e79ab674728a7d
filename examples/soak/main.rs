//! The soak: runs a built `tether run` for minutes against a few hundred thousand
//! sessions and checks that it stays up, answers every request and stays bounded.
//!
//! `scripts/soak.sh` builds the binaries and calls this with a work directory; the
//! README's "Soak" section says what runs and what is asserted. The generator owns
//! everything it talks to: the certificate, the config, a minimal upstream in this
//! process, and the tether child. Everything listens and connects on loopback only, and
//! every loop stops at the deadline or at its request cap, whichever comes first.

mod load;
mod report;
mod setup;
mod side;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use load::{worker, Shared, Tally};
use report::Report;
use setup::{prepare, spawn_upstream, stop_child, wait_listening, write_config};
use side::{reload_loop, revoke_loop, sample_rss, scrape_metrics, Admin};

/// A request (connect, handshake or answer) slower than this counts as unanswered. The
/// proxy's own waits are shorter, so a timeout here means something wedged.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests one worker sends at most: the run ends at its deadline long before.
const MAX_REQUESTS_PER_WORKER: u64 = 50_000_000;
/// Errors quoted in the report; the rest are only counted.
const QUOTED_ERRORS: usize = 10;
/// Log lines quoted when the log check fails.
const QUOTED_LOG_LINES: usize = 20;
/// The fresh-authentication route: every session without a recent login steps up here.
const FRESH_ROUTE: &str = "/admin/tokens";
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: no runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(soak(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

/// The knobs, from the environment (see `scripts/soak.sh`).
#[derive(Debug, Clone)]
struct Settings {
    bin: PathBuf,
    dir: PathBuf,
    secs: u64,
    sessions: u64,
    conns: u64,
    rss_limit_mib: u64,
    reload_every: Duration,
    /// The store's cap: a quarter of the population, so the store is full for most of
    /// the run and evicts.
    max_sessions: u64,
}

fn env_num(name: &str, default: u64, min: u64, max: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("{name} must be an integer between {min} and {max}, found {v:?}")),
        },
    }
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let path = |name: &str| std::env::var_os(name).map(PathBuf::from).ok_or_else(|| format!("{name} is not set"));
        let sessions = env_num("SOAK_SESSIONS", 300_000, 1_000, 10_000_000)?;
        Ok(Settings {
            bin: path("TETHER_BIN")?,
            dir: path("SOAK_DIR")?,
            secs: env_num("SOAK_SECS", 300, 10, 3_600)?,
            sessions,
            conns: env_num("SOAK_CONNS", 40, 4, 1_000)?,
            rss_limit_mib: env_num("SOAK_RSS_MIB", 256, 16, 65_536)?,
            reload_every: Duration::from_secs(env_num("SOAK_RELOAD_SECS", 3, 1, 600)?),
            max_sessions: (sessions / 4).max(1_000),
        })
    }
}

/// A small fast generator (SplitMix64): the load needs spread, not secrecy.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let mut b = [0u8; 8];
        // A fixed seed only makes the run repeatable; it is not a failure.
        let _ = getrandom::fill(&mut b);
        Rng(u64::from_le_bytes(b))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}


async fn soak(s: Settings) -> Result<bool, String> {
    let files = prepare(&s).await?;
    let upstream = spawn_upstream().await.map_err(|e| format!("upstream: {e}"))?;
    write_config(&s, &files, upstream, 0)?;
    let log_path = s.dir.join("tether.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut child = Command::new(&s.bin)
        .arg("run")
        .arg("--config")
        .arg(&files.config)
        .env("TETHER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", s.bin.display()))?;
    let pid = child.id();
    // For the calling script, to stop tether if this generator itself is killed.
    let _ = std::fs::write(s.dir.join("tether.pid"), pid.to_string());
    let addrs = match wait_listening(&log_path, &mut child).await {
        Ok(a) => a,
        Err(e) => {
            let _ = child.kill();
            return Err(e);
        }
    };
    let admin = Admin { addr: addrs.admin, token: files.token.clone() };
    eprintln!(
        "soak: tether pid {pid} on {} (admin {}), {} s, {} sessions, store cap {}, {} connections",
        addrs.proxy, addrs.admin, s.secs, s.sessions, s.max_sessions, s.conns
    );

    let shared = Arc::new(Shared::new(&s, &files)?);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(s.secs);
    let stop = Arc::new(AtomicBool::new(false));

    let rss = tokio::spawn(sample_rss(pid, s.secs, stop.clone()));
    let scrapes = tokio::spawn(scrape_metrics(admin.clone(), stop.clone()));
    let reloads = tokio::spawn(reload_loop(s.clone(), files.clone(), upstream, pid, stop.clone()));
    let revokes = tokio::spawn(revoke_loop(admin.clone(), shared.clone(), stop.clone()));
    let mut workers = Vec::new();
    for i in 0..s.conns {
        workers.push(tokio::spawn(worker(i, addrs.proxy, shared.clone(), start, deadline)));
    }
    let mut tally = Tally::default();
    for w in workers {
        match w.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(format!("worker task: {e}")),
        }
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let hups = reloads.await.unwrap_or(0);
    let revoked = revokes.await.unwrap_or_default();
    let peaks = scrapes.await.unwrap_or_default();
    let final_metrics = admin.get("/metrics").await.map(|(_, b)| b).unwrap_or_default();
    let healthy = matches!(admin.get("/healthz").await, Ok((200, _)));
    let memory = rss.await.unwrap_or_default();

    let exit = stop_child(&mut child, pid).await;
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let audit_bytes = std::fs::metadata(s.dir.join("audit.jsonl")).map_or(0, |m| m.len());

    let report = Report { s: &s, tally, elapsed, hups, revoked, peaks, memory, metrics: final_metrics, healthy, exit, log: log_text, audit_bytes, shared: &shared };
    Ok(report.print())
}
