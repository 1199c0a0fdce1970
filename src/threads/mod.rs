//! The threads an instance runs proxied connections on (one single-threaded runtime per core)
//! and the cheap shared-signal wait their hot loops use. Used by the front door and the LB module.

pub mod signal;
pub mod workers;

pub use workers::Workers;
