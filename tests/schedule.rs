//! Job schedules: every accepted form with its next firing times, and rejected forms as config
//! errors that name the key.

use qlik_lb::config::schedule::{utc, Schedule};
use qlik_lb::config::Config;

fn firings(text: &str, from: chrono::DateTime<chrono::Utc>, n: usize) -> Vec<String> {
    let s = Schedule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let mut t = from;
    (0..n)
        .map(|_| {
            t = s.next_after(t);
            t.format("%m-%d %H:%M").to_string()
        })
        .collect()
}

#[test]
fn accepted_forms_and_their_next_firings() {
    let from = utc(2026, 1, 30, 5, 7);
    let cases: &[(&str, &[&str])] = &[
        (
            "every 15 minutes",
            &["01-30 05:15", "01-30 05:30", "01-30 05:45", "01-30 06:00"],
        ),
        ("every 1 minute", &["01-30 05:08", "01-30 05:09"]),
        ("every minute", &["01-30 05:08", "01-30 05:09"]),
        (
            "every 6 hours",
            &["01-30 06:00", "01-30 12:00", "01-30 18:00", "01-31 00:00"],
        ),
        ("Every 6 Hours", &["01-30 06:00", "01-30 12:00"]),
        ("every hour", &["01-30 06:00", "01-30 07:00"]),
        ("every 24 hours", &["01-31 00:00", "02-01 00:00"]),
        ("every 1 day", &["01-31 00:00", "02-01 00:00"]),
        (
            "every 2 days",
            &["01-31 00:00", "02-01 00:00", "02-03 00:00"],
        ),
        ("every 7 days", &["02-01 00:00", "02-08 00:00"]),
        ("at 03:30", &["01-31 03:30", "02-01 03:30"]),
        ("at 05:08", &["01-30 05:08", "01-31 05:08"]),
        ("  at 23:59 ", &["01-30 23:59", "01-31 23:59"]),
    ];
    for (text, expected) in cases {
        assert_eq!(firings(text, from, expected.len()), *expected, "{text}");
    }
    // Strictly after: a firing time itself is not the next firing.
    assert_eq!(
        firings("every 6 hours", utc(2026, 1, 30, 6, 0), 1),
        vec!["01-30 12:00"]
    );
}

#[test]
fn rejected_forms_are_config_errors_naming_the_key() {
    for bad in [
        "every 0 minutes",
        "every 60 minutes",
        "every 25 hours",
        "every 32 days",
        "every x hours",
        "every 2 weeks",
        "at 25:00",
        "at noon",
        "daily",
        "",
        "every",
    ] {
        assert!(Schedule::parse(bad).is_err(), "{bad}");
        for (section, key) in [
            ("monitor", "license.monitor.schedule"),
            ("release", "license.release.schedule"),
        ] {
            let text = format!("[qrs]\nurl = \"https://qrs.example:4242\"\n[license.{section}]\nschedule = \"{bad}\"\n");
            let err = Config::parse(&text, std::path::Path::new(".")).unwrap_err();
            let hit = err.errors.iter().find(|e| e.key == key);
            let hit = hit.unwrap_or_else(|| panic!("`{bad}`: no error for {key}: {err}"));
            assert!(
                hit.message.contains("every N minutes"),
                "the error says what would be right: {}",
                hit.message
            );
            assert_eq!(hit.line, Some(4), "{bad}");
        }
    }
}
