//! `[dbsc]`: Device Bound Session Credentials — whether tether offers registration, to
//! which routes and clients, the bound cookie's name and lifetime, and what a risk signal
//! on a bound session demands.

use std::time::Duration;

use crate::dbsc::{DbscConfig, OnRisk};

use super::decode::Section;
use super::Problem;

/// Shortest bound-cookie lifetime: Chrome allows a session about two refreshes in three
/// to five minutes, so a shorter life would leave bound browsers without a cookie.
const MIN_LIFETIME: Duration = Duration::from_secs(120);
/// Longest: past a day the bound cookie is as long-lived as the cookie it protects.
const MAX_LIFETIME: Duration = Duration::from_secs(86_400);

pub(super) fn read(s: &Section<'_>, session_cookies: Option<&[String]>) -> Option<DbscConfig> {
    let d = DbscConfig::default();
    let enabled = s.boolean("enabled").unwrap_or(d.enabled);
    let routes = match s.string_array("routes") {
        Some(list) => {
            for (i, r) in list.iter().enumerate() {
                if !r.starts_with('/') {
                    s.problem(&format!("routes[{i}]"), Problem::Invalid { expected: "a path prefix starting with /", found: (*r).to_owned() });
                }
            }
            if list.is_empty() {
                s.problem("routes", Problem::Conflict { reason: "an empty list offers registration nowhere; leave [dbsc] disabled instead" });
            }
            list.into_iter().map(str::to_owned).collect()
        }
        None => d.routes,
    };
    let user_agents = match s.string_array("user_agents") {
        Some(list) => {
            for (i, ua) in list.iter().enumerate() {
                if ua.trim().is_empty() {
                    s.problem(&format!("user_agents[{i}]"), Problem::Invalid { expected: "a non-empty part of a user agent", found: (*ua).to_owned() });
                }
            }
            list.into_iter().map(str::to_owned).collect()
        }
        None => d.user_agents,
    };
    let bound_cookie = match s.string("bound_cookie") {
        Some(name) => {
            let token = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !token {
                s.problem("bound_cookie", Problem::Invalid { expected: "a cookie name (a token, RFC 6265)", found: name.to_owned() });
            } else if session_cookies.is_some_and(|c| c.iter().any(|c| c == name)) {
                s.problem("bound_cookie", Problem::Conflict { reason: "names one of session.cookies; the bound cookie must be tether's own" });
            }
            name.to_owned()
        }
        None => d.bound_cookie,
    };
    let bound_lifetime = match s.duration("bound_lifetime", MAX_LIFETIME) {
        Some(l) if l < MIN_LIFETIME => {
            s.problem("bound_lifetime", Problem::Invalid { expected: "at least 2m (browsers limit how often they refresh)", found: format!("{}s", l.as_secs()) });
            d.bound_lifetime
        }
        Some(l) => l.as_secs() as u32,
        None => d.bound_lifetime,
    };
    let login_route = s.string("login_route").map(|r| {
        if !r.starts_with('/') {
            s.problem("login_route", Problem::Invalid { expected: "a path starting with /", found: r.to_owned() });
        }
        r.to_owned()
    });
    let on_risk = match s.string("on_risk") {
        Some(v) => OnRisk::parse(v).unwrap_or_else(|| {
            s.problem("on_risk", Problem::Invalid { expected: "\"challenge\", \"step_up\" or \"off\"", found: v.to_owned() });
            d.on_risk
        }),
        None => d.on_risk,
    };
    Some(DbscConfig { enabled, routes, user_agents, bound_cookie, bound_lifetime, login_route, on_risk })
}
