//! `[policy]`: mode, signal weights, thresholds and route rules, read into the
//! [`Policy`] the judgement uses.

use std::time::Duration;

use crate::policy::{Mode, Policy, Route, Signal, ROUTE_NONE, ROUTE_UNNAMED};

use super::decode::Section;
use super::Problem;

pub(super) fn read(s: &Section<'_>) -> Option<Policy> {
    let d = Policy::default();
    let mode = match s.string("mode") {
        None => Some(Mode::Enforce),
        Some("enforce") => Some(Mode::Enforce),
        Some("monitor") => Some(Mode::Monitor),
        Some(other) => {
            s.problem("mode", Problem::Invalid { expected: "\"monitor\" or \"enforce\"", found: other.to_owned() });
            None
        }
    };
    let threshold = |key, default: u32| s.integer(key, 1, 100_000).map_or(default, |n| n as u32);
    let step_up_threshold = threshold("step_up_threshold", d.step_up_threshold);
    let block_threshold = threshold("block_threshold", d.block_threshold);
    let revoke_threshold = s.integer("revoke_threshold", 1, 100_000).map(|n| n as u32);
    if block_threshold < step_up_threshold || revoke_threshold.is_some_and(|r| r < block_threshold) {
        s.problem("block_threshold", Problem::Conflict { reason: "thresholds must rise: step_up <= block <= revoke" });
    }
    let max_travel_kmh = s.integer("max_travel_kmh", 100, 100_000).map_or(d.max_travel_kmh, |n| n as f32);
    let concurrent_window_secs =
        s.duration("concurrent_window", Duration::from_secs(86_400)).map_or(d.concurrent_window_secs, |w| w.as_secs() as u32);

    let weights_section = s.sub("weights");
    let mut weights = d.weights;
    for signal in Signal::ALL {
        if let Some(w) = weights_section.integer(signal.as_str(), 0, 10_000) {
            weights[signal as usize] = w as u16;
        }
    }
    weights_section.finish();

    let mut names = Vec::new();
    let routes = s.tables("routes").into_iter().filter_map(|r| read_route(r, &mut names)).collect();
    Some(Policy {
        mode: mode?,
        weights,
        step_up_threshold,
        block_threshold,
        revoke_threshold,
        routes,
        max_travel_kmh,
        concurrent_window_secs,
    })
}

/// One `[[policy.routes]]` table: `path_prefix` (a prefix) or `path` (a pattern with
/// `*` for one segment and `**` for any number); `None` when neither is given (reported).
/// `names` holds the names of the rules read before this one.
fn read_route(r: Section<'_>, names: &mut Vec<String>) -> Option<Route> {
    let name = r.string("name").filter(|n| route_name_ok(&r, n, names)).map(std::sync::Arc::<str>::from);
    let (key, path_prefix) = match (r.string("path_prefix"), r.string("path")) {
        (Some(p), None) => ("path_prefix", Some(p)),
        (None, Some(p)) => ("path", Some(p)),
        (Some(_), Some(p)) => {
            r.problem("path", Problem::Invalid { expected: "either path or path_prefix, not both", found: p.to_owned() });
            ("path", None)
        }
        (None, None) => ("path_prefix", r.required_string("path_prefix")),
    };
    if let Some(p) = path_prefix.filter(|p| !p.starts_with('/')) {
        r.problem(key, Problem::Invalid { expected: "a path starting with /", found: p.to_owned() });
    }
    let fold_case = r.boolean("fold_case").unwrap_or(false);
    let mut methods = Vec::new();
    for (i, m) in r.string_array("methods").unwrap_or_default().into_iter().enumerate() {
        match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => r.problem(&format!("methods[{i}]"), Problem::Invalid { expected: "an HTTP method", found: m.to_owned() }),
        }
    }
    let sensitivity = match r.raw_number("sensitivity") {
        None => 1.0,
        Some(v) if (0.0..=100.0).contains(&v) => v as f32,
        Some(v) => {
            r.problem("sensitivity", Problem::Invalid { expected: "a number between 0 and 100", found: v.to_string() });
            1.0
        }
    };
    let fresh_auth = r.duration("fresh_auth", Duration::from_secs(30 * 86_400));
    r.finish();
    Some(Route { name, path_prefix: path_prefix?.to_owned(), methods, sensitivity, fresh_auth, fold_case })
}

/// Longest route name: a metric label value, so short; long enough for a descriptive name.
const MAX_ROUTE_NAME: usize = 64;

/// A route name becomes a metric label value: plain ASCII, short, unique, and not one of
/// the labels tether gives decisions outside any named rule.
fn route_name_ok(r: &Section<'_>, name: &str, names: &mut Vec<String>) -> bool {
    let plain = !name.is_empty()
        && name.len() <= MAX_ROUTE_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !plain {
        r.problem("name", Problem::Invalid { expected: "1 to 64 ASCII letters, digits, '_', '-' or '.'", found: name.to_owned() });
        return false;
    }
    if name == ROUTE_NONE || name == ROUTE_UNNAMED {
        r.problem("name", Problem::Conflict { reason: "\"none\" and \"unnamed\" are the route labels of decisions without a named rule" });
        return false;
    }
    if names.iter().any(|n| n == name) {
        r.problem("name", Problem::Conflict { reason: "another [[policy.routes]] rule has this name" });
        return false;
    }
    names.push(name.to_owned());
    true
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const BASE: &str = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n";

    #[test]
    fn route_names_are_plain_unique_and_not_reserved() {
        let ok = format!("{BASE}[[policy.routes]]\nname = \"tokens\"\npath_prefix = \"/api/tokens\"\n[[policy.routes]]\npath_prefix = \"/admin\"\n");
        let cfg = Config::parse(&ok, Path::new("/nonexistent-base")).unwrap();
        let names: Vec<_> = cfg.policy.routes.iter().map(|r| r.name.as_deref()).collect();
        assert_eq!(names, [Some("tokens"), None]);

        let bad = format!(
            "{BASE}[[policy.routes]]\nname = \"a\"\npath_prefix = \"/a\"\n[[policy.routes]]\nname = \"a\"\npath_prefix = \"/b\"\n\
             [[policy.routes]]\nname = \"/admin/{{id}}\"\npath_prefix = \"/c\"\n[[policy.routes]]\nname = \"none\"\npath_prefix = \"/d\"\n\
             [[policy.routes]]\nname = \"{long}\"\npath_prefix = \"/e\"\n",
            long = "x".repeat(65)
        );
        let err = Config::parse(&bad, Path::new("/nonexistent-base")).unwrap_err();
        let paths: Vec<_> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["policy.routes[1].name", "policy.routes[2].name", "policy.routes[3].name", "policy.routes[4].name"]);
    }
}
