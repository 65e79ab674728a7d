//! Offline tools over recorded traffic: `tether replay` runs the live decision pipeline
//! over traces; `tether hunt` searches audit logs for indicators.

pub mod hunt;
pub mod replay;
