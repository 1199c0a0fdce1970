//! Where everything lives in etcd, under the configured prefix.

pub(super) struct Keys {
    prefix: String,
}

/// What a key under the prefix holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Entry<'a> {
    Member(&'a str),
    Leader,
    Drain { pool: &'a str, backend: &'a str },
    Session { pool: &'a str, session: &'a str },
    License(&'a str),
    Other,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }
    pub(super) fn member(&self, name: &str) -> String {
        format!("{}members/{name}", self.prefix)
    }
    pub(super) fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }
    pub(super) fn drain(&self, pool: &str, backend: &str) -> String {
        format!("{}drain/{pool}/{backend}", self.prefix)
    }
    pub(super) fn session(&self, pool: &str, session: &str) -> String {
        format!("{}sessions/{pool}/{session}", self.prefix)
    }
    pub(super) fn license(&self, part: &str) -> String {
        format!("{}license/{part}", self.prefix)
    }

    pub(super) fn parse<'a>(&self, key: &'a str) -> Entry<'a> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return Entry::Other;
        };
        if rest == "leader" {
            return Entry::Leader;
        }
        let Some((kind, rest)) = rest.split_once('/') else {
            return Entry::Other;
        };
        match kind {
            "members" if !rest.is_empty() => Entry::Member(rest),
            "license" if !rest.is_empty() => Entry::License(rest),
            "drain" => match rest.split_once('/') {
                Some((pool, backend)) if !pool.is_empty() && !backend.is_empty() => {
                    Entry::Drain { pool, backend }
                }
                _ => Entry::Other,
            },
            "sessions" => match rest.split_once('/') {
                Some((pool, session)) if !pool.is_empty() && !session.is_empty() => {
                    Entry::Session { pool, session }
                }
                _ => Entry::Other,
            },
            _ => Entry::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_reads_back_as_what_it_holds() {
        let k = Keys::new("/qlik-lb/");
        assert_eq!(k.parse(&k.member("lb-a")), Entry::Member("lb-a"));
        assert_eq!(k.parse(&k.leader()), Entry::Leader);
        assert_eq!(
            k.parse(&k.drain("proxies", "node1")),
            Entry::Drain {
                pool: "proxies",
                backend: "node1"
            }
        );
        assert_eq!(
            k.parse(&k.session("proxies", "a/b=c")),
            Entry::Session {
                pool: "proxies",
                session: "a/b=c"
            }
        );
        assert_eq!(k.parse(&k.license("snapshot")), Entry::License("snapshot"));
        assert_eq!(k.parse("/other/leader"), Entry::Other);
        assert_eq!(k.parse("/qlik-lb/drain/only-pool"), Entry::Other);
    }
}
