//! `[intel]`: the network intelligence databases and the operator's own lists
//! (`[intel.networks]`, `[intel.allow]`, IoC files). Optional: without it no address is
//! looked up.

use crate::intel::lists::{Entry, MAX_IOC_FILES};
use crate::intel::{Category, IntelConfig, IocFile};

use super::decode::Section;
use super::Problem;

/// Bound on cached intel lookups: ~100 bytes each, so the default costs a few MiB.
const DEFAULT_INTEL_CACHE: usize = 65_536;

pub(super) fn read(s: &Section<'_>) -> Option<Option<IntelConfig>> {
    if !s.is_present() {
        return Some(None);
    }
    let asn_db = s.optional_file("asn_db");
    if !s.has("asn_db") {
        s.problem("asn_db", Problem::Missing);
    }
    let city_db = s.optional_file("city_db");
    let anonymous_ip_db = s.optional_file("anonymous_ip_db");
    let ioc_files = read_ioc_files(s);
    let catalogue = s.boolean("catalogue").unwrap_or(true);
    let cache_entries = s.integer("cache_entries", 1, 10_000_000).map_or(DEFAULT_INTEL_CACHE, |n| n as usize);

    let networks_section = s.sub("networks");
    let mut networks = Vec::new();
    for cat in [Category::Vpn, Category::Hosting, Category::Tor, Category::Proxy] {
        read_entries(&networks_section, cat, &mut networks);
    }
    networks_section.finish();

    let allow_section = s.sub("allow");
    let mut allow = Vec::new();
    read_entries(&allow_section, Category::Corporate, &mut allow);
    read_entries(&allow_section, Category::PrivacyRelay, &mut allow);
    let mut privacy_relay_files = Vec::new();
    for (i, f) in allow_section.string_array("privacy_relay_files").unwrap_or_default().into_iter().enumerate() {
        privacy_relay_files.extend(allow_section.resolve_file(&format!("privacy_relay_files[{i}]"), f));
    }
    allow_section.finish();
    Some(Some(IntelConfig {
        asn_db: asn_db.ok()??,
        city_db: city_db.ok()?,
        anonymous_ip_db: anonymous_ip_db.ok()?,
        ioc_files,
        catalogue,
        networks,
        allow,
        privacy_relay_files,
        cache_entries,
    }))
}

/// `ioc_files = ["path", { path, label }, …]`; the label defaults to the file's stem.
fn read_ioc_files(s: &Section<'_>) -> Vec<IocFile> {
    let mut ioc_files = Vec::new();
    for (i, item) in s.array("ioc_files").map(|a| a.as_slice()).unwrap_or_default().iter().enumerate() {
        let key = format!("ioc_files[{i}]");
        let (path, label) = match item {
            toml::Value::String(p) => (Some(p.as_str()), None),
            toml::Value::Table(t) => {
                if let Some(k) = t.keys().find(|k| *k != "path" && *k != "label") {
                    s.problem(&format!("{key}.{k}"), Problem::UnknownKey);
                }
                (t.get("path").and_then(|v| v.as_str()), t.get("label").and_then(|v| v.as_str()))
            }
            other => {
                s.problem(&key, Problem::WrongType { expected: "a path or { path, label }", found: other.type_str() });
                continue;
            }
        };
        let Some(path) = path else {
            s.problem(&format!("{key}.path"), Problem::Missing);
            continue;
        };
        if let Some(p) = s.resolve_file(&key, path) {
            let label = label.map(str::to_owned).unwrap_or_else(|| {
                p.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.to_owned())
            });
            ioc_files.push(IocFile { path: p, label });
        }
    }
    if ioc_files.len() > MAX_IOC_FILES {
        s.problem("ioc_files", Problem::Conflict { reason: "at most 64 IoC files" });
    }
    ioc_files
}

/// Reads `key = ["AS…", "CIDR", "IP", …]` for one category; a bad entry is reported and
/// left out.
fn read_entries(s: &Section<'_>, category: Category, out: &mut Vec<(Category, Entry)>) {
    let key = category.as_str();
    for (i, text) in s.string_array(key).unwrap_or_default().into_iter().enumerate() {
        match Entry::parse(text) {
            Some(e) => out.push((category, e)),
            None => s.problem(&format!("{key}[{i}]"), Problem::Invalid { expected: "an IP address, CIDR or ASN (AS…)", found: text.to_owned() }),
        }
    }
}
