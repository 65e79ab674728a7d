//! End-to-end tests: real TLS clients through a running tether to an in-process upstream.

mod admin;
mod check;
mod cli;
mod console;
mod dbsc;
mod detector;
mod docs;
mod adversarial;
mod cdn;
mod idp;
mod lifetimes;
mod lineage;
mod logs;
mod malformed;
mod metrics;
mod owner;
mod presets;
mod proxy;
mod redis;
mod replicas;
mod reload;
mod stepup;
mod support;
