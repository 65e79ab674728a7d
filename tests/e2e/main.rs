//! End-to-end tests: real TLS clients through a running tether to an in-process upstream.

mod admin;
mod cli;
mod detector;
mod adversarial;
mod idp;
mod lifetimes;
mod malformed;
mod presets;
mod proxy;
mod redis;
mod replicas;
mod reload;
mod stepup;
mod support;
