//! End-to-end tests: real TLS clients through a running tether to an in-process upstream.

mod admin;
mod check;
mod cli;
mod detector;
mod adversarial;
mod idp;
mod lifetimes;
mod logs;
mod malformed;
mod proxy;
mod redis;
mod replicas;
mod reload;
mod stepup;
mod support;
