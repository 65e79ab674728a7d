//! `[policy]`: mode, signal weights, thresholds and route rules, read into the
//! [`Policy`] the judgement uses.

use std::time::Duration;

use crate::policy::{Mode, Policy, Route, Signal};

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

    let routes = s.tables("routes").into_iter().filter_map(read_route).collect();
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
fn read_route(r: Section<'_>) -> Option<Route> {
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
    Some(Route { path_prefix: path_prefix?.to_owned(), methods, sensitivity, fresh_auth, fold_case })
}
