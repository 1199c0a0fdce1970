//! This instance's copy of what the cluster keeps in etcd: members, the leader, drains and the
//! leader's published license status, loaded whole at each session start and then kept by the
//! watch. Learned sessions are not kept here: they go straight to the local tables.

use super::keys::{Entry, Keys};
use super::membership::MemberValue;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// (pool, backend) pairs drained site-wide.
pub type DrainSet = BTreeSet<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct LeaderKey {
    pub name: String,
    pub create_revision: i64,
    pub lease: i64,
}

#[derive(Default)]
pub(super) struct Mirror {
    pub members: BTreeMap<String, MemberValue>,
    pub leader: Option<LeaderKey>,
    pub drains: DrainSet,
    pub license: BTreeMap<String, Value>,
}

/// What one change touched, so only that is published again.
#[derive(Default, Debug)]
pub(super) struct Touched {
    pub view: bool,
    pub drains: bool,
    pub license: bool,
    /// (pool, session, backend) entries learned by some instance.
    pub sessions: Vec<(String, String, String)>,
}

/// One key's new value, or its deletion (`value` None).
pub(super) struct Change<'a> {
    pub key: &'a str,
    pub value: Option<&'a str>,
    pub create_revision: i64,
    pub lease: i64,
}

impl Mirror {
    pub(super) fn apply(&mut self, keys: &Keys, c: Change<'_>, t: &mut Touched) {
        match keys.parse(c.key) {
            Entry::Member(name) => {
                t.view = true;
                match c.value.and_then(|v| serde_json::from_str(v).ok()) {
                    Some(m) => {
                        self.members.insert(name.to_string(), m);
                    }
                    None => {
                        self.members.remove(name);
                    }
                }
            }
            Entry::Leader => {
                t.view = true;
                self.leader = c.value.map(|v| LeaderKey {
                    name: v.to_string(),
                    create_revision: c.create_revision,
                    lease: c.lease,
                });
            }
            Entry::Drain { pool, backend } => {
                t.drains = true;
                let k = (pool.to_string(), backend.to_string());
                if c.value.is_some() {
                    self.drains.insert(k);
                } else {
                    self.drains.remove(&k);
                }
            }
            Entry::License(part) => {
                t.license = true;
                match c.value.and_then(|v| serde_json::from_str(v).ok()) {
                    Some(v) => {
                        self.license.insert(part.to_string(), v);
                    }
                    None => {
                        self.license.remove(part);
                    }
                }
            }
            Entry::Session { pool, session } => {
                // An expired or deleted entry stays in the local tables until their own idle time.
                if let Some(backend) = c.value {
                    t.sessions
                        .push((pool.to_string(), session.to_string(), backend.to_string()));
                }
            }
            Entry::Other => {}
        }
    }

    /// Starts over from a full read (a new session): whatever the watch missed is replaced.
    pub(super) fn reset(&mut self, t: &mut Touched) {
        *self = Mirror::default();
        t.view = true;
        t.drains = true;
        t.license = true;
    }
}
