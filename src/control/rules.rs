//! Never-release rules, checked in the order of the config reference; the first match wins.

use super::qrs_model::QrsUser;
use crate::config::{FlagRule, NeverRelease};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Users,
    Tags,
    CustomProperties,
    UserDirectories,
    Inactive,
    Blocked,
    RemovedExternally,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Users => "users",
            Rule::Tags => "tags",
            Rule::CustomProperties => "custom_properties",
            Rule::UserDirectories => "user_directories",
            Rule::Inactive => "inactive",
            Rule::Blocked => "blocked",
            Rule::RemovedExternally => "removed_externally",
        }
    }
}

/// The first rule that protects `user`, if any. Names compare case-insensitively.
pub fn protecting_rule(user: &QrsUser, never: &NeverRelease) -> Option<Rule> {
    let same = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
    let qualified = format!("{}\\{}", user.user_directory, user.user_id);
    if never.users.iter().any(|u| same(u, &qualified)) {
        return Some(Rule::Users);
    }
    if user
        .tags
        .iter()
        .any(|t| never.tags.iter().any(|n| same(n, &t.name)))
    {
        return Some(Rule::Tags);
    }
    if user.custom_properties.iter().any(|p| {
        never
            .custom_properties
            .iter()
            .any(|r| same(&r.name, &p.definition.name) && same(&r.value, &p.value))
    }) {
        return Some(Rule::CustomProperties);
    }
    if never
        .user_directories
        .iter()
        .any(|d| same(d, &user.user_directory))
    {
        return Some(Rule::UserDirectories);
    }
    let flags = [
        (never.inactive, user.inactive, Rule::Inactive),
        (never.blocked, user.blacklisted, Rule::Blocked),
        (
            never.removed_externally,
            user.removed_externally,
            Rule::RemovedExternally,
        ),
    ];
    flags.into_iter().find_map(|(rule, flag, which)| {
        let protects = match rule {
            FlagRule::Ignore => false,
            FlagRule::Yes => flag,
            FlagRule::No => !flag,
        };
        protects.then_some(which)
    })
}
