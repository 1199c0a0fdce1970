//! The edge keys of a frontend (PROXY protocol, per-IP limit, redirect, HSTS) and the admin
//! exposure rule (PRODUCT.md §3.2, §5): what serde cannot check about them.

use super::cidr::Cidr;
use super::locate::Seg;
use super::types::{AdminConfig, FrontendConfig, PoolConfig, SameSite};
use super::validate::{at, k, Report};
use std::net::SocketAddr;

/// Drain and reload are never open to the network by default: a non-loopback admin listener
/// needs a token for its POSTs or a peer allow list.
pub(super) fn check_admin_exposure(r: &mut Report<'_>, admin: &AdminConfig) {
    if let Some(allow) = &admin.allow {
        check_cidrs(r, &[k("admin"), k("allow")], allow);
        if allow.is_empty() {
            r.err(
                &[k("admin"), k("allow")],
                "an empty list would refuse every peer; list the networks allowed, like [\"127.0.0.1/32\"], or remove the key",
            );
        }
    }
    let exposed = admin
        .listen
        .parse::<SocketAddr>()
        .is_ok_and(|a| !a.ip().is_loopback());
    if exposed && admin.token_file.is_none() && admin.allow.is_none() {
        r.err(
            &[k("admin"), k("listen")],
            format!(
                "`{}` is not a loopback address: drain and reload would be open to the network; set token_file (a bearer token for POSTs) or allow (the peers' CIDRs), or listen on 127.0.0.1",
                admin.listen
            ),
        );
    }
}

pub(super) fn check_frontend_edge(
    r: &mut Report<'_>,
    base: &[Seg],
    fe: &FrontendConfig,
    pools: &[PoolConfig],
) {
    check_cidrs(
        r,
        &at(base, &[k("proxy_protocol_from")]),
        &fe.proxy_protocol_from,
    );
    if !fe.proxy_protocol && !fe.proxy_protocol_from.is_empty() {
        r.warn(
            &at(base, &[k("proxy_protocol_from")]),
            "has no effect without proxy_protocol = true",
        );
    }
    let tls = fe.tls.is_some();
    if let Some(hsts) = &fe.hsts {
        if !tls {
            r.err(
                &at(base, &[k("hsts")]),
                "HSTS is only honoured over https; set it on a TLS frontend (one with tls = { cert, key })",
            );
        }
        if hsts.trim().is_empty()
            || !hsts
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            r.err(
                &at(base, &[k("hsts")]),
                "must be a header value like \"max-age=31536000\" (printable ASCII, no line breaks)",
            );
        }
    }
    // An error, not a warning: a TLS listener that was meant to redirect would serve the site
    // instead, and the operator would not notice.
    if fe.redirect_https && tls {
        r.err(
            &at(base, &[k("redirect_https")]),
            "a TLS frontend already serves https; redirect_https belongs on the plain-HTTP frontend",
        );
    }
    if fe.https_port == 0 {
        r.err(
            &at(base, &[k("https_port")]),
            "must be a port from 1 to 65535",
        );
    }
    let plain_and_proxied = !tls && !fe.redirect_https;
    let pool = pools.iter().find(|p| p.name == fe.pool);
    if let Some(pool) = pool.filter(|p| plain_and_proxied && p.sticky.same_site == SameSite::None) {
        r.warn(
            &at(base, &[k("pool")]),
            format!(
                "frontend `{}` is plain HTTP but pool `{}` has same_site = \"None\" (the default), which makes the sticky cookie Secure; browsers refuse Secure cookies over http:// (except on localhost), so users lose stickiness. Set same_site = \"Lax\" in [pool.sticky], or serve this frontend over TLS",
                fe.name, pool.name
            ),
        );
    }
}

fn check_cidrs(r: &mut Report<'_>, path: &[Seg], list: &[Cidr]) {
    for (i, c) in list.iter().enumerate() {
        if let Err(e) = c.value() {
            r.err(&at(path, &[Seg::Index(i)]), e);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    fn with(admin: &str, frontend: &str, sticky: &str) -> String {
        format!(
            "[admin]\n{admin}\n\n[[frontend]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\npool = \"proxies\"\n{frontend}\n\n[[pool]]\nname = \"proxies\"\n  [pool.sticky]\n  {sticky}\n  [[pool.backend]]\n  id = \"node1\"\n  url = \"http://127.0.0.1:9001\"\n"
        )
    }

    fn errors(src: &str) -> Vec<ConfigError> {
        Config::parse(src, Path::new("."))
            .expect_err("should fail")
            .errors
    }

    fn has(errs: &[ConfigError], key: &str, words: &str) -> bool {
        errs.iter()
            .any(|e| e.key == key && e.message.contains(words) && e.line.is_some())
    }

    #[test]
    fn an_exposed_admin_needs_a_token_or_an_allow_list() {
        let lax = "same_site = \"Lax\"";
        let errs = errors(&with("listen = \"0.0.0.0:9090\"", "", lax));
        assert!(has(&errs, "admin.listen", "not a loopback"), "{errs:?}");
        for ok in [
            "listen = \"0.0.0.0:9090\"\nallow = [\"10.0.0.0/8\"]",
            "listen = \"[::1]:9090\"",
            "listen = \"127.0.0.2:9090\"",
        ] {
            Config::parse(&with(ok, "", lax), Path::new(".")).expect(ok);
        }
        let errs = errors(&with(
            "listen = \"0.0.0.0:9090\"\nallow = [\"10.0.0.0/8\", \"10.0.0.0/40\"]",
            "",
            lax,
        ));
        assert!(has(&errs, "admin.allow[1]", "not a CIDR"), "{errs:?}");
        let errs = errors(&with("allow = []", "", lax));
        assert!(has(&errs, "admin.allow", "empty list"), "{errs:?}");
    }

    #[test]
    fn edge_keys_are_checked_against_the_listener_kind() {
        let lax = "same_site = \"Lax\"";
        let errs = errors(&with(
            "",
            "hsts = \"max-age=1\"\nproxy_protocol = true\nproxy_protocol_from = [\"nope\"]\nhttps_port = 0",
            lax,
        ));
        assert!(has(&errs, "frontend[0].hsts", "TLS frontend"), "{errs:?}");
        assert!(
            has(&errs, "frontend[0].proxy_protocol_from[0]", "not a CIDR"),
            "{errs:?}"
        );
        assert!(has(&errs, "frontend[0].https_port", "port"), "{errs:?}");
        let tls = "tls = { cert = \"a.pem\", key = \"b.pem\" }";
        let errs = errors(&with("", &format!("{tls}\nredirect_https = true"), lax));
        assert!(
            has(&errs, "frontend[0].redirect_https", "already serves https"),
            "{errs:?}"
        );
        let errs = errors(&with("", &format!("{tls}\nhsts = \"a\\r\\nb\""), lax));
        assert!(has(&errs, "frontend[0].hsts", "header value"), "{errs:?}");
    }

    #[test]
    fn same_site_none_on_plain_http_is_a_warning() {
        let cfg = Config::parse(&with("", "", "same_site = \"None\""), Path::new(".")).unwrap();
        let w = &cfg.warnings;
        assert!(
            w.len() == 1 && w[0].key == "frontend[0].pool" && w[0].message.contains("stickiness"),
            "{w:?}"
        );
        for quiet in [
            ("", "same_site = \"Lax\""),
            ("redirect_https = true", "same_site = \"None\""),
        ] {
            let cfg = Config::parse(&with("", quiet.0, quiet.1), Path::new(".")).unwrap();
            assert!(cfg.warnings.is_empty(), "{quiet:?}: {:?}", cfg.warnings);
        }
    }
}
