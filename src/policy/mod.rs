//! The judgement: named signals derived from a request and what tether remembers
//! ([`signals`]), weighed into a decision with reasons ([`eval`]). Pure functions of
//! their inputs, `now` included, so the live proxy and `tether replay` agree exactly.

pub mod eval;
pub mod method;
pub mod path;
pub mod signals;

use std::fmt;
use std::time::Duration;

use http::Method;

pub use eval::{evaluate, Action, Verdict};
pub use signals::{derive, Observed, Signal, Signals};

/// Whether tether acts on its verdicts or only records them (`policy.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Monitor,
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
        }
    }
}

/// Weights, thresholds and routes: `[policy]` compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
    pub weights: [u16; Signal::COUNT],
    pub step_up_threshold: u32,
    pub block_threshold: u32,
    /// `None`: the policy never revokes by score (admins and failed step-ups still do).
    pub revoke_threshold: Option<u32>,
    pub routes: Vec<Route>,
    /// Implied speed above which two sightings are "impossible travel".
    pub max_travel_kmh: f32,
    /// Alternation between two networks within this window is "concurrent use".
    pub concurrent_window_secs: u32,
}

/// A route rule: requests whose path starts with `path_prefix` (and whose method is
/// listed, when methods are given).
#[derive(Debug, Clone)]
pub struct Route {
    /// `name`: the rule's `route` label on `tether_route_decisions_total` (checked at load
    /// to be short, plain and unique, so the label set stays as small as the config).
    pub name: Option<std::sync::Arc<str>>,
    pub path_prefix: String,
    pub methods: Vec<Method>,
    /// Multiplies the score: 2.0 makes one medium signal enough on an admin-write route.
    pub sensitivity: f32,
    /// Demand an authentication younger than this, whatever the score (credential-minting
    /// routes: "sudo mode").
    pub fresh_auth: Option<Duration>,
    /// Compare the path without regard to ASCII case (for consoles whose router does).
    pub fold_case: bool,
}

impl Route {
    /// `path` is normalised ([`path::normalise`]); the rule is a prefix, or a pattern
    /// with `*` and `**` ([`path::matches`]).
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        path::matches(&self.path_prefix, path, self.fold_case) && (self.methods.is_empty() || self.methods.contains(method))
    }

    /// Which of two matching rules is stricter: a fresh-authentication demand (the
    /// shorter, the stricter) before none, then the higher sensitivity.
    fn strictness(&self) -> (u64, f32) {
        (self.fresh_auth.map_or(0, |d| u64::MAX - d.as_secs()), self.sensitivity)
    }
}

impl Policy {
    /// The first matching route rule.
    pub fn route(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(method, path))
    }

    /// The strictest rule matching any of the methods a request is judged as and any of
    /// the spellings of its path (as sent, and normalised).
    pub fn strictest_route<'m>(&self, methods: impl Iterator<Item = &'m Method> + Clone, paths: &[&str]) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| methods.clone().any(|m| paths.iter().any(|p| r.matches(m, p))))
            .max_by(|a, b| a.strictness().partial_cmp(&b.strictness()).unwrap_or(std::cmp::Ordering::Equal))
    }

    pub fn weight(&self, s: Signal) -> u16 {
        self.weights[s as usize]
    }

    /// The metric label of the rule a verdict was judged under: its name, `unnamed` for a
    /// rule without one, `none` when no rule matched. Never the request's path.
    pub fn route_label(&self, verdict: &Verdict) -> &str {
        match verdict.route.and_then(|i| self.routes.get(usize::from(i))) {
            None => ROUTE_NONE,
            Some(r) => r.name.as_deref().unwrap_or(ROUTE_UNNAMED),
        }
    }

    /// Every label [`Policy::route_label`] can give under this policy.
    pub fn route_labels(&self) -> impl Iterator<Item = &str> {
        let unnamed = self.routes.iter().any(|r| r.name.is_none()).then_some(ROUTE_UNNAMED);
        std::iter::once(ROUTE_NONE).chain(unnamed).chain(self.routes.iter().filter_map(|r| r.name.as_deref()))
    }
}

/// The route label of a decision no rule matched.
pub const ROUTE_NONE: &str = "none";
/// The route label of a rule without a `name`.
pub const ROUTE_UNNAMED: &str = "unnamed";

impl Default for Policy {
    /// The defaults survive the benign changes the field reports (IPv6 rotation, carrier
    /// churn, Wi-Fi/cellular, browser upgrades, resumption, Private Relay, corporate
    /// VPNs) and step up the replay shapes (anonymizer, IoC, library client, impossible
    /// travel, alternation); see the policy table in docs/detection.md.
    fn default() -> Self {
        Policy {
            mode: Mode::Enforce,
            weights: Signal::ALL.map(Signal::default_weight),
            step_up_threshold: 50,
            block_threshold: 150,
            revoke_threshold: None,
            routes: Vec::new(),
            max_travel_kmh: 1000.0,
            concurrent_window_secs: 300,
        }
    }
}

impl fmt::Display for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
