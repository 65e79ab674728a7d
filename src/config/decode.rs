//! A key-path-aware reader over a parsed TOML table.
//!
//! serde stops at the first error; an operator fixing a config wants every error at once,
//! each with the key path it belongs to. So sections are read key by key through
//! [`Section`], which records every problem in its section's [`Problems`] list (shared
//! with its nested tables) and, when finished, reports every key it was never asked for
//! as unknown.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::{Table, Value};

use super::{ConfigError, Problem};

/// A problem that has already been recorded in [`Problems`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reported;

/// Every problem found so far, in the order found.
#[derive(Default)]
pub(crate) struct Problems(RefCell<Vec<ConfigError>>);

impl Problems {
    pub(crate) fn push(&self, path: impl Into<String>, problem: Problem) {
        self.0.borrow_mut().push(ConfigError { path: path.into(), problem });
    }

    pub(crate) fn into_vec(self) -> Vec<ConfigError> {
        self.0.into_inner()
    }
}

/// One `[section]` of the file (possibly absent, in which case every getter yields `None`).
pub(crate) struct Section<'t> {
    name: String,
    table: Option<&'t Table>,
    seen: RefCell<Vec<&'static str>>,
    problems: &'t Problems,
    base_dir: &'t Path,
}

impl<'t> Section<'t> {
    pub(crate) fn new(
        root: &'t Table,
        name: &'static str,
        problems: &'t Problems,
        base_dir: &'t Path,
    ) -> Self {
        let table = match root.get(name) {
            None => None,
            Some(Value::Table(t)) => Some(t),
            Some(other) => {
                problems.push(name, Problem::WrongType { expected: "a table", found: other.type_str() });
                None
            }
        };
        Section { name: name.to_owned(), table, seen: RefCell::new(Vec::new()), problems, base_dir }
    }

    /// A nested table such as `[intel.networks]`; the key counts as known here.
    pub(crate) fn sub(&self, key: &'static str) -> Section<'t> {
        let name = self.path(key);
        let table = match self.raw(key) {
            None => None,
            Some(Value::Table(t)) => Some(t),
            Some(other) => {
                self.problems.push(name.clone(), Problem::WrongType { expected: "a table", found: other.type_str() });
                None
            }
        };
        Section { name, table, seen: RefCell::new(Vec::new()), problems: self.problems, base_dir: self.base_dir }
    }

    /// An array of tables (`[[policy.routes]]`), each read as its own section.
    pub(crate) fn tables(&self, key: &'static str) -> Vec<Section<'t>> {
        let Some(items) = self.array(key) else { return Vec::new() };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let name = format!("{}.{}[{}]", self.name, key, i);
            match item {
                Value::Table(t) => out.push(Section {
                    name,
                    table: Some(t),
                    seen: RefCell::new(Vec::new()),
                    problems: self.problems,
                    base_dir: self.base_dir,
                }),
                other => self.problems.push(name, Problem::WrongType { expected: "a table", found: other.type_str() }),
            }
        }
        out
    }

    /// An array of any values, for keys whose items take more than one form.
    pub(crate) fn array(&self, key: &'static str) -> Option<&'t Vec<Value>> {
        self.typed(key, "an array", Value::as_array)
    }

    pub(crate) fn is_present(&self) -> bool {
        self.table.is_some()
    }

    pub(crate) fn path(&self, key: &str) -> String {
        format!("{}.{}", self.name, key)
    }

    pub(crate) fn problem(&self, key: &str, problem: Problem) {
        self.problems.push(self.path(key), problem);
    }

    fn raw(&self, key: &'static str) -> Option<&'t Value> {
        self.seen.borrow_mut().push(key);
        self.table?.get(key)
    }

    fn typed<T>(
        &self,
        key: &'static str,
        expected: &'static str,
        pick: impl FnOnce(&'t Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.raw(key)?;
        let picked = pick(value);
        if picked.is_none() {
            self.problem(key, Problem::WrongType { expected, found: value.type_str() });
        }
        picked
    }

    pub(crate) fn string(&self, key: &'static str) -> Option<&'t str> {
        self.typed(key, "a string", Value::as_str)
    }

    pub(crate) fn required_string(&self, key: &'static str) -> Option<&'t str> {
        let value = self.string(key);
        if value.is_none() && self.table.and_then(|t| t.get(key)).is_none() {
            self.problem(key, Problem::Missing);
        }
        value
    }

    pub(crate) fn boolean(&self, key: &'static str) -> Option<bool> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    /// An integer within `[min, max]`.
    pub(crate) fn integer(&self, key: &'static str, min: i64, max: i64) -> Option<i64> {
        let n = self.typed(key, "an integer", Value::as_integer)?;
        if n < min || n > max {
            self.problem(key, Problem::OutOfRange { min, max, found: n });
            return None;
        }
        Some(n)
    }

    /// An integer or float, as f64.
    pub(crate) fn raw_number(&self, key: &'static str) -> Option<f64> {
        self.typed(key, "a number", |v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
    }

    /// A table read as free-form entries (a map whose keys are the operator's names).
    pub(crate) fn table(&self, key: &'static str) -> Option<&'t Table> {
        self.typed(key, "a table", Value::as_table)
    }

    pub(crate) fn string_array(&self, key: &'static str) -> Option<Vec<&'t str>> {
        let items = self.typed(key, "an array of strings", Value::as_array)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s),
                None => self.problems.push(
                    format!("{}.{}[{}]", self.name, key, i),
                    Problem::WrongType { expected: "a string", found: item.type_str() },
                ),
            }
        }
        Some(out)
    }

    /// A string parsed with `FromStr`; `expected` names the form in the error.
    pub(crate) fn parsed<T: FromStr>(&self, key: &'static str, expected: &'static str) -> Option<T> {
        let s = self.string(key)?;
        self.parse_value(key, s, expected)
    }

    pub(crate) fn parse_value<T: FromStr>(&self, key: &str, s: &str, expected: &'static str) -> Option<T> {
        match s.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.problem(key, Problem::Invalid { expected, found: s.to_owned() });
                None
            }
        }
    }

    /// A duration: `"250ms"`, `"10s"`, `"5m"`, `"1h"`, or an integer number of seconds.
    pub(crate) fn duration(&self, key: &'static str, max: Duration) -> Option<Duration> {
        let value = self.raw(key)?;
        let parsed = match value {
            Value::Integer(n) if *n >= 0 => Some(Duration::from_secs(*n as u64)),
            Value::String(s) => parse_duration(s),
            _ => None,
        };
        match parsed {
            Some(d) if d.is_zero() || d > max => {
                self.problem(key, Problem::Invalid { expected: "a duration above zero and within its bound", found: value.to_string() });
                None
            }
            Some(d) => Some(d),
            None => {
                self.problem(key, Problem::Invalid { expected: "a duration such as \"10s\" or \"250ms\"", found: value.to_string() });
                None
            }
        }
    }

    /// A size: `"64KiB"`, `"10MiB"`, `"512"`, or an integer number of bytes, within `[min, max]`.
    pub(crate) fn bytes(&self, key: &'static str, min: u64, max: u64) -> Option<u64> {
        let value = self.raw(key)?;
        let parsed = match value {
            Value::Integer(n) if *n >= 0 => Some(*n as u64),
            Value::String(s) => parse_bytes(s),
            _ => None,
        };
        match parsed {
            Some(n) if n >= min && n <= max => Some(n),
            _ => {
                self.problem(key, Problem::Invalid { expected: "a size such as \"64KiB\" within its bound", found: value.to_string() });
                None
            }
        }
    }

    /// Marks keys as known without reading them (a section whose other keys decide
    /// that these do not apply, and say so once).
    pub(crate) fn ignore(&self, keys: &[&'static str]) {
        self.seen.borrow_mut().extend_from_slice(keys);
    }

    /// Whether the key is present at all, whatever its type.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.table.is_some_and(|t| t.contains_key(key))
    }

    /// An optional path to a file that must exist and be readable; relative paths are
    /// resolved against the config file's directory. `Err` when present but unusable.
    pub(crate) fn optional_file(&self, key: &'static str) -> Result<Option<PathBuf>, Reported> {
        match self.string(key) {
            None if self.has(key) => Err(Reported),
            None => Ok(None),
            Some(s) => self.resolve_file(key, s).map(Some).ok_or(Reported),
        }
    }

    pub(crate) fn resolve_file(&self, key: &str, s: &str) -> Option<PathBuf> {
        let path = self.resolve(s);
        match std::fs::File::open(&path) {
            Ok(_) => Some(path),
            Err(source) => {
                self.problem(key, Problem::File { path, source });
                None
            }
        }
    }

    /// A path resolved against the config file's directory, not checked (for outputs).
    pub(crate) fn resolve(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        if p.is_absolute() { p.to_path_buf() } else { self.base_dir.join(p) }
    }

    /// Reports every key of the section that no getter asked for.
    pub(crate) fn finish(self) {
        let Some(table) = self.table else { return };
        let seen = self.seen.borrow();
        for key in table.keys() {
            if !seen.iter().any(|k| k == key) {
                // Every getter records its key as seen, so `seen` is the section's known keys.
                self.problems.push(format!("{}.{}", self.name, key), unknown_key(key, &seen));
            }
        }
    }
}

/// The problem for an unknown key: with the nearest known key when one is close enough
/// to be a typo of it.
pub(crate) fn unknown_key(key: &str, known: &[&'static str]) -> Problem {
    let nearest = known.iter().map(|k| (edit_distance(key, k), *k)).min_by_key(|(d, _)| *d);
    match nearest {
        // A third of the longer name: "polcy" finds "policy", "url" does not find "tls".
        Some((d, near)) if d <= (near.len().max(key.len()) / 3).max(1) => Problem::UnknownKeyNear { near },
        _ => Problem::UnknownKey,
    }
}

/// Levenshtein distance over characters. Keys are short, so the two-row table is cheap.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            row[j + 1] = substitute.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" | "" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(86_400).map(Duration::from_secs),
        _ => None,
    }
}

pub(crate) fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_duration("5 days"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
    }

    #[test]
    fn unknown_keys_suggest_a_near_known_key() {
        let known = ["addr", "tls_cert", "tls_key", "trusted_proxies"];
        let near = |k| match unknown_key(k, &known) {
            Problem::UnknownKeyNear { near } => Some(near),
            _ => None,
        };
        assert_eq!(near("tls-cert"), Some("tls_cert"));
        assert_eq!(near("trusted_proxy"), Some("trusted_proxies"));
        assert_eq!(near("adr"), Some("addr"));
        assert_eq!(near("retries"), None);
        assert_eq!(near("x"), None);
        assert!(matches!(unknown_key("anything", &[]), Problem::UnknownKey));
        assert_eq!(edit_distance("polcy", "policy"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64KiB"), Some(65536));
        assert_eq!(parse_bytes("10MiB"), Some(10 << 20));
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("1MB"), Some(1_000_000));
        assert_eq!(parse_bytes("1 parsec"), None);
    }
}
