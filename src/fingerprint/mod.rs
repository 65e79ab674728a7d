//! provisional
pub mod ja4;
pub mod parse;
pub mod record;
pub use ja4::{fingerprint, Fingerprint, Ja4};
