//! The `tether` command line. The only place `anyhow` appears.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tether::config::{Config, LogFormat};
use tether::state::SharedError;

/// What each exit code means, for every command; printed by `run --help` and kept in
/// the README's Commands section.
const EXIT_CODES: &str = "\
Exit codes:
  0  success (hunt: at least one session or user touched an indicator)
  1  failure while running: a port that cannot be bound, an unreadable input
     (hunt: nothing matched)
  2  usage error: unknown flag, missing or malformed argument, a bad TETHER_LOG_FORMAT
     (hunt: any error; lookup: an argument that is not an address; replay: unreadable
     trace lines)
  3  invalid config: a bad key or value, or a file it names that cannot be used";

/// An operator error in the invocation itself (clap exits with the same code).
const EXIT_USAGE: u8 = 2;
/// The config file, or a file it names, cannot be used: distinct from a usage error so a
/// deployment gate can tell a broken config from a broken command line.
const EXIT_CONFIG: u8 = 3;
/// `hunt` found nothing, as grep does.
const EXIT_NOTHING_MATCHED: u8 = 1;

#[derive(Parser)]
#[command(name = "tether", version, about = "A reverse proxy that catches stolen session cookies", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy. SIGHUP reloads the config; SIGTERM or SIGINT drains and exits.
    #[command(after_long_help = RUN_HELP)]
    Run {
        /// The TOML config file; reloaded on SIGHUP and when it changes.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Validate a config and every file it names (certificates, keys, databases, lists),
    /// without the network: exit 0 if `run` would start, else 3 and every error with its
    /// key path.
    CheckConfig {
        /// The TOML config file to check.
        path: PathBuf,
    },
    /// What tether knows about each address: ASN, country, category, IoC hits.
    Lookup {
        /// The TOML config file whose [intel] section is used.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// One JSON object per address.
        #[arg(long)]
        json: bool,
        /// IPv4 or IPv6 addresses to look up.
        #[arg(required = true, value_name = "IP")]
        ips: Vec<String>,
    },
    /// Run the decision pipeline offline over JSON-lines traces (or audit logs).
    Replay {
        /// The TOML config file whose policy is replayed.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// JSON output, with a final {"summary": ...} line.
        #[arg(long)]
        json: bool,
        /// Trace files; "-" reads standard input.
        #[arg(required = true, value_name = "TRACE")]
        traces: Vec<PathBuf>,
    },
    /// Sessions and users in audit logs that touched an indicator of compromise. Exits 0
    /// when something matched, 1 when nothing did, 2 on an error.
    Hunt {
        /// IoC file: one IP, CIDR or ASN ("AS60068") per line, '#' comments. Repeatable.
        #[arg(long, required_unless_present = "signal", value_name = "PATH")]
        ioc: Vec<PathBuf>,
        /// Also sessions whose decisions raised this signal (e.g. session_forked). Repeatable.
        #[arg(long, value_name = "NAME")]
        signal: Vec<String>,
        /// Only lines at or after this time (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
        /// Only lines at or before this time (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        until: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Audit logs; "-" reads standard input.
        #[arg(required = true, value_name = "AUDIT")]
        audit: Vec<PathBuf>,
    },
    /// Self-contained demo: tether, a built-in upstream and a generated certificate.
    Demo {
        /// Address of the demo proxy (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Address of the demo's admin listener (/metrics, /healthz).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Play the story, then exit instead of staying up.
        #[arg(long)]
        story_only: bool,
    },
}

const RUN_HELP: &str = "\
Signals:
  SIGHUP          reload the config and every file it names; a failed reload keeps the
                  config in force (logged, and counted in tether_config_reloads_total)
  SIGTERM/SIGINT  stop accepting, drain in-flight requests, exit

Environment:
  TETHER_LOG         log filter, e.g. \"info\" (default) or \"tether=debug,hyper=warn\"
  TETHER_LOG_FORMAT  \"text\" or \"json\"; wins over [log] format in the config

Logs go to stderr; audit lines go to [audit] path (stdout by default).

Exit codes:
  0  stopped by a signal after draining
  1  failure while running, e.g. a port that cannot be bound
  2  usage error, or a bad TETHER_LOG_FORMAT
  3  invalid config: a bad key or value, or a file it names that cannot be used";

/// The config file, or a file it names, cannot be used; every problem, with its key path.
#[derive(Debug)]
struct InvalidConfig {
    path: PathBuf,
    errors: Vec<String>,
}

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} error(s)", self.path.display(), self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidConfig {}

fn invalid<E: std::fmt::Display>(path: &Path, errors: impl IntoIterator<Item = E>) -> anyhow::Error {
    InvalidConfig { path: path.to_path_buf(), errors: errors.into_iter().map(|e| e.to_string()).collect() }.into()
}

/// Reads and validates the config, every error kept for the report.
fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| invalid(path, &e.0))
}

/// A usage error found after parsing (an environment variable, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(&'static str);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Command::CheckConfig { path } => ("check-config", check_config(&path)),
        Command::Lookup { config, json, ips } => ("lookup", lookup(&config, json, &ips)),
        Command::Replay { config, json, traces } => ("replay", replay(&config, json, &traces)),
        Command::Hunt { ioc, signal, since, until, json, audit } => match hunt(&ioc, &signal, since.as_deref(), until.as_deref(), json, &audit) {
            Ok(code) => return code,
            Err(e) => {
                report("hunt", &e);
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Command::Demo { listen, admin, story_only } => ("demo", demo(listen, admin, story_only).map(|()| ExitCode::SUCCESS)),
        Command::Run { config } => ("run", run(config).map(|()| ExitCode::SUCCESS)),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.is::<InvalidConfig>() => {
            eprintln!("tether {name}: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) if e.is::<Usage>() => {
            eprintln!("tether {name}: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            report(name, &e);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error and its causes on one line, each cause once: many errors already
/// quote their source in their own message.
fn report(command: &str, e: &anyhow::Error) {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    eprintln!("tether {command}: {text}");
}

fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let config = tether::app::check(config).map_err(|e| invalid(path, &e.0))?;
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    println!("{}: ok", path.display());
    Ok(ExitCode::SUCCESS)
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = load(&path)?;
    init_tracing(config.log.format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match runtime.block_on(tether::app::run(&path, config)) {
        Err(tether::app::StartError::Snapshot(e)) => Err(invalid(&path, &e.0)),
        // Files the config names that `run` creates: unusable ones are the config's fault.
        Err(tether::app::StartError::Shared(e @ (SharedError::Audit(_) | SharedError::StateDir { .. }))) => Err(invalid(&path, [e])),
        other => Ok(other?),
    }
}

fn lookup(path: &Path, json: bool, ips: &[String]) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let Some(intel_cfg) = config.intel else {
        return Err(invalid(path, ["intel: lookup needs an [intel] section"]));
    };
    let errors = prometheus::IntCounter::new("lookup_errors", "lookup errors")?;
    let intel = tether::intel::Intel::load(&intel_cfg, errors).map_err(|e| invalid(path, &e.0))?;
    let mut code = ExitCode::SUCCESS;
    for raw in ips {
        let Ok(ip) = raw.parse::<std::net::IpAddr>() else {
            eprintln!("{raw}: not an IP address");
            code = ExitCode::from(2);
            continue;
        };
        let report = tether::intel::report::report(&intel, ip);
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.to_text());
        }
    }
    Ok(code)
}

fn replay(path: &Path, json: bool, traces: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use std::io::{BufReader, Write};
    let config = load(path)?;
    let intel = match &config.intel {
        Some(cfg) => Some(
            tether::intel::Intel::load(cfg, prometheus::IntCounter::new("replay_errors", "replay")?).map_err(|e| invalid(path, &e.0))?,
        ),
        None => None,
    };
    let detector = tether::detector::Detector::build(&config, &tether::offline::replay::replay_key())?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut replayer = tether::offline::replay::Replayer::new(&detector, intel.as_ref(), config.session.limits);
    for trace in traces {
        let reader: Box<dyn std::io::BufRead> = if trace.as_os_str() == "-" {
            Box::new(BufReader::new(std::io::stdin()))
        } else {
            let file = std::fs::File::open(trace).map_err(|e| anyhow::anyhow!("{}: {e}", trace.display()))?;
            Box::new(BufReader::new(file))
        };
        let mut write_error = None;
        runtime.block_on(tether::offline::replay::replay_reader(&mut replayer, reader, |o| {
            let line = if json { serde_json::to_string(o).unwrap_or_default() } else { o.to_text() };
            if let Err(e) = writeln!(out, "{line}") {
                write_error = Some(e);
            }
        }))?;
        if let Some(e) = write_error {
            return Err(e.into());
        }
    }
    let summary = &replayer.summary;
    if json {
        writeln!(out, "{}", serde_json::json!({ "summary": summary }))?;
    } else {
        eprintln!(
            "summary: allow {} · step_up {} · block {} · revoke {} · unjudged {} · duplicates {} · errors {}",
            summary.allow, summary.step_up, summary.block, summary.revoke, summary.unjudged, summary.duplicates, summary.errors
        );
    }
    out.flush()?;
    Ok(if summary.errors > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

fn hunt(ioc: &[PathBuf], signals: &[String], since: Option<&str>, until: Option<&str>, json: bool, audit: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let signals = signals
        .iter()
        .map(|s| tether::policy::Signal::parse(s).ok_or_else(|| anyhow::anyhow!("--signal {s}: not a signal tether raises")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut hunt = tether::offline::hunt::Hunt::new(ioc, &signals, since, until)?;
    for path in audit {
        if path.as_os_str() == "-" {
            hunt.read(std::io::stdin().lock())?;
        } else {
            let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            hunt.read(std::io::BufReader::new(file))?;
        }
    }
    let report = hunt.finish();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    let matched = report.lines_matched > 0 || !report.sessions.is_empty() || !report.users.is_empty();
    Ok(if matched { ExitCode::SUCCESS } else { ExitCode::from(EXIT_NOTHING_MATCHED) })
}

fn demo(listen: SocketAddr, admin: SocketAddr, story_only: bool) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("tether-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let addrs = tether::demo::DemoAddrs { proxy: listen, admin };
        let demo = tether::demo::start(&dir, &addrs).await?;
        let port = demo.running.proxy_addr.port();
        println!("tether demo: a session born at home, stolen, replayed; the audit log is {}", dir.join("audit.jsonl").display());
        let mut out = std::io::stdout();
        let statuses = demo.story(&mut out).await?;
        println!("\nStatuses: {statuses:?}");
        if story_only {
            demo.running.shutdown().await;
            return anyhow::Ok(());
        }
        let cert = dir.join("demo.crt");
        println!("\ntether is running. Try:");
        println!("  curl --cacert {} https://localhost:{port}/console -H 'cookie: session=mine'", cert.display());
        println!("  tether lookup --config {} 178.249.214.10 127.0.2.1", dir.join("tether.toml").display());
        println!("  curl http://{}/metrics", demo.running.admin_addr);
        println!("  tail -f {}", dir.join("audit.jsonl").display());
        println!("Ctrl-C stops it.");
        let _ = tokio::signal::ctrl_c().await;
        demo.running.shutdown().await;
        anyhow::Ok(())
    });
    if story_only {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Logs to stderr, as text or JSON lines: `TETHER_LOG_FORMAT` wins over `[log] format`
/// (an image can fix the format whatever config it is given); `TETHER_LOG` filters.
fn init_tracing(configured: LogFormat) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let format = match std::env::var("TETHER_LOG_FORMAT") {
        Ok(v) if !v.is_empty() => v.parse().map_err(|()| Usage("TETHER_LOG_FORMAT must be \"text\" or \"json\""))?,
        _ => configured,
    };
    let filter = EnvFilter::try_from_env("TETHER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // Field names are the JSON layer's: timestamp, level, target, and fields (which
        // holds message). Spans are left out: tether logs what it needs as fields.
        LogFormat::Json => builder.json().with_current_span(false).with_span_list(false).init(),
        LogFormat::Text => {
            // Colour only on a terminal: log files and journald get plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).init()
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_argument_has_help() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        for sub in cli.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
            for arg in sub.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
                assert!(arg.get_help().is_some(), "{} {} has no help", sub.get_name(), arg.get_id());
            }
        }
    }
}
