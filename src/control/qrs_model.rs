//! The QRS answers the license jobs read, as typed data. Only the fields the jobs use are
//! required; anything else in the payload is ignored.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenseType {
    Professional,
    Analyzer,
}

impl LicenseType {
    pub const ALL: [LicenseType; 2] = [LicenseType::Professional, LicenseType::Analyzer];

    /// The metric label and audit name.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseType::Professional => "professional",
            LicenseType::Analyzer => "analyzer",
        }
    }

    /// `/qrs/license/<table>/...`
    pub fn table(self) -> &'static str {
        match self {
            LicenseType::Professional => "professionalaccesstype",
            LicenseType::Analyzer => "analyzeraccesstype",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationRow {
    pub id: String,
    pub user: Option<UserRef>,
    /// Kept as text: a row whose date cannot be read is an error for that row, not for the run.
    pub last_used: String,
    #[serde(default)]
    pub quarantined: bool,
    #[serde(default)]
    pub quarantine_end: Option<String>,
    #[serde(default)]
    pub deleted_user_id: Option<String>,
    #[serde(default)]
    pub deleted_user_directory: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    pub id: String,
    pub user_id: String,
    pub user_directory: String,
}

/// The fields the never-release rules read are `None` when the record lacks them (or holds
/// `null`): an absent list is not an empty one, and a rule must not read "no tags" into it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QrsUser {
    pub id: String,
    pub user_id: String,
    pub user_directory: String,
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
    #[serde(default)]
    pub custom_properties: Option<Vec<CustomPropertyValue>>,
    #[serde(default)]
    pub inactive: Option<bool>,
    #[serde(default)]
    pub blacklisted: Option<bool>,
    #[serde(default)]
    pub removed_externally: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tag {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CustomPropertyValue {
    pub value: String,
    pub definition: CustomPropertyDefinition,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CustomPropertyDefinition {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessTypeOverview {
    pub total_tokens: f64,
    pub available_tokens: f64,
    pub professional_access: AccessDetails,
    pub analyzer_access: AccessDetails,
    pub analyzer_time_access: AnalyzerTimeAccess,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub struct AccessDetails {
    pub total: i64,
    pub allocated: i64,
    pub used: i64,
    pub quarantined: i64,
    pub excess: i64,
    pub available: i64,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AnalyzerTimeAccess {
    pub allocated_minutes: i64,
    pub used_minutes: i64,
    pub unavailable_minutes: i64,
}
