//! Operator lists: networks by category, allowlists, and IoC files.
//!
//! An entry is an IP address, a CIDR, or an ASN written `AS60068`. IoC files hold one
//! entry per line; `#` starts a comment. A bad line is an error naming the file and line,
//! so a typo can never silently drop an indicator.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::prefix::{parse_net, PrefixMap};
use super::types::{Asn, Category};

/// IoC files are tracked in a 64-bit mask per address.
pub const MAX_IOC_FILES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Net(IpNet),
    Asn(Asn),
}

impl Entry {
    pub fn parse(s: &str) -> Option<Entry> {
        let s = s.trim();
        if s.starts_with("AS") || s.starts_with("as") {
            return s.parse().ok().map(Entry::Asn);
        }
        parse_net(s).map(Entry::Net)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: not an IP address, CIDR or ASN: {text:?}", path.display())]
    BadEntry { path: PathBuf, line: usize, text: String },
    #[error("at most {MAX_IOC_FILES} IoC files are supported")]
    TooManyFiles,
}

/// Networks by CIDR and by ASN, each with a value; CIDR matches win over ASN matches.
#[derive(Debug, Clone)]
pub struct NetList<V> {
    nets: PrefixMap<V>,
    asns: HashMap<Asn, V>,
}

impl<V> Default for NetList<V> {
    fn default() -> Self {
        NetList { nets: PrefixMap::default(), asns: HashMap::new() }
    }
}

impl<V: Copy> NetList<V> {
    pub fn insert(&mut self, entry: Entry, value: V) {
        match entry {
            Entry::Net(net) => self.nets.insert(net, value),
            Entry::Asn(asn) => {
                self.asns.entry(asn).or_insert(value);
            }
        }
    }

    pub fn get(&self, ip: IpAddr, asn: Option<Asn>) -> Option<V> {
        self.nets.longest(ip).copied().or_else(|| asn.and_then(|a| self.asns.get(&a).copied()))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.asns.is_empty()
    }
}

impl ListError {
    /// The file the error is about, when it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ListError::Read { path, .. } | ListError::BadEntry { path, .. } => Some(path),
            ListError::TooManyFiles => None,
        }
    }
}

/// Category lists built from config entries.
pub fn category_list(entries: &[(Category, Entry)]) -> NetList<Category> {
    let mut list = NetList::default();
    for (category, entry) in entries {
        list.insert(*entry, *category);
    }
    list
}

/// Reads a privacy-relay egress file: the first comma-separated column of each line is a
/// CIDR (the format Apple publishes for iCloud Private Relay).
pub fn read_relay_file(path: &Path) -> Result<Vec<IpNet>, ListError> {
    let text = std::fs::read_to_string(path).map_err(|source| ListError::Read { path: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let first = line.split(',').next().unwrap_or("").trim();
        match parse_net(first) {
            Some(net) => out.push(net),
            None => return Err(ListError::BadEntry { path: path.to_path_buf(), line: i + 1, text: first.to_owned() }),
        }
    }
    Ok(out)
}

/// One IoC file as configured.
#[derive(Debug, Clone)]
pub struct IocFile {
    pub path: PathBuf,
    pub label: String,
}

/// One matching indicator, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IocMatch {
    pub label: String,
    pub entry: String,
}

#[derive(Debug, Clone, Copy)]
struct IocRef {
    file: u8,
    entry: u32,
}

/// Every indicator from every IoC file.
#[derive(Debug, Default)]
pub struct IocSet {
    labels: Vec<String>,
    entries: Vec<String>,
    nets: PrefixMap<Vec<IocRef>>,
    asns: HashMap<Asn, Vec<IocRef>>,
}

/// Which IoC files an address matched, as a bit per file; zero means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IocHits(pub u64);

impl IocHits {
    pub fn any(self) -> bool {
        self.0 != 0
    }
}

impl IocSet {
    pub fn load(files: &[IocFile]) -> Result<IocSet, ListError> {
        if files.len() > MAX_IOC_FILES {
            return Err(ListError::TooManyFiles);
        }
        let mut set = IocSet::default();
        let mut nets: Vec<(IpNet, IocRef)> = Vec::new();
        for (fi, file) in files.iter().enumerate() {
            let text = std::fs::read_to_string(&file.path).map_err(|source| ListError::Read { path: file.path.clone(), source })?;
            set.labels.push(file.label.clone());
            for (li, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let Some(entry) = Entry::parse(line) else {
                    return Err(ListError::BadEntry { path: file.path.clone(), line: li + 1, text: line.to_owned() });
                };
                // invariant: fi < MAX_IOC_FILES (64) fits in u8.
                let r = IocRef { file: fi as u8, entry: set.entries.len() as u32 };
                set.entries.push(line.to_owned());
                match entry {
                    Entry::Net(net) => nets.push((net, r)),
                    Entry::Asn(asn) => set.asns.entry(asn).or_default().push(r),
                }
            }
        }
        // Group refs per prefix so one probe yields every indicator for it.
        let mut grouped: HashMap<IpNet, Vec<IocRef>> = HashMap::new();
        for (net, r) in nets {
            grouped.entry(net.trunc()).or_default().push(r);
        }
        for (net, refs) in grouped {
            set.nets.insert(net, refs);
        }
        Ok(set)
    }

    /// The hot-path answer: which files matched.
    pub fn hits(&self, ip: IpAddr, asn: Option<Asn>) -> IocHits {
        let mut mask = 0u64;
        for refs in self.nets.all(ip) {
            for r in refs {
                mask |= 1 << r.file;
            }
        }
        if let Some(refs) = asn.and_then(|a| self.asns.get(&a)) {
            for r in refs {
                mask |= 1 << r.file;
            }
        }
        IocHits(mask)
    }

    /// The report answer: every matching indicator with its file's label.
    pub fn matches(&self, ip: IpAddr, asn: Option<Asn>) -> Vec<IocMatch> {
        let from_asn = asn.and_then(|a| self.asns.get(&a)).into_iter().flatten();
        self.nets
            .all(ip)
            .flatten()
            .chain(from_asn)
            .map(|r| IocMatch { label: self.labels[r.file as usize].clone(), entry: self.entries[r.entry as usize].clone() })
            .collect()
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        assert_eq!(Entry::parse("AS60068"), Some(Entry::Asn(Asn(60068))));
        assert_eq!(Entry::parse(" 178.249.214.10 "), Some(Entry::Net("178.249.214.10/32".parse().unwrap())));
        assert_eq!(Entry::parse("89.36.78.0/24"), Some(Entry::Net("89.36.78.0/24".parse().unwrap())));
        assert_eq!(Entry::parse("2001:db8::/32"), Some(Entry::Net("2001:db8::/32".parse().unwrap())));
        assert_eq!(Entry::parse("ASX"), None);
        assert_eq!(Entry::parse("evil.example"), None);
    }

    #[test]
    fn ioc_files_with_labels_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.txt");
        std::fs::write(&a, "# incident one\n178.249.214.10\n89.36.78.0/24  # whole range\n\nAS60068\n").unwrap();
        std::fs::write(&b, "89.36.78.75\n").unwrap();
        let set = IocSet::load(&[
            IocFile { path: a, label: "one".into() },
            IocFile { path: b, label: "two".into() },
        ])
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(set.len(), 4);
        assert_eq!(set.hits(ip("178.249.214.10"), None), IocHits(0b01));
        assert_eq!(set.hits(ip("89.36.78.75"), None), IocHits(0b11));
        assert_eq!(set.hits(ip("192.0.2.1"), Some(Asn(60068))), IocHits(0b01));
        assert!(!set.hits(ip("192.0.2.1"), Some(Asn(1))).any());
        let m = set.matches(ip("89.36.78.75"), None);
        assert!(m.contains(&IocMatch { label: "two".into(), entry: "89.36.78.75".into() }));
        assert!(m.contains(&IocMatch { label: "one".into(), entry: "89.36.78.0/24".into() }));
    }

    #[test]
    fn a_bad_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("bad.txt");
        std::fs::write(&a, "1.2.3.4\nnot-an-ip\n").unwrap();
        let err = IocSet::load(&[IocFile { path: a, label: "x".into() }]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bad.txt:2") && text.contains("not-an-ip"), "{text}");
    }

    #[test]
    fn netlist_cidr_beats_asn() {
        let mut l = NetList::default();
        l.insert(Entry::Asn(Asn(64500)), Category::Corporate);
        l.insert(Entry::Net("198.51.100.0/24".parse().unwrap()), Category::PrivacyRelay);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(l.get(ip("198.51.100.9"), Some(Asn(64500))), Some(Category::PrivacyRelay));
        assert_eq!(l.get(ip("192.0.2.9"), Some(Asn(64500))), Some(Category::Corporate));
        assert_eq!(l.get(ip("192.0.2.9"), None), None);
    }

    #[test]
    fn relay_csv_first_column() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("egress.csv");
        std::fs::write(&f, "172.224.226.0/27,GB,GB-EN,London,\n2a02:26f7:b3c0:4000::/64,GB,GB-EN,London,\n").unwrap();
        assert_eq!(read_relay_file(&f).unwrap().len(), 2);
    }
}
