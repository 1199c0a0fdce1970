//! Backends' live state, selection, and health.

pub mod aging;
pub mod cookie;
pub mod engine_health;
pub mod health;
pub mod learned;
pub mod load;
pub mod pool;
pub mod registry;
pub mod select;
pub mod spec;
#[cfg(test)]
pub mod testing;

pub use pool::{Outcome, Pool};
pub use registry::{Backend, Registry};
