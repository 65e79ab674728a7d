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
    pub path_prefix: String,
    pub methods: Vec<Method>,
    /// Multiplies the score: 2.0 makes one medium signal enough on an admin-write route.
    pub sensitivity: f32,
    /// Demand an authentication younger than this, whatever the score (credential-minting
    /// routes: "sudo mode").
    pub fresh_auth: Option<Duration>,
}

impl Route {
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        path.starts_with(self.path_prefix.as_str()) && (self.methods.is_empty() || self.methods.contains(method))
    }
}

impl Policy {
    /// The first matching route rule.
    pub fn route(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(method, path))
    }

    pub fn weight(&self, s: Signal) -> u16 {
        self.weights[s as usize]
    }
}

impl Default for Policy {
    /// The defaults survive the benign changes the field reports (IPv6 rotation, carrier
    /// churn, Wi-Fi/cellular, browser upgrades, resumption, Private Relay, corporate
    /// VPNs) and step up the replay shapes (anonymizer, IoC, library client, impossible
    /// travel, alternation); see the README's policy table.
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
