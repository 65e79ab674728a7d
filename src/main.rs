//! The `tether` command line. The only place `anyhow` appears.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tether::config::Config;

#[derive(Parser)]
#[command(name = "tether", version, about = "A reverse proxy that catches stolen session cookies")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy. SIGTERM or SIGINT drains and exits.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 if valid, else every error with its key path.
    CheckConfig { path: PathBuf },
    /// What tether knows about each address: ASN, country, category, IoC hits.
    Lookup {
        #[arg(long)]
        config: PathBuf,
        /// One JSON object per address.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        ips: Vec<String>,
    },
    /// Run the decision pipeline offline over JSON-lines traces (or audit logs).
    Replay {
        #[arg(long)]
        config: PathBuf,
        /// JSON output, with a final {"summary": ...} line.
        #[arg(long)]
        json: bool,
        /// Trace files; "-" reads standard input.
        #[arg(required = true)]
        traces: Vec<PathBuf>,
    },
    /// Sessions and users in audit logs that touched an indicator of compromise.
    Hunt {
        /// IoC file: one IP, CIDR or ASN ("AS60068") per line, '#' comments. Repeatable.
        #[arg(long, required = true)]
        ioc: Vec<PathBuf>,
        /// Only lines at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only lines at or before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Audit logs; "-" reads standard input.
        #[arg(required = true)]
        audit: Vec<PathBuf>,
    },
    /// Self-contained demo: tether, a built-in upstream and a generated certificate.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Play the story, then exit instead of staying up.
        #[arg(long)]
        story_only: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { path } => match Config::load(&path) {
            Ok(config) => {
                for w in config.warnings() {
                    eprintln!("warning: {w}");
                }
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{}: {} error(s)", path.display(), errors.0.len());
                for e in &errors.0 {
                    eprintln!("  {e}");
                }
                ExitCode::from(2)
            }
        },
        Command::Lookup { config, json, ips } => match lookup(&config, json, &ips) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("tether lookup: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Replay { config, json, traces } => match replay(&config, json, &traces) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("tether replay: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Hunt { ioc, since, until, json, audit } => match hunt(&ioc, since.as_deref(), until.as_deref(), json, &audit) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("tether hunt: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Demo { listen, admin, story_only } => match demo(listen, admin, story_only) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tether demo: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tether: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    init_tracing();
    let config = Config::load(&path).map_err(|e| anyhow::anyhow!("invalid config {}:\n{e}", path.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(tether::app::run(&path, config))?;
    Ok(())
}

fn lookup(path: &std::path::Path, json: bool, ips: &[String]) -> anyhow::Result<ExitCode> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("invalid config {}:\n{e}", path.display()))?;
    let intel_cfg = config.intel.ok_or_else(|| anyhow::anyhow!("{} has no [intel] section", path.display()))?;
    let errors = prometheus::IntCounter::new("lookup_errors", "lookup errors")?;
    let intel = tether::intel::Intel::load(&intel_cfg, errors)?;
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

fn replay(path: &std::path::Path, json: bool, traces: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use std::io::{BufReader, Write};
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("invalid config {}:\n{e}", path.display()))?;
    let intel = match &config.intel {
        Some(cfg) => Some(tether::intel::Intel::load(cfg, prometheus::IntCounter::new("replay_errors", "replay")?)?),
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

fn hunt(ioc: &[PathBuf], since: Option<&str>, until: Option<&str>, json: bool, audit: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut hunt = tether::offline::hunt::Hunt::new(ioc, since, until)?;
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
    Ok(ExitCode::SUCCESS)
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

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TETHER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}
