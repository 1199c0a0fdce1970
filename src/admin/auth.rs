//! The admin bearer token, compared in constant time. It is read from `[admin] token_file` by
//! `config::admin_token`, at start and on every reload.

use sha2::{Digest, Sha256};

/// Compares digests so the time taken says nothing about how much of the token matched, or
/// about its length.
pub fn token_matches(expected: &str, given: &str) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

pub enum Verdict {
    Allowed,
    Missing,
    Wrong,
}

/// Checks an `Authorization` header value against the expected token.
pub fn check(expected: Option<&str>, authorization: Option<&[u8]>) -> Verdict {
    let Some(expected) = expected else {
        return Verdict::Allowed;
    };
    let Some(value) = authorization else {
        return Verdict::Missing;
    };
    let value = String::from_utf8_lossy(value);
    let Some(given) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return Verdict::Missing;
    };
    if token_matches(expected, given.trim()) {
        Verdict::Allowed
    } else {
        Verdict::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_checks() {
        assert!(matches!(check(None, None), Verdict::Allowed));
        assert!(matches!(check(Some("s3cret"), None), Verdict::Missing));
        assert!(matches!(
            check(Some("s3cret"), Some(b"Basic abc")),
            Verdict::Missing
        ));
        assert!(matches!(
            check(Some("s3cret"), Some(b"Bearer s3cre")),
            Verdict::Wrong
        ));
        assert!(matches!(
            check(Some("s3cret"), Some(b"Bearer s3cret")),
            Verdict::Allowed
        ));
    }
}
