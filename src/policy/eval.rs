//! Weighing signals into one decision, with its reasons.

use super::Mode;
use crate::session::Secs;

use super::signals::{Signal, Signals};
use super::{Policy, Route};

crate::labels::labels! {
    /// What tether does with a request, in increasing severity.
    #[derive(PartialOrd, Ord)]
    pub enum Action {
        Allow = "allow",
        StepUp = "step_up",
        Block = "block",
        Revoke = "revoke",
    }
}

/// A decision and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub score: u32,
    /// Every signal that fired (the decision's reasons).
    pub signals: Signals,
    pub mode: Mode,
    /// Which of the policy's route rules judged it (an index into `Policy::routes`);
    /// kept as an index so a verdict stays `Copy` (see [`Policy::route_label`]).
    pub route: Option<u16>,
}

impl Verdict {
    /// Whether tether acts on it (enforce mode) or only records it (monitor mode).
    pub fn enforced(&self) -> bool {
        self.mode == Mode::Enforce
    }

    /// The action actually taken on the wire.
    pub fn effective(&self) -> Action {
        if self.enforced() { self.action } else { Action::Allow }
    }
}

pub fn evaluate(mut signals: Signals, policy: &Policy, route: Option<&Route>, authenticated_at: Option<Secs>, now: Secs) -> Verdict {
    let raw: u32 = signals.iter().map(|s| u32::from(policy.weight(s))).sum();
    let sensitivity = route.map_or(1.0, |r| r.sensitivity);
    let score = (raw as f32 * sensitivity).round() as u32;

    let mut action = if policy.revoke_threshold.is_some_and(|t| score >= t) {
        Action::Revoke
    } else if score >= policy.block_threshold {
        Action::Block
    } else if score >= policy.step_up_threshold {
        Action::StepUp
    } else {
        Action::Allow
    };

    if let Some(max_age) = route.and_then(|r| r.fresh_auth) {
        let fresh = authenticated_at.is_some_and(|at| u64::from(now.saturating_sub(at)) <= max_age.as_secs());
        if !fresh {
            signals.insert(Signal::FreshAuthRequired);
            action = action.max(Action::StepUp);
        }
    }
    if signals.contains(Signal::StepUpPending) {
        action = action.max(Action::StepUp);
    }
    if signals.contains(Signal::Revoked) || signals.contains(Signal::DbscUnproven) {
        action = action.max(Action::Block);
    }
    // `route` was borrowed from `policy.routes`, so its address finds its index.
    let route = route.and_then(|r| policy.routes.iter().position(|x| std::ptr::eq(x, r))).and_then(|i| u16::try_from(i).ok());
    Verdict { action, score, signals, mode: policy.mode, route }
}
