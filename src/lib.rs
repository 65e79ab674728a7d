//! tether: a TLS-terminating reverse proxy that fingerprints every session and steps up
//! the ones that turn up where they do not belong.
//!
//! The request path, top to bottom: [`net`] accepts, reads the ClientHello and computes
//! its [`fingerprint`], hands the bytes to rustls and the stream to [`http`], which
//! forwards to the upstream with header hygiene. [`state`] holds the one swappable
//! snapshot; [`metrics`] every metric; [`admin`] the operator endpoints.

pub mod admin;
pub mod app;
pub mod audit;
pub mod config;
pub mod demo;
pub mod detector;
pub mod fingerprint;
pub mod http;
pub mod intel;
pub mod jwt;
pub mod labels;
pub mod metrics;
pub mod net;
pub mod offline;
pub mod paths;
pub mod policy;
pub mod session;
pub mod state;
pub mod watch;
pub mod stepup;
