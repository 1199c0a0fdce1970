//! What the simulated QRS keeps in memory, and how it renders it in the QRS's exact JSON shapes
//! (`professionalaccesstype/full`, `user/full`, `accesstypeoverview`).

use crate::control::LicenseType;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

/// Qlik's "never" date, used for `quarantineEnd` on rows that are not quarantined.
pub const QLIK_NEVER: &str = "1753-01-01T00:00:00.000Z";

/// Qlik's quarantine rule: an allocation used within this long is quarantined, not freed.
pub fn quarantine_period() -> Duration {
    Duration::days(7)
}

pub fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimUser {
    pub id: String,
    pub user_id: String,
    pub user_directory: String,
    pub name: String,
    pub tags: Vec<String>,
    /// (definition name, value), one entry per value as the QRS lists them.
    pub custom_properties: Vec<(String, String)>,
    pub inactive: bool,
    pub blacklisted: bool,
    pub removed_externally: bool,
    /// Fields left out of this user's record (`"tags"`, `"blacklisted"`, ...), as a QRS of
    /// another version or a trimmed answer may send it.
    pub omitted_fields: Vec<String>,
}

impl SimUser {
    /// A plain active user with a fresh GUID.
    pub fn new(directory: &str, user_id: &str) -> SimUser {
        SimUser {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.to_string(),
            user_directory: directory.to_string(),
            name: user_id.to_string(),
            tags: Vec::new(),
            custom_properties: Vec::new(),
            inactive: false,
            blacklisted: false,
            removed_externally: false,
            omitted_fields: Vec::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        let tags: Vec<Value> = self
            .tags
            .iter()
            .map(|t| json!({ "id": stable_id("tag", t), "name": t, "privileges": null }))
            .collect();
        let props: Vec<Value> = self
            .custom_properties
            .iter()
            .map(|(name, value)| {
                json!({
                    "id": stable_id("cpv", &format!("{}/{name}/{value}", self.id)),
                    "createdDate": "2023-02-01T10:00:00.000Z",
                    "modifiedDate": "2023-02-01T10:00:00.000Z",
                    "modifiedByUserName": "INTERNAL\\sa_repository",
                    "value": value,
                    "definition": { "id": stable_id("cpd", name), "name": name, "valueType": "Text",
                                    "choiceValues": [value], "privileges": null },
                    "schemaPath": "CustomPropertyValue"
                })
            })
            .collect();
        let mut record = json!({
            "id": self.id,
            "createdDate": "2023-02-01T10:00:00.000Z",
            "modifiedDate": "2024-09-20T14:03:27.000Z",
            "modifiedByUserName": "INTERNAL\\sa_repository",
            "customProperties": props,
            "userId": self.user_id,
            "userDirectory": self.user_directory,
            "userDirectoryConnectorName": self.user_directory,
            "name": self.name,
            "roles": [],
            "attributes": [],
            "inactive": self.inactive,
            "removedExternally": self.removed_externally,
            "blacklisted": self.blacklisted,
            "deleteProhibited": false,
            "tags": tags,
            "privileges": null,
            "schemaPath": "User"
        });
        if let Some(fields) = record.as_object_mut() {
            for field in &self.omitted_fields {
                fields.remove(field);
            }
        }
        record
    }

    fn condensed(&self) -> Value {
        json!({ "id": self.id, "userId": self.user_id, "userDirectory": self.user_directory,
                "userDirectoryConnectorName": self.user_directory, "name": self.name, "privileges": null })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimAllocation {
    pub id: String,
    pub kind: LicenseType,
    /// The user's GUID; `None` once the user is gone (quarantined rows).
    pub user: Option<String>,
    pub last_used: DateTime<Utc>,
    pub quarantined: bool,
    pub quarantine_end: Option<DateTime<Utc>>,
    /// (directory, user id) of a user that no longer holds the row.
    pub deleted_user: Option<(String, String)>,
}

impl SimAllocation {
    pub fn new(kind: LicenseType, user: &SimUser, last_used: DateTime<Utc>) -> SimAllocation {
        SimAllocation {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            user: Some(user.id.clone()),
            last_used,
            quarantined: false,
            quarantine_end: None,
            deleted_user: None,
        }
    }

    /// Puts the row in quarantine the way Qlik does: detached from its user until lastUsed + 7 days.
    pub fn quarantine(&mut self, user: Option<&SimUser>) {
        self.quarantined = true;
        self.quarantine_end = Some(self.last_used + quarantine_period());
        if let Some(u) = user {
            self.deleted_user = Some((u.user_directory.clone(), u.user_id.clone()));
        }
        self.user = None;
    }

    pub fn to_json(&self, users: &[SimUser]) -> Value {
        let user = self
            .user
            .as_ref()
            .and_then(|id| users.iter().find(|u| &u.id == id))
            .map(SimUser::condensed)
            .unwrap_or(Value::Null);
        let (del_dir, del_id) = self.deleted_user.clone().unwrap_or_default();
        json!({
            "id": self.id,
            "createdDate": iso(self.last_used - Duration::days(200)),
            "modifiedDate": iso(self.last_used),
            "modifiedByUserName": "INTERNAL\\sa_repository",
            "user": user,
            "lastUsed": iso(self.last_used),
            "excess": false,
            "quarantined": self.quarantined,
            "quarantineEnd": self.quarantine_end.map(iso).unwrap_or_else(|| QLIK_NEVER.to_string()),
            "deletedUserId": del_id,
            "deletedUserDirectory": del_dir,
            "privileges": null,
            "schemaPath": match self.kind {
                LicenseType::Professional => "License.ProfessionalAccessType",
                LicenseType::Analyzer => "License.AnalyzerAccessType",
            }
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Population {
    pub users: Vec<SimUser>,
    pub allocations: Vec<SimAllocation>,
    pub professional_total: u32,
    pub analyzer_total: u32,
    pub analyzer_minutes_allocated: u32,
    pub analyzer_minutes_used: u32,
}

impl Population {
    /// No users or allocations, with room for `total` licenses of each type.
    pub fn empty(total: u32) -> Population {
        Population {
            professional_total: total,
            analyzer_total: total,
            ..Population::default()
        }
    }

    pub fn user(&self, id: &str) -> Option<&SimUser> {
        self.users.iter().find(|u| u.id.eq_ignore_ascii_case(id))
    }

    /// The overview as the QRS computes it; "used" counts allocations used in the last 24 hours.
    pub fn overview(&self, now: DateTime<Utc>) -> Value {
        let details = |kind: LicenseType, total: u32| {
            let rows = self.allocations.iter().filter(|a| a.kind == kind);
            let allocated = rows.clone().filter(|a| !a.quarantined).count() as u32;
            let quarantined = rows.clone().filter(|a| a.quarantined).count() as u32;
            let used = rows
                .filter(|a| !a.quarantined && now - a.last_used < Duration::hours(24))
                .count() as u32;
            let taken = allocated + quarantined;
            json!({ "enabled": true, "total": total, "allocated": allocated, "used": used,
                    "quarantined": quarantined, "excess": taken.saturating_sub(total),
                    "available": total.saturating_sub(taken), "schemaPath": "AccessTypeOverview.Details" })
        };
        json!({
            "totalTokens": 0, "availableTokens": 0, "tokensEnabled": false,
            "userAccess": { "enabled": false, "tokenCost": 1.0, "allocatedTokens": 0, "usedTokens": 0,
                            "quarantinedTokens": 0, "schemaPath": "AccessTypeOverview.UserAccessDetails" },
            "loginAccess": { "enabled": false, "tokenCost": 0.1, "allocatedTokens": 0, "usedTokens": 0,
                             "unavailableTokens": 0, "schemaPath": "AccessTypeOverview.LoginAccessDetails" },
            "professionalAccess": details(LicenseType::Professional, self.professional_total),
            "analyzerAccess": details(LicenseType::Analyzer, self.analyzer_total),
            "analyzerTimeAccess": { "enabled": true, "allocatedMinutes": self.analyzer_minutes_allocated,
                                    "usedMinutes": self.analyzer_minutes_used, "unavailableMinutes": 0,
                                    "schemaPath": "AccessTypeOverview.AnalyzerTimeAccessDetails" },
            "schemaPath": "AccessTypeOverview"
        })
    }
}

/// A GUID derived from a name, so tags and property definitions keep one id across users.
fn stable_id(kind: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{kind}:{}", name.to_lowercase()).as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}
