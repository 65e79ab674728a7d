//! `[lineage]`: the companion cookie that finds cloned sessions (see
//! `session::lineage`). Off unless `enabled = true`.

use std::time::Duration;

use crate::session::lineage::{LineageConfig, COOKIE_PREFIX, MAX_ROTATE as MAX_ROTATE_SECS};

use super::decode::Section;
use super::Problem;

/// A value lives at most twelve hours: rotation is what finds a clone, and an old value
/// finds it late (the store also counts a value's first return in 16 bits after it).
const MAX_ROTATE: Duration = Duration::from_secs(MAX_ROTATE_SECS as u64);
/// Grace covers requests in flight across a rotation; minutes would be a second lineage.
const MAX_GRACE: Duration = Duration::from_secs(300);
/// Below this a rotation is refused: grace must fit below it in whole seconds, and a
/// value must get a chance to come back before the next one is due. Short enough for a
/// test to span rotations in seconds; production wants [`RECOMMENDED_ROTATE`].
const MIN_ROTATE: u32 = 2;
/// The shortest rotation and grace `check-config` accepts without a warning: under a
/// minute, a page that loads slowly or a tab asleep in the background takes its answers
/// as lost; under five seconds of grace, the requests a busy page has in flight when a
/// value is replaced arrive after it.
pub(super) const RECOMMENDED_ROTATE: u32 = 60;
pub(super) const RECOMMENDED_GRACE: u32 = 5;

pub(super) fn read(s: &Section<'_>) -> Option<Option<LineageConfig>> {
    let d = LineageConfig::default();
    let enabled = s.boolean("enabled").unwrap_or(false);
    // Whole seconds: the store's clock counts seconds, and "500ms" would read as zero.
    let secs = |key: &'static str, max: Duration, default: u32| match s.duration(key, max) {
        None if s.has(key) => None,
        None => Some(default),
        Some(v) if v.subsec_nanos() != 0 => {
            s.problem(key, Problem::Invalid { expected: "a whole number of seconds, such as \"10s\" or \"5m\"", found: format!("{v:?}") });
            None
        }
        Some(v) => Some(v.as_secs() as u32),
    };
    let rotate_every = secs("rotate_every", MAX_ROTATE, d.rotate_every);
    let rotate_every = match rotate_every {
        Some(r) if r < MIN_ROTATE => {
            s.problem("rotate_every", Problem::OutOfRange { min: i64::from(MIN_ROTATE), max: i64::from(MAX_ROTATE_SECS), found: i64::from(r) });
            None
        }
        r => r,
    };
    let grace = secs("grace", MAX_GRACE, d.grace);
    if let (Some(r), Some(g)) = (rotate_every, grace) {
        if g >= r {
            s.problem("grace", Problem::Conflict { reason: "must be shorter than lineage.rotate_every (the previous value is accepted for `grace` after the current one comes back)" });
        }
    }
    let cookie = match s.string("cookie") {
        None if s.has("cookie") => None,
        None => Some(d.cookie),
        Some(name) => {
            let token = name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}%".contains(&b));
            if token && name.len() > COOKIE_PREFIX.len() && name.starts_with(COOKIE_PREFIX) && name.len() <= 64 {
                Some(name.to_owned())
            } else {
                s.problem("cookie", Problem::Invalid { expected: "a cookie name starting with \"__Host-\" (at most 64 characters, a token)", found: name.to_owned() });
                None
            }
        }
    };
    let cfg = LineageConfig { rotate_every: rotate_every?, grace: grace?, cookie: cookie? };
    Some(enabled.then_some(cfg))
}
