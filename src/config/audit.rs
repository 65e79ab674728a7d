//! `[audit]`: where the JSON-lines audit log goes and how much it records.

use std::path::PathBuf;

use super::decode::Section;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Stdout,
    File(PathBuf),
}

crate::labels::labels! {
    /// How each audit line is shaped.
    pub enum AuditFormat {
        /// tether's own flat fields (the contract's).
        Json = "json",
        /// Elastic Common Schema: `@timestamp`, `event.*`, `source.*`, `user.name`,
        /// `user_agent.original`, `tls.client.ja4`, and tether's own under `tether.*`.
        Ecs = "ecs",
    }
}

#[derive(Debug, Clone)]
pub struct Audit {
    pub sink: AuditSink,
    pub format: AuditFormat,
    /// Record allowed decisions too (bindings, new addresses and every non-allow
    /// decision are always recorded).
    pub allowed: bool,
}

pub(super) fn read(s: &Section<'_>) -> Option<Audit> {
    let sink = match s.string("path") {
        None | Some("-") => AuditSink::Stdout,
        Some(p) => AuditSink::File(s.resolve(p)),
    };
    let allowed = s.boolean("allowed").unwrap_or(false);
    let format = match s.string("format") {
        None => Some(AuditFormat::Json),
        Some(v) => AuditFormat::parse(v).or_else(|| {
            s.problem("format", super::Problem::Invalid { expected: "\"json\" or \"ecs\"", found: v.to_owned() });
            None
        }),
    };
    Some(Audit { sink, format: format?, allowed })
}
