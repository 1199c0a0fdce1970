//! How a silent engine's last known load ages: towards hot, never towards idle.
//!
//! A Qlik engine under heavy load is exactly the one whose health check answers late or not at
//! all, so "no fresh sample" must not read as "nothing known" (that would rank it by connection
//! counts, where a node everyone has been avoiding looks emptiest). Instead the last sample keeps
//! counting, and the longer the engine stays silent past its expected poll, the hotter it looks.

use crate::config::HealthConfig;
use std::time::Duration;

/// Health intervals past the expected poll over which a silent engine's load climbs to hot.
pub const INTERVALS_TO_HOT: u32 = 3;

/// When a sample is due and how quickly a late one heats up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aging {
    /// A sample this old or younger is on time: one poll interval plus the poll's own timeout.
    pub on_time: Duration,
    /// Lateness past `on_time` at which the last known load counts as hot.
    pub to_hot: Duration,
}

impl Aging {
    pub fn new(interval: Duration, timeout: Duration) -> Aging {
        Aging {
            on_time: interval + timeout,
            to_hot: (interval * INTERVALS_TO_HOT).max(Duration::from_millis(1)),
        }
    }

    pub fn of(health: &HealthConfig) -> Aging {
        Aging::new(health.interval.get(), health.timeout.get())
    }

    /// 0.0 for an on-time sample, rising linearly with lateness to 1.0 (hot) and staying there.
    pub fn heat(&self, age: Duration) -> f64 {
        let late = age.saturating_sub(self.on_time);
        (late.as_secs_f64() / self.to_hot.as_secs_f64()).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_time_then_rising_then_hot() {
        let a = Aging::new(Duration::from_secs(5), Duration::from_secs(2));
        assert_eq!(a.heat(Duration::from_secs(7)), 0.0);
        assert!((a.heat(Duration::from_secs(14)) - 7.0 / 15.0).abs() < 1e-9);
        assert_eq!(a.heat(Duration::from_secs(22)), 1.0);
        assert_eq!(a.heat(Duration::from_secs(3600)), 1.0);
    }
}
