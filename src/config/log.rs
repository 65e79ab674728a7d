//! `[log]`: tether's own diagnostic log on stderr (never the audit log, which has its own
//! `[audit]` sink): its format, and whether every request gets an access line.

use super::decode::Section;

/// How log lines are written. `TETHER_LOG_FORMAT` in the environment wins over the file,
/// so a container image can fix the format whatever config it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Log {
    /// Read at start only: the log is set up once per process.
    pub format: LogFormat,
    /// One `access` line per answered request: method, bounded path, status, duration,
    /// decision. Reloadable.
    pub access: bool,
}

pub(super) fn read(s: &Section<'_>) -> Option<Log> {
    let format = match s.string("format") {
        None => Some(LogFormat::Text),
        Some(v) => s.parse_value("format", v, "\"text\" or \"json\""),
    };
    let access = s.boolean("access").unwrap_or(false);
    Some(Log { format: format?, access })
}
