//! Closed sets of names — signals, metric label values, audit event kinds, failure
//! reasons — each declared once, every variant beside its string form. `as_str`, `parse`,
//! `FromStr`, `ALL`, `COUNT` and `Display` all follow from that one list, so adding a
//! variant is one line and cannot leave `ALL` stale or an index out of range.
//!
//! The string forms are a contract (metric labels, audit fields, config keys), so each is
//! written out, never derived from the Rust name: renaming a variant cannot change what
//! operators see. This module imports nothing from the crate, so any module may use it.
//!
//! ```ignore
//! labels! {
//!     /// How a read ended.
//!     pub enum Outcome {
//!         Done = "done",
//!         TimedOut = "timeout",
//!     }
//! }
//! ```
//!
//! Every set derives `Debug, Clone, Copy, PartialEq, Eq, Hash`; further attributes (more
//! derives, `repr`) pass through. Two variations: a variant may carry one more constant
//! (`Variant = "label" => value`), read by a `const fn` named after the list
//! (`pub const fn weight(self) -> u16;`); and a set whose `Display` is a message written elsewhere (a `thiserror` enum) starts with
//! `impl Display elsewhere;`, so `Display` stays the message and `as_str` the label.

/// The string is none of a set's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a known {set}")]
pub struct UnknownLabel {
    /// The set's Rust name.
    pub set: &'static str,
}

/// Whether no two labels are equal. Every set asserts it at compile time: two variants
/// sharing a label would make `parse` answer for only one of them.
pub const fn distinct(labels: &[&str]) -> bool {
    let mut i = 0;
    while i < labels.len() {
        let mut j = i + 1;
        while j < labels.len() {
            if same(labels[i], labels[j]) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

/// `==` on strings, usable in a constant.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Declares a closed set of names; see the module documentation for its forms.
macro_rules! labels {
    // `Display` is written elsewhere (a `thiserror` message): everything else. The other
    // forms come down to this one.
    (
        impl Display elsewhere;
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $label:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        // A label is a plain value: the methods below take it by copy, and sets are
        // compared and used as keys.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        // Not every set needs every method.
        #[allow(dead_code)]
        impl $name {
            pub const COUNT: usize = [$( $name::$variant ),+].len();
            /// Every variant, in declaration order (which is also their discriminant order).
            pub const ALL: [$name; $name::COUNT] = [$( $name::$variant ),+];

            /// The string form: a metric label, an audit field, a config key.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }

            /// The variant whose string form is `s`, exactly.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $( $label => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::labels::UnknownLabel;

            fn from_str(s: &str) -> Result<$name, $crate::labels::UnknownLabel> {
                $name::parse(s).ok_or($crate::labels::UnknownLabel { set: stringify!($name) })
            }
        }

        const _: () = assert!(
            $crate::labels::distinct(&[$( $label ),+]),
            concat!("two variants of ", stringify!($name), " share a label"),
        );
    };

    // One more constant per variant, read by the named `const fn`.
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $label:literal => $value:expr ),+ $(,)?
        }
        $(#[$fmeta:meta])*
        $fvis:vis const fn $fname:ident(self) -> $fty:ty;
    ) => {
        $crate::labels::labels! {
            $(#[$meta])*
            $vis enum $name {
                $( $(#[$vmeta])* $variant = $label, )+
            }
        }
        impl $name {
            $(#[$fmeta])*
            $fvis const fn $fname(self) -> $fty {
                match self {
                    $( $name::$variant => $value, )+
                }
            }
        }
    };

    // The plain form: `Display` is the label.
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variants:tt)* }) => {
        $crate::labels::labels! {
            impl Display elsewhere;
            $(#[$meta])*
            $vis enum $name { $($variants)* }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use labels;

#[cfg(test)]
mod tests {
    use super::*;

    labels! {
        enum Plain {
            /// A doc comment passes through.
            First = "first",
            Second = "second_one",
            Third = "3",
        }
    }

    labels! {
        enum Weighted {
            Light = "light" => 1,
            Heavy = "heavy" => 100,
        }
        const fn weight(self) -> u16;
    }

    labels! {
        impl Display elsewhere;
        #[derive(thiserror::Error)]
        enum Failure {
            #[error("it broke")]
            Broke = "broke",
        }
    }

    #[test]
    fn all_is_in_discriminant_order_and_round_trips() {
        assert_eq!(Plain::COUNT, 3);
        for (i, p) in Plain::ALL.into_iter().enumerate() {
            assert_eq!(p as usize, i);
            assert_eq!(Plain::parse(p.as_str()), Some(p));
            assert_eq!(p.as_str().parse::<Plain>(), Ok(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!(Plain::Second.as_str(), "second_one");
    }

    #[test]
    fn parse_is_exact() {
        assert_eq!(Plain::parse("First"), None);
        assert_eq!(Plain::parse("first "), None);
        assert_eq!(Plain::parse(""), None);
        assert_eq!("nope".parse::<Plain>(), Err(UnknownLabel { set: "Plain" }));
    }

    #[test]
    fn extra_constant_follows_the_variant() {
        assert_eq!(Weighted::ALL.map(Weighted::weight), [1, 100]);
        assert_eq!(Weighted::Heavy.as_str(), "heavy");
    }

    #[test]
    fn display_elsewhere_keeps_the_message() {
        assert_eq!(Failure::Broke.to_string(), "it broke");
        assert_eq!(Failure::Broke.as_str(), "broke");
        assert_eq!(Failure::parse("broke"), Some(Failure::Broke));
    }

    #[test]
    fn distinct_labels() {
        assert!(distinct(&["a", "b", "ab"]));
        assert!(!distinct(&["a", "b", "a"]));
        assert!(distinct(&[]));
    }
}

/// The string forms are a contract with dashboards, audit readers and config files: any
/// change to one must show up here, on purpose.
#[cfg(test)]
mod contract {
    fn labels<T: Copy, const N: usize>(all: [T; N], as_str: fn(T) -> &'static str) -> Vec<&'static str> {
        all.into_iter().map(as_str).collect()
    }

    #[test]
    fn string_forms_are_unchanged() {
        use crate::metrics::{HandshakeResult, ReloadResult, RevocationSource, StatusClass, UpstreamErrorKind};
        use crate::policy::{Action, Signal};
        assert_eq!(
            labels(Signal::ALL, Signal::as_str),
            [
                "anonymizer_network", "first_seen_anonymizer", "ioc_hit", "asn_change", "prefix_change",
                "country_change", "impossible_travel", "user_agent_change", "tls_class_change", "ja4_change",
                "concurrent_use", "new_network_for_user", "jwt_invalid", "history_lost", "session_forked",
                "lineage_missing", "dbsc_unproven", "step_up_pending", "fresh_auth_required", "revoked",
            ]
        );
        assert_eq!(Signal::ALL.map(Signal::default_weight), [60, 60, 150, 25, 5, 20, 50, 30, 50, 10, 50, 15, 30, 50, 80, 80, 0, 0, 0, 0]);
        assert_eq!(labels(Action::ALL, Action::as_str), ["allow", "step_up", "block", "revoke"]);
        assert_eq!(
            labels(crate::session::lineage::Outcome::ALL, crate::session::lineage::Outcome::as_str),
            ["current", "previous", "unconfirmed", "forked", "missing", "issued", "rotated"]
        );
        assert_eq!(
            labels(crate::intel::Category::ALL, crate::intel::Category::as_str),
            ["vpn", "hosting", "tor", "proxy", "privacy_relay", "corporate", "other"]
        );
        assert_eq!(
            labels(crate::intel::CategorySource::ALL, crate::intel::CategorySource::as_str),
            ["allowlist", "operator_list", "anonymous_ip_db", "catalogue", "default"]
        );
        assert_eq!(labels(crate::intel::mmdb::DbKind::ALL, crate::intel::mmdb::DbKind::as_str), ["asn", "city", "anonymous_ip"]);
        assert_eq!(labels(crate::fingerprint::TlsClass::ALL, crate::fingerprint::TlsClass::as_str), ["browser", "library", "unknown"]);
        assert_eq!(
            labels(crate::fingerprint::UaFamily::ALL, crate::fingerprint::UaFamily::as_str),
            [
                "chrome", "edge", "firefox", "safari", "opera", "other_browser", "curl", "wget", "python", "go", "java",
                "node", "powershell", "okhttp", "other_library", "unknown",
            ]
        );
        assert_eq!(
            labels(crate::fingerprint::Os::ALL, crate::fingerprint::Os::as_str),
            ["windows", "macos", "ios", "android", "linux", "chromeos", "other"]
        );
        assert_eq!(labels(crate::net::Protocol::ALL, crate::net::Protocol::as_str), ["http1", "http2"]);
        assert_eq!(
            labels(crate::audit::EventKind::ALL, crate::audit::EventKind::as_str),
            [
                "session_bound", "decision", "new_address", "step_up_completed", "step_up_failed", "session_revoked",
                "logout_received", "request_refused", "unrecognised_credential", "owner_learned", "owner_conflict",
                "identify_failed", "dbsc_registered", "dbsc_refreshed", "dbsc_refused",
            ]
        );
        assert_eq!(
            labels(crate::metrics::HelloResult::ALL, crate::metrics::HelloResult::as_str),
            ["parsed", "malformed", "not_tls", "truncated", "timeout", "too_large"]
        );
        assert_eq!(
            labels(crate::stepup::challenge::StateError::ALL, crate::stepup::challenge::StateError::as_str),
            ["state_forged", "state_replayed_or_unknown", "state_expired"]
        );
        assert_eq!(
            labels(crate::stepup::oidc::Failure::ALL, crate::stepup::oidc::Failure::as_str),
            [
                "idp_unavailable", "idp_error", "token_exchange_failed", "bad_signature", "expired",
                "wrong_issuer_or_audience", "malformed_token", "nonce_mismatch", "stale_auth_time", "acr_missing",
                "amr_missing", "wrong_user", "unknown_owner", "replayed",
            ]
        );
        assert_eq!(labels(ReloadResult::ALL, ReloadResult::as_str), ["success", "failure"]);
        assert_eq!(labels(HandshakeResult::ALL, HandshakeResult::as_str), ["ok", "error", "timeout"]);
        assert_eq!(labels(UpstreamErrorKind::ALL, UpstreamErrorKind::as_str), ["connect", "timeout", "protocol"]);
        assert_eq!(
            labels(RevocationSource::ALL, RevocationSource::as_str),
            ["policy", "admin", "step_up_failures", "backchannel_logout", "wrong_user"]
        );
        assert_eq!(labels(StatusClass::ALL, StatusClass::as_str), ["1xx", "2xx", "3xx", "4xx", "5xx"]);
    }

    #[test]
    fn messages_stay_messages() {
        // A thiserror set keeps its message as Display; the label is only `as_str`.
        let f = crate::stepup::oidc::Failure::Expired;
        assert_eq!(f.to_string(), "the token is expired or not yet valid");
        assert_eq!(crate::stepup::challenge::StateError::Expired.to_string(), "state has expired");
        assert_eq!(crate::intel::Category::PrivacyRelay.to_string(), "privacy_relay");
    }
}
