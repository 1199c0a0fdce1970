//! Job schedules in the text Butler (later.js) users already write: `every N minutes|hours|days`,
//! (also `every minute|hour|day`), clock-aligned in UTC, and `at HH:MM` (daily, UTC). Anything
//! else is a config error.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Timelike, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Fires when the minute of the hour is a multiple of N (N < 60), as later.js does.
    EveryMinutes(u32),
    /// Fires at minute 0 of every hour that is a multiple of N (N <= 24; 24 means midnight).
    EveryHours(u32),
    /// Fires at 00:00 on days of the month 1, 1+N, 1+2N, ...
    EveryDays(u32),
    /// Fires once a day at HH:MM UTC.
    At { hour: u32, minute: u32 },
}

const FORMS: &str =
    "write \"every N minutes\", \"every N hours\", \"every N days\" or \"at HH:MM\" (UTC)";

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let lower = text.trim().to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        match words.as_slice() {
            ["every", unit] => Schedule::parse(&format!("every 1 {unit}"))
                .map_err(|_| format!("`{text}` is not a schedule; {FORMS}")),
            ["every", n, unit] => {
                let n: u32 = n
                    .parse()
                    .map_err(|_| format!("`{text}`: `{n}` is not a whole number; {FORMS}"))?;
                let unit = unit.trim_end_matches('s');
                let (limit, make): (u32, fn(u32) -> Schedule) = match unit {
                    "minute" => (59, Schedule::EveryMinutes),
                    // 24 is the default "every 24 hours": midnight UTC, as later.js reads it.
                    "hour" => (24, Schedule::EveryHours),
                    "day" => (31, Schedule::EveryDays),
                    _ => return Err(format!("`{text}`: unknown unit `{unit}`; {FORMS}")),
                };
                if n == 0 || n > limit {
                    return Err(format!(
                        "`{text}`: N must be 1 to {limit} for {unit}s; {FORMS}"
                    ));
                }
                Ok(make(n))
            }
            ["at", hhmm] => {
                let t = NaiveTime::parse_from_str(hhmm, "%H:%M")
                    .map_err(|_| format!("`{text}`: `{hhmm}` is not HH:MM; {FORMS}"))?;
                Ok(Schedule::At {
                    hour: t.hour(),
                    minute: t.minute(),
                })
            }
            _ => Err(format!("`{text}` is not a schedule; {FORMS}")),
        }
    }

    /// The first firing strictly after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        // Walk forward minute by minute from the next whole minute; every form fires on a whole
        // minute and at least once every 31 days, so this is bounded and obviously correct.
        let start = now
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(now)
            + Duration::minutes(1);
        let mut t = start;
        for _ in 0..(32 * 24 * 60) {
            if self.fires_at(t) {
                return t;
            }
            t += Duration::minutes(1);
        }
        start
    }

    fn fires_at(&self, t: DateTime<Utc>) -> bool {
        match *self {
            Schedule::EveryMinutes(n) => t.minute().is_multiple_of(n),
            Schedule::EveryHours(n) => t.minute() == 0 && t.hour().is_multiple_of(n),
            Schedule::EveryDays(n) => {
                t.minute() == 0 && t.hour() == 0 && (t.day() - 1).is_multiple_of(n)
            }
            Schedule::At { hour, minute } => t.hour() == hour && t.minute() == minute,
        }
    }
}

/// Convenience for tests and callers that hold a naive UTC time.
pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("valid UTC time")
}
