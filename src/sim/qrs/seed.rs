//! A realistic, deterministic population for the simulated QRS: hundreds of users across several
//! user directories, service accounts, protective tags and custom properties, inactive, blocked
//! and externally removed users, allocations used over the last 120 days, and a few quarantined rows.

use super::model::{Population, SimAllocation, SimUser};
use crate::control::LicenseType;
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIRECTORIES: &[&str] = &["CORP", "LAB", "SALES", "EXTERNAL"];
const SERVICE_ACCOUNTS: &[&str] = &["sa_repository", "sa_api", "sa_scheduler", "sa_proxy"];
const FIRST: &[&str] = &[
    "anna", "bjorn", "carla", "dev", "emil", "fatima", "goran", "hana", "ivan", "julia", "karl",
    "lena",
];
const LAST: &[&str] = &[
    "berg", "chen", "diaz", "eriksson", "fischer", "garcia", "holm", "ito", "jensen", "kowalski",
];

pub const DO_NOT_RELEASE_TAG: &str = "License do not release";
pub const LICENSE_PROPERTY: &str = "LicenseManage";

/// `users` people (plus the INTERNAL service accounts), deterministic for a given `seed` and `now`.
pub fn seeded(seed: u64, users: usize, now: DateTime<Utc>) -> Population {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pop = Population::empty(0);
    for sa in SERVICE_ACCOUNTS {
        let mut u = SimUser::new("INTERNAL", sa);
        u.id = guid(&mut rng);
        pop.users.push(u);
    }
    for i in 0..users {
        let first = FIRST[rng.gen_range(0..FIRST.len())];
        let last = LAST[rng.gen_range(0..LAST.len())];
        let dir = DIRECTORIES[rng.gen_range(0..DIRECTORIES.len())];
        let mut u = SimUser::new(dir, &format!("{first}.{last}{i}"));
        u.id = guid(&mut rng);
        u.name = format!("{} {}", capitalise(first), capitalise(last));
        if rng.gen_bool(0.08) {
            u.tags.push(DO_NOT_RELEASE_TAG.into());
        }
        if rng.gen_bool(0.15) {
            u.tags
                .push(["Finance", "Sales", "Pilot"][rng.gen_range(0..3)].into());
        }
        if rng.gen_bool(0.06) {
            u.custom_properties
                .push((LICENSE_PROPERTY.into(), "do-not-release".into()));
        } else if rng.gen_bool(0.1) {
            u.custom_properties
                .push((LICENSE_PROPERTY.into(), "auto".into()));
        }
        u.inactive = rng.gen_bool(0.05);
        u.blacklisted = rng.gen_bool(0.03);
        u.removed_externally = rng.gen_bool(0.03);
        pop.users.push(u);
    }

    let max_age_ms = Duration::days(120).num_milliseconds();
    for user in &pop.users {
        let kind = match rng.gen_range(0..10) {
            0..=3 => LicenseType::Professional,
            4..=8 => LicenseType::Analyzer,
            _ => continue,
        };
        let last_used = now - Duration::milliseconds(rng.gen_range(0..max_age_ms));
        let mut a = SimAllocation::new(kind, user, last_used);
        a.id = guid(&mut rng);
        pop.allocations.push(a);
    }
    for _ in 0..5 {
        let kind = if rng.gen_bool(0.5) {
            LicenseType::Professional
        } else {
            LicenseType::Analyzer
        };
        let gone = SimUser::new(
            DIRECTORIES[rng.gen_range(0..DIRECTORIES.len())],
            &format!("left{}", rng.gen_range(100..999)),
        );
        let mut a = SimAllocation::new(kind, &gone, now - Duration::hours(rng.gen_range(1..160)));
        a.id = guid(&mut rng);
        a.quarantine(Some(&gone));
        pop.allocations.push(a);
    }

    let count = |k| pop.allocations.iter().filter(|a| a.kind == k).count() as u32;
    pop.professional_total = count(LicenseType::Professional) + 20;
    pop.analyzer_total = count(LicenseType::Analyzer) + 25;
    pop.analyzer_minutes_allocated = 1000;
    pop.analyzer_minutes_used = rng.gen_range(0..1000);
    pop
}

fn guid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .to_string()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
