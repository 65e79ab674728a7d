//! tether: a TLS-terminating reverse proxy that fingerprints every session and steps up
//! the ones that turn up where they do not belong.
//!
//! The request path, top to bottom: [`server`] accepts, runs the [`net`] pieces (PROXY
//! header, ClientHello read and its [`fingerprint`], rustls over the replayed bytes,
//! network [`intel`] once per connection) and hands the stream to [`http`]. There each
//! request is identified ([`session`]), judged by the [`detector`] ([`policy`] signals and
//! weights over the session's history), then forwarded through the [`upstream`] client,
//! answered with a [`stepup`] challenge, blocked or revoked, and recorded ([`metrics`],
//! [`audit`]). [`state`] holds the one swappable snapshot, [`reload`] replaces it,
//! [`shutdown`] stops every task, [`admin`] serves the operator endpoints, and [`app`]
//! only wires them together.
//!
//! Lower modules never import upper ones; `scripts/check-layers.sh` keeps it so.

pub mod admin;
pub mod app;
pub mod audit;
pub mod config;
pub mod dbsc;
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
pub mod reload;
pub mod report;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod state;
pub mod stepup;
pub mod upstream;
pub mod watch;

