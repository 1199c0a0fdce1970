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
    check_cidrs(r, &at(base, &[k("proxy_protocol_from")]), &fe.proxy_protocol_from);
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
        if hsts.trim().is_empty() || !hsts.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
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
        r.err(&at(base, &[k("https_port")]), "must be a port from 1 to 65535");
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
