//! The control plane: QRS client, schedules, license monitor and license release.

pub mod cli;
pub mod schedule;
