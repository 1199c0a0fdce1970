//! The control plane: QRS client, the scheduled jobs, license monitor and license release.

pub mod audit;
pub mod cli;
pub mod jobs;
pub mod leadership;
pub mod monitor;
pub mod qrs_client;
pub mod qrs_model;
pub mod release;
pub mod rules;
pub mod status;

pub use leadership::{Alone, Fence, Leadership, NoFence};
pub use qrs_model::LicenseType;
pub use status::{LicenseStatus, LicenseStatusView};
