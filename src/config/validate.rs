//! Semantic checks that serde cannot express: references between sections, addresses, URLs,
//! ranges, files. Each error names its key path and line.

use super::locate::{path_text, Locator, Seg};
use super::types::*;

mod cluster;
use super::url::BackendUrl;
use super::ConfigError;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

pub(super) struct Report<'a> {
    locator: &'a Locator<'a>,
    errors: Vec<ConfigError>,
    /// Files named by the config but absent now; needed only when the instance starts.
    missing_files: Vec<ConfigError>,
    /// Allowed, but likely not what the operator wants; `check` prints them.
    warnings: Vec<ConfigError>,
}

impl Report<'_> {
    fn found(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: path_text(path),
            line: self.locator.line(path),
            message: message.into(),
        }
    }

    pub(super) fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        let e = self.found(path, message);
        self.errors.push(e);
    }

    pub(super) fn warn(&mut self, path: &[Seg], message: impl Into<String>) {
        let w = self.found(path, message);
        self.warnings.push(w);
    }
}

/// What validation found besides the typed file.
pub struct Findings {
    pub errors: Vec<ConfigError>,
    pub missing_files: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

pub(super) fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

pub(super) fn at(base: &[Seg], more: &[Seg]) -> Vec<Seg> {
    base.iter().chain(more.iter()).cloned().collect()
}

pub fn validate(file: &FileConfig, dir: &Path, locator: &Locator<'_>) -> Findings {
    let mut r = Report {
        locator,
        errors: Vec::new(),
        missing_files: Vec::new(),
        warnings: Vec::new(),
    };
    if file.frontend.is_empty()
        && file.lb_module.is_none()
        && file.license.is_none()
        && file.admin.is_none()
    {
        r.err(
            &[],
            "the file configures nothing; add at least one of [[frontend]], [lb_module], [license.*] or [admin]",
        );
    }
    if let Some(admin) = &file.admin {
        check_listen(&mut r, &[k("admin"), k("listen")], &admin.listen);
        if let Some(token) = &admin.token_file {
            check_file(&mut r, &[k("admin"), k("token_file")], dir, token);
        }
        super::validate_edge::check_admin_exposure(&mut r, admin);
    }
    let pool_names = check_pools(&mut r, file, dir);
    let mut frontend_names = HashSet::new();
    for (i, fe) in file.frontend.iter().enumerate() {
        let base = [k("frontend"), Seg::Index(i)];
        if fe.name.is_empty() || !frontend_names.insert(fe.name.clone()) {
            r.err(
                &at(&base, &[k("name")]),
                format!("frontend name `{}` must be non-empty and unique", fe.name),
            );
        }
        check_listen(&mut r, &at(&base, &[k("listen")]), &fe.listen);
        if !pool_names.contains(&fe.pool) {
            r.err(
                &at(&base, &[k("pool")]),
                unknown_pool(&fe.pool, &pool_names),
            );
        }
        if let Some(tls) = &fe.tls {
            check_frontend_tls(&mut r, &at(&base, &[k("tls")]), dir, tls);
        }
        if fe.max_header_bytes < 1024 {
            r.err(
                &at(&base, &[k("max_header_bytes")]),
                "must be at least 1024 (Qlik sends up to 16 KiB of headers)",
            );
        }
        if fe.max_connections == 0 {
            r.err(&at(&base, &[k("max_connections")]), "must be at least 1");
        }
        super::validate_edge::check_frontend_edge(&mut r, &base, fe, &file.pool);
        for (what, d) in [
            ("header_timeout", fe.header_timeout),
            ("keepalive_timeout", fe.keepalive_timeout),
            ("tunnel_idle_timeout", fe.tunnel_idle_timeout),
            ("send_timeout", fe.send_timeout),
        ] {
            if d.get().is_zero() {
                r.err(&at(&base, &[k(what)]), "must be longer than 0s");
            }
        }
    }
    if let Some(lb) = &file.lb_module {
        check_listen(&mut r, &[k("lb_module"), k("listen")], &lb.listen);
        if !pool_names.contains(&lb.pool) {
            r.err(
                &[k("lb_module"), k("pool")],
                unknown_pool(&lb.pool, &pool_names),
            );
        }
        if !lb.base_path.starts_with('/') {
            r.err(
                &[k("lb_module"), k("base_path")],
                format!(
                    "`{}` must start with `/`, like \"/\" or \"/qlb/\"",
                    lb.base_path
                ),
            );
        }
        if let Some(tls) = &lb.tls {
            check_file(
                &mut r,
                &[k("lb_module"), k("tls"), k("cert")],
                dir,
                &tls.cert,
            );
            check_file(&mut r, &[k("lb_module"), k("tls"), k("key")], dir, &tls.key);
        }
    }
    if let Some(certs) = &file.qlik_certs {
        for (what, p) in [
            ("cert", &certs.cert),
            ("key", &certs.key),
            ("ca", &certs.ca),
        ] {
            check_file(&mut r, &[k("qlik_certs"), k(what)], dir, p);
        }
    }
    if let Some(qrs) = &file.qrs {
        match BackendUrl::parse(&qrs.url) {
            Ok(u) if !u.tls => r.err(
                &[k("qrs"), k("url")],
                "the QRS only speaks https (mutual TLS on port 4242)",
            ),
            Ok(_) => {}
            Err(e) => r.err(&[k("qrs"), k("url")], e),
        }
        if qrs
            .user
            .split_once('\\')
            .is_none_or(|(d, u)| d.is_empty() || u.is_empty())
        {
            r.err(
                &[k("qrs"), k("user")],
                format!(
                    "`{}` must be DIRECTORY\\userid, like \"INTERNAL\\\\sa_api\"",
                    qrs.user
                ),
            );
        }
        if file.qlik_certs.is_none() {
            r.err(
                &[k("qrs")],
                "the QRS needs [qlik_certs] (the client certificate exported from the QMC)",
            );
        }
    }
    if let Some(license) = &file.license {
        check_license(&mut r, file, license);
    }
    if let Some(c) = &file.cluster {
        cluster::check_cluster(&mut r, c, dir);
    }
    if let Some(log) = &file.access_log {
        if log.path.as_os_str().is_empty() {
            r.err(
                &[k("access_log"), k("path")],
                "must name a file (relative to the config folder) or \"stderr\"",
            );
        }
    }
    Findings {
        errors: r.errors,
        missing_files: r.missing_files,
        warnings: r.warnings,
    }
}

fn unknown_pool(name: &str, pools: &HashSet<String>) -> String {
    let mut names: Vec<&str> = pools.iter().map(String::as_str).collect();
    names.sort();
    match super::nearest(name, names.iter().copied()) {
        Some(n) => format!("no [[pool]] is named `{name}`; did you mean `{n}`?"),
        None => format!("no [[pool]] is named `{name}`; pools: {}", names.join(", ")),
    }
}

fn check_listen(r: &mut Report<'_>, path: &[Seg], text: &str) {
    if text.parse::<SocketAddr>().is_err() {
        r.err(
            path,
            format!("`{text}` is not an address to listen on; write IP:PORT, like \"0.0.0.0:443\""),
        );
    }
}

fn check_file(r: &mut Report<'_>, path: &[Seg], dir: &Path, p: &Path) {
    let full = super::resolve(dir, p);
    if !full.is_file() {
        r.missing_files.push(ConfigError {
            key: path_text(path),
            line: r.locator.line(path),
            message: format!("file `{}` does not exist", full.display()),
        });
    }
}

/// Exactly one shape: `cert` + `key`, or a non-empty `certs` list of pairs.
fn check_frontend_tls(r: &mut Report<'_>, base: &[Seg], dir: &Path, tls: &FrontendTls) {
    let single = tls.cert.is_some() || tls.key.is_some();
    if single && !tls.certs.is_empty() {
        r.err(
            base,
            "write either cert + key or certs = [ {cert, key}, ... ], not both",
        );
        return;
    }
    if !single && tls.certs.is_empty() {
        r.err(
            base,
            "needs cert + key, or certs = [ {cert, key}, ... ] with at least one pair",
        );
        return;
    }
    if single && (tls.cert.is_none() || tls.key.is_none()) {
        let absent = if tls.cert.is_none() { "cert" } else { "key" };
        r.err(
            &at(base, &[k(absent)]),
            "cert and key go together; this one is missing",
        );
        return;
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        check_file(r, &at(base, &[k("cert")]), dir, cert);
        check_file(r, &at(base, &[k("key")]), dir, key);
    }
    for (i, pair) in tls.certs.iter().enumerate() {
        let pbase = at(base, &[k("certs"), Seg::Index(i)]);
        check_file(r, &at(&pbase, &[k("cert")]), dir, &pair.cert);
        check_file(r, &at(&pbase, &[k("key")]), dir, &pair.key);
    }
}

/// `[pool.tls]`: a client certificate needs its key; a server name must be a DNS name or an IP.
fn check_pool_tls(r: &mut Report<'_>, base: &[Seg], dir: &Path, tls: &PoolTlsConfig) {
    if !tls.verify {
        r.warn(
            &at(base, &[k("verify")]),
            "is false: this pool's https backends are not verified; anyone on the path can pose as them",
        );
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            check_file(r, &at(base, &[k("cert")]), dir, cert);
            check_file(r, &at(base, &[k("key")]), dir, key);
        }
        (None, None) => {}
        (Some(_), None) => r.err(
            &at(base, &[k("key")]),
            "a client certificate needs its key: set both cert and key, or neither",
        ),
        (None, Some(_)) => r.err(
            &at(base, &[k("cert")]),
            "a client key needs its certificate: set both cert and key, or neither",
        ),
    }
    if let Some(ca) = &tls.ca {
        check_file(r, &at(base, &[k("ca")]), dir, ca);
    }
    if let Some(name) = &tls.server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            r.err(
                &at(base, &[k("server_name")]),
                format!("`{name}` is not a DNS name or IP address"),
            );
        }
    }
}

fn is_cookie_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_pools(r: &mut Report<'_>, file: &FileConfig, dir: &Path) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, pool) in file.pool.iter().enumerate() {
        let base = [k("pool"), Seg::Index(i)];
        if pool.name.is_empty() || !names.insert(pool.name.clone()) {
            r.err(
                &at(&base, &[k("name")]),
                format!("pool name `{}` must be non-empty and unique", pool.name),
            );
        }
        if pool.backend.is_empty() {
            r.err(
                &base,
                format!("pool `{}` has no [[pool.backend]]", pool.name),
            );
        }
        let sticky = &pool.sticky;
        if !is_cookie_token(&sticky.cookie) {
            r.err(
                &at(&base, &[k("sticky"), k("cookie")]),
                format!(
                    "`{}` is not a valid cookie name (letters, digits, - _ . only)",
                    sticky.cookie
                ),
            );
        }
        if sticky.same_site == SameSite::None && sticky.secure == SecureMode::Never {
            r.err(
                &at(&base, &[k("sticky"), k("secure")]),
                "same_site = \"None\" needs Secure (browsers drop it otherwise); use secure = \"auto\" or \"always\", or same_site = \"Lax\"",
            );
        }
        if let Some(secret) = &sticky.secret_file {
            check_file(r, &at(&base, &[k("sticky"), k("secret_file")]), dir, secret);
        }
        check_pool_tls(r, &at(&base, &[k("tls")]), dir, &pool.tls);
        let health = &pool.health;
        if health.rise == 0 {
            r.err(&at(&base, &[k("health"), k("rise")]), "must be at least 1");
        }
        if health.fall == 0 {
            r.err(&at(&base, &[k("health"), k("fall")]), "must be at least 1");
        }
        if health.interval.get().is_zero() {
            r.err(
                &at(&base, &[k("health"), k("interval")]),
                "must be longer than 0s",
            );
        }
        if health.timeout.get().is_zero() {
            r.err(
                &at(&base, &[k("health"), k("timeout")]),
                "must be longer than 0s",
            );
        }
        if !health.path.starts_with('/') {
            r.err(
                &at(&base, &[k("health"), k("path")]),
                format!("`{}` must start with `/`", health.path),
            );
        }
        let needs_certs = health.check == CheckKind::Qix
            || pool.backend.iter().any(|b| {
                b.engine_health
                    .as_deref()
                    .and_then(|u| BackendUrl::parse(u).ok())
                    .is_some_and(|u| u.tls)
            });
        if needs_certs && file.qlik_certs.is_none() {
            r.err(
                &at(&base, &[k("health"), k("check")]),
                "engine health over https needs [qlik_certs] (client.pem, client_key.pem, root.pem from the QMC)",
            );
        }
        let mut ids = HashSet::new();
        for (j, b) in pool.backend.iter().enumerate() {
            let bpath = at(&base, &[k("backend"), Seg::Index(j)]);
            if !is_cookie_token(&b.id) || b.id.contains('.') {
                r.err(
                    &at(&bpath, &[k("id")]),
                    format!(
                        "`{}` is not a usable id: letters, digits, - and _ only",
                        b.id
                    ),
                );
            } else if !ids.insert(b.id.clone()) {
                r.err(
                    &at(&bpath, &[k("id")]),
                    format!(
                        "backend id `{}` appears twice in pool `{}`",
                        b.id, pool.name
                    ),
                );
            }
            if let Err(e) = BackendUrl::parse(&b.url) {
                r.err(&at(&bpath, &[k("url")]), e);
            }
            if b.weight == 0 {
                r.err(
                    &at(&bpath, &[k("weight")]),
                    "must be at least 1 (drain a backend instead of weighting it 0)",
                );
            }
            if let Some(eh) = &b.engine_health {
                if let Err(e) = BackendUrl::parse(eh) {
                    r.err(&at(&bpath, &[k("engine_health")]), e);
                }
            }
        }
    }
    names
}

fn check_license(r: &mut Report<'_>, file: &FileConfig, license: &LicenseConfig) {
    let any_enabled = license.monitor.as_ref().is_some_and(|m| m.enabled)
        || license.release.as_ref().is_some_and(|m| m.enabled);
    if any_enabled && file.qrs.is_none() {
        r.err(
            &[k("license")],
            "the license jobs need a [qrs] section (url of the central node's QRS)",
        );
    }
    // Parsed when the file was read; reported here with the key's line.
    if let Some(m) = &license.monitor {
        if let Err(e) = m.schedule.value() {
            r.err(&[k("license"), k("monitor"), k("schedule")], e);
        }
    }
    if let Some(rel) = &license.release {
        let base = [k("license"), k("release")];
        if let Err(e) = rel.schedule.value() {
            r.err(&at(&base, &[k("schedule")]), e);
        }
        if let Err(e) = rel.timezone.value() {
            r.err(&at(&base, &[k("timezone")]), e);
        }
        for (what, t) in [
            ("professional", &rel.professional),
            ("analyzer", &rel.analyzer),
        ] {
            if t.threshold_days == 0 {
                r.err(
                    &at(&base, &[k(what), k("threshold_days")]),
                    "must be at least 1 day",
                );
            }
        }
        for (j, u) in rel.never.users.iter().enumerate() {
            if u.split_once('\\')
                .is_none_or(|(d, id)| d.is_empty() || id.is_empty())
            {
                r.err(
                    &at(&base, &[k("never"), k("users"), Seg::Index(j)]),
                    format!("`{u}` must be DIRECTORY\\userid"),
                );
            }
        }
    }
}
