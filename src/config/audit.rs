//! `[audit]`: where the JSON-lines audit log goes and how much it records.

use std::path::PathBuf;

use super::decode::Section;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Audit {
    pub sink: AuditSink,
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
    Some(Audit { sink, allowed })
}
