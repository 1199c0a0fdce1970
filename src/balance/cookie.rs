//! The sticky cookie value: the backend id, plus an HMAC-SHA256 tag when a secret is set, so
//! every instance sharing the secret routes the same cookie the same way and nobody can forge one.

use crate::config::{SameSite, SecureMode, StickyConfig};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the HMAC kept in the cookie: 128 bits, as in signed session cookies elsewhere.
const TAG_BYTES: usize = 16;

#[derive(Clone)]
pub struct CookieCodec {
    key: Option<HmacSha256>,
    pool: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// The id the cookie names (signature checked when signing is on).
    Id(&'a str),
    /// Bad signature, missing signature, or not a value we could have written.
    Invalid,
}

impl CookieCodec {
    pub fn new(pool: &str, secret: Option<&[u8]>) -> CookieCodec {
        CookieCodec {
            key: secret.map(|s| HmacSha256::new_from_slice(s).expect("HMAC takes any key length")),
            pool: pool.to_string(),
        }
    }

    fn tag(&self, key: &HmacSha256, id: &str) -> [u8; 32] {
        let mut mac = key.clone();
        mac.update(self.pool.as_bytes());
        mac.update(b"\0");
        mac.update(id.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn encode(&self, id: &str) -> String {
        match &self.key {
            None => id.to_string(),
            Some(key) => {
                let tag = self.tag(key, id);
                format!("{id}.{}", URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]))
            }
        }
    }

    pub fn decode<'a>(&self, value: &'a str) -> Decoded<'a> {
        match &self.key {
            None => {
                if value.is_empty() || value.contains('.') {
                    Decoded::Invalid
                } else {
                    Decoded::Id(value)
                }
            }
            Some(key) => {
                let Some((id, tag_text)) = value.split_once('.') else {
                    return Decoded::Invalid;
                };
                let Ok(given) = URL_SAFE_NO_PAD.decode(tag_text) else {
                    return Decoded::Invalid;
                };
                let mut mac = key.clone();
                mac.update(self.pool.as_bytes());
                mac.update(b"\0");
                mac.update(id.as_bytes());
                // verify_truncated_left is constant-time.
                if given.len() == TAG_BYTES && mac.verify_truncated_left(&given).is_ok() {
                    Decoded::Id(id)
                } else {
                    Decoded::Invalid
                }
            }
        }
    }
}

/// The `Set-Cookie` value pinning a user with cookie `value`, with the configured attributes.
pub fn set_cookie_line(sticky: &StickyConfig, value: &str, client_tls: bool) -> String {
    let same_site = match sticky.same_site {
        SameSite::None => "None",
        SameSite::Lax => "Lax",
        SameSite::Strict => "Strict",
    };
    // SameSite=None is only honoured by browsers together with Secure.
    let secure = match sticky.secure {
        SecureMode::Always => true,
        SecureMode::Never => false,
        SecureMode::Auto => client_tls || sticky.same_site == SameSite::None,
    };
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite={same_site}{}",
        sticky.cookie,
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_round_trip() {
        let c = CookieCodec::new("p", None);
        assert_eq!(c.encode("node1"), "node1");
        assert_eq!(c.decode("node1"), Decoded::Id("node1"));
    }

    #[test]
    fn signed_round_trip_is_stable() {
        let a = CookieCodec::new("p", Some(b"secret"));
        let b = CookieCodec::new("p", Some(b"secret"));
        let v = a.encode("node1");
        assert_eq!(v, b.encode("node1"), "two instances with one secret agree");
        assert!(v.starts_with("node1."));
        assert_eq!(b.decode(&v), Decoded::Id("node1"));
    }

    #[test]
    fn tampered_id_or_tag_is_invalid() {
        let c = CookieCodec::new("p", Some(b"secret"));
        let v = c.encode("node1");
        let tag = v.split_once('.').unwrap().1;
        assert_eq!(c.decode(&format!("node2.{tag}")), Decoded::Invalid);
        let mut bad = v.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            c.decode(std::str::from_utf8(&bad).unwrap()),
            Decoded::Invalid
        );
        assert_eq!(
            c.decode("node1"),
            Decoded::Invalid,
            "unsigned value when signing is on"
        );
    }

    #[test]
    fn wrong_key_is_invalid() {
        let a = CookieCodec::new("p", Some(b"secret"));
        let b = CookieCodec::new("p", Some(b"other"));
        assert_eq!(b.decode(&a.encode("node1")), Decoded::Invalid);
    }

    #[test]
    fn garbage_is_invalid() {
        let c = CookieCodec::new("p", Some(b"secret"));
        for g in ["", ".", "a.b.c", "node1.!!!", "node1.", "\u{1F600}.x"] {
            assert_eq!(c.decode(g), Decoded::Invalid, "{g:?}");
        }
        let u = CookieCodec::new("p", None);
        assert_eq!(u.decode(""), Decoded::Invalid);
    }
}
