//! Never-release rules, checked in the order of the config reference; the first match wins.
//! A configured rule whose input the user record lacks protects the user: a rule that cannot
//! read its field must never let a release through.

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

    /// The QRS user field the rule reads, as the QRS spells it (an administrator looks for it
    /// in the QRS's own answer).
    pub fn qrs_field(self) -> &'static str {
        match self {
            Rule::Users => "userId",
            Rule::Tags => "tags",
            Rule::CustomProperties => "customProperties",
            Rule::UserDirectories => "userDirectory",
            Rule::Inactive => "inactive",
            Rule::Blocked => "blacklisted",
            Rule::RemovedExternally => "removedExternally",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// The rule matched the user.
    Matched(Rule),
    /// The rule is configured but the user record lacks the field it reads.
    Missing(Rule),
}

impl Protection {
    /// The audit reason: the rule's name, or `missing <QRS field>`.
    pub fn reason(self) -> String {
        match self {
            Protection::Matched(rule) => rule.as_str().to_string(),
            Protection::Missing(rule) => format!("missing {}", rule.qrs_field()),
        }
    }
}

/// One rule: unconfigured, it looks at nothing; configured, a missing input protects.
fn check<T: ?Sized>(
    rule: Rule,
    configured: bool,
    input: Option<&T>,
    matches: impl FnOnce(&T) -> bool,
) -> Option<Protection> {
    if !configured {
        return None;
    }
    match input {
        None => Some(Protection::Missing(rule)),
        Some(value) => matches(value).then_some(Protection::Matched(rule)),
    }
}

fn same(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// The first rule that protects `user`, if any. Names compare case-insensitively.
pub fn protecting_rule(user: &QrsUser, never: &NeverRelease) -> Option<Protection> {
    let qualified = format!("{}\\{}", user.user_directory, user.user_id);
    let flag = |rule: Rule, setting: FlagRule, value: Option<bool>| {
        check(
            rule,
            setting != FlagRule::Ignore,
            value.as_ref(),
            |&v| match setting {
                FlagRule::Yes => v,
                FlagRule::No => !v,
                FlagRule::Ignore => false,
            },
        )
    };
    check(
        Rule::Users,
        !never.users.is_empty(),
        Some(&qualified),
        |q| never.users.iter().any(|u| same(u, q)),
    )
    .or_else(|| {
        check(
            Rule::Tags,
            !never.tags.is_empty(),
            user.tags.as_deref(),
            |tags| {
                tags.iter()
                    .any(|t| never.tags.iter().any(|n| same(n, &t.name)))
            },
        )
    })
    .or_else(|| {
        check(
            Rule::CustomProperties,
            !never.custom_properties.is_empty(),
            user.custom_properties.as_deref(),
            |props| {
                props.iter().any(|p| {
                    never
                        .custom_properties
                        .iter()
                        .any(|r| same(&r.name, &p.definition.name) && same(&r.value, &p.value))
                })
            },
        )
    })
    .or_else(|| {
        check(
            Rule::UserDirectories,
            !never.user_directories.is_empty(),
            Some(&user.user_directory),
            |dir| never.user_directories.iter().any(|d| same(d, dir)),
        )
    })
    .or_else(|| flag(Rule::Inactive, never.inactive, user.inactive))
    .or_else(|| flag(Rule::Blocked, never.blocked, user.blacklisted))
    .or_else(|| {
        flag(
            Rule::RemovedExternally,
            never.removed_externally,
            user.removed_externally,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CustomPropertyRule;
    use crate::control::qrs_model::Tag;
    use serde_json::{json, Value};

    /// A user record that no rule matches, with `dropped` fields taken out and `nulled` ones null.
    fn record(dropped: &[&str], nulled: &[&str]) -> QrsUser {
        let mut v = json!({
            "id": "6b1c8f0e-1d55-4d3e-9a53-0c4f8b7d2e11", "userId": "anna", "userDirectory": "LAB",
            "tags": [], "customProperties": [],
            "inactive": false, "blacklisted": false, "removedExternally": false
        });
        for field in dropped {
            v.as_object_mut().unwrap().remove(*field);
        }
        for field in nulled {
            v[*field] = Value::Null;
        }
        serde_json::from_value(v).unwrap()
    }

    /// Every rule on; the flag rules on `yes`, which the record above does not match.
    fn every_rule_configured() -> NeverRelease {
        NeverRelease {
            users: vec!["CORP\\boss".into()],
            tags: vec!["keep".into()],
            custom_properties: vec![CustomPropertyRule {
                name: "LicenseManage".into(),
                value: "do-not-release".into(),
            }],
            user_directories: vec!["INTERNAL".into()],
            inactive: FlagRule::Yes,
            blocked: FlagRule::Yes,
            removed_externally: FlagRule::Yes,
        }
    }

    const FIELDS: [(&str, Rule); 5] = [
        ("tags", Rule::Tags),
        ("customProperties", Rule::CustomProperties),
        ("inactive", Rule::Inactive),
        ("blacklisted", Rule::Blocked),
        ("removedExternally", Rule::RemovedExternally),
    ];

    #[test]
    fn a_complete_record_matching_nothing_is_not_protected() {
        assert_eq!(
            protecting_rule(&record(&[], &[]), &every_rule_configured()),
            None
        );
    }

    #[test]
    fn each_missing_field_protects_when_its_rule_is_configured() {
        for (field, rule) in FIELDS {
            let got = protecting_rule(&record(&[field], &[]), &every_rule_configured());
            assert_eq!(got, Some(Protection::Missing(rule)), "{field}");
            assert_eq!(got.unwrap().reason(), format!("missing {field}"));
        }
    }

    #[test]
    fn a_null_field_counts_as_missing() {
        for (field, rule) in FIELDS {
            assert_eq!(
                protecting_rule(&record(&[], &[field]), &every_rule_configured()),
                Some(Protection::Missing(rule)),
                "{field}"
            );
        }
    }

    #[test]
    fn an_unconfigured_rule_ignores_a_missing_field() {
        let all: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            protecting_rule(&record(&all, &[]), &NeverRelease::default()),
            None
        );
        // A status rule on `ignore` is not configured, whatever the others say.
        let mut never = every_rule_configured();
        never.blocked = FlagRule::Ignore;
        assert_eq!(
            protecting_rule(&record(&["blacklisted"], &[]), &never),
            None
        );
    }

    #[test]
    fn an_empty_list_is_not_a_missing_one() {
        let user = record(&[], &[]);
        assert_eq!(user.tags.as_ref().map(Vec::len), Some(0));
        assert_eq!(user.custom_properties.as_ref().map(Vec::len), Some(0));
        let never = NeverRelease {
            tags: vec!["keep".into()],
            custom_properties: every_rule_configured().custom_properties,
            ..NeverRelease::default()
        };
        assert_eq!(protecting_rule(&user, &never), None);
    }

    #[test]
    fn a_missing_field_protects_where_its_rule_stands_in_the_order() {
        // An earlier rule that matches names itself.
        let mut never = every_rule_configured();
        never.users = vec!["lab\\ANNA".into()];
        assert_eq!(
            protecting_rule(&record(&["tags"], &[]), &never),
            Some(Protection::Matched(Rule::Users))
        );
        // A later missing field does not hide an earlier match.
        let mut tagged = record(&["inactive"], &[]);
        tagged.tags = Some(vec![Tag {
            name: "KEEP".into(),
        }]);
        assert_eq!(
            protecting_rule(&tagged, &every_rule_configured()),
            Some(Protection::Matched(Rule::Tags))
        );
        // With two fields missing, the earlier rule's field is named.
        assert_eq!(
            protecting_rule(
                &record(&["removedExternally", "customProperties"], &[]),
                &every_rule_configured()
            )
            .map(Protection::reason),
            Some("missing customProperties".to_string())
        );
    }

    #[test]
    fn present_flags_decide_as_before() {
        let mut user = record(&[], &[]);
        let mut never = NeverRelease {
            inactive: FlagRule::Yes,
            ..NeverRelease::default()
        };
        user.inactive = Some(true);
        assert_eq!(
            protecting_rule(&user, &never),
            Some(Protection::Matched(Rule::Inactive))
        );
        never.inactive = FlagRule::No;
        assert_eq!(protecting_rule(&user, &never), None);
        user.inactive = Some(false);
        assert_eq!(
            protecting_rule(&user, &never).map(Protection::reason),
            Some("inactive".to_string())
        );
    }
}
