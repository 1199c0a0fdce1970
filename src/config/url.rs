//! Backend URLs: `http://host:port` or `https://host:port`, nothing after the authority.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix as written (e.g. `/engine/healthcheck` for `engine_health`), empty when none.
    pub path: String,
}

impl BackendUrl {
    pub fn parse(text: &str) -> Result<BackendUrl, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("`{text}` is not a URL ({e}); write it like \"https://qs-node1.corp.example:443\""))?;
        let tls = match uri.scheme_str() {
            Some("https") | Some("wss") => true,
            Some("http") | Some("ws") => false,
            _ => {
                return Err(format!(
                    "`{text}` needs a scheme: http:// or https://"
                ))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("`{text}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("/") | Some("") => String::new(),
            Some(p) => p.to_string(),
        };
        Ok(BackendUrl {
            tls,
            host,
            port,
            path,
        })
    }

    /// `host:port` for connecting (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}
