//! The control plane: QRS client, schedules, license monitor and license release.

pub mod schedule;
pub mod cli;
