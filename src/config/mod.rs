//! Loading the TOML config: parse, reject unknown keys with the nearest valid name, fill
//! defaults, validate, and report every error with its key path and line.

pub mod admin_token;
pub mod cidr;
pub mod cluster;
pub mod duration;
pub mod locate;
pub mod parsed;
pub mod schedule;
pub mod types;
pub mod url;
mod validate;
mod validate_edge;

pub use cluster::{ClusterConfig, ClusterTls};
pub use duration::Dur;
pub use parsed::Parsed;
pub use types::*;
pub use url::BackendUrl;

use locate::{line_of_offset, path_text, Locator};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config file: where it is and what would be right.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (Some(line), false) => write!(f, "line {line}: {}: {}", self.key, self.message),
            (Some(line), true) => write!(f, "line {line}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.key, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub file: Option<PathBuf>,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &self.file {
                Some(file) => write!(f, "{}: {e}", file.display())?,
                None => write!(f, "{e}")?,
            }
        }
        Ok(())
    }
}

/// A loaded, validated config: the typed file plus where it came from.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: FileConfig,
    /// The config file, when it came from one.
    pub path: Option<PathBuf>,
    /// Folder that relative paths in the file resolve against.
    pub dir: PathBuf,
    /// sha256 of the source text, shown in the status API.
    pub hash: String,
    /// Files the config names that do not exist yet. `check` prints them as warnings (a
    /// reference config names the QMC export before it is copied in); starting refuses them.
    pub missing_files: Vec<ConfigError>,
    /// Allowed but likely not meant (e.g. a cookie browsers will refuse); `check` prints them.
    pub warnings: Vec<ConfigError>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: Some(path.to_path_buf()),
            errors: vec![ConfigError {
                key: String::new(),
                line: None,
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let mut cfg = Config::parse(&src, &dir).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates config text; relative paths resolve against `dir`.
    pub fn parse(src: &str, dir: &Path) -> Result<Config, ConfigErrors> {
        let (file, mut errors) = parse_collecting(src);
        let mut missing_files = Vec::new();
        let mut warnings = Vec::new();
        if let Some(file) = &file {
            let found = validate::validate(file, dir, &Locator::new(src));
            errors.extend(found.errors);
            missing_files = found.missing_files;
            warnings = found.warnings;
        }
        match file {
            Some(file) if errors.is_empty() => Ok(Config {
                file,
                path: None,
                dir: dir.to_path_buf(),
                hash: hex(&Sha256::digest(src.as_bytes())),
                missing_files,
                warnings,
            }),
            _ => Err(ConfigErrors { file: None, errors }),
        }
    }

    /// A path from the file, resolved against the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve(&self.dir, p)
    }
}

pub fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deserializes, and on a key-level error blanks that key out of the text and tries again, so a
/// file with several mistakes reports all of them in one `check` run; the file that finally
/// parses is still checked for meaning (and refused, since errors were found). Blanking keeps every byte
/// offset, so later errors still point at the right lines.
fn parse_collecting(src: &str) -> (Option<FileConfig>, Vec<ConfigError>) {
    if let Err(e) = toml_edit::ImDocument::parse(src) {
        let line = e.span().map(|s| line_of_offset(src, s.start));
        let message = e.message().trim().to_string();
        return (
            None,
            vec![ConfigError {
                key: String::new(),
                line,
                message: format!("not valid TOML: {message}"),
            }],
        );
    }
    let mut text = src.to_string();
    let mut errors = Vec::new();
    for _ in 0..64 {
        match toml::from_str::<FileConfig>(&text) {
            Ok(file) => return (Some(file), errors),
            Err(e) => {
                let locator = Locator::new(&text);
                let span = e.span();
                let located = span.as_ref().and_then(|s| locator.path_at(s.start));
                let line = span.as_ref().map(|s| line_of_offset(&text, s.start));
                let key = located
                    .as_ref()
                    .map(|(p, _)| path_text(p))
                    .unwrap_or_default();
                errors.push(ConfigError {
                    key,
                    line,
                    message: friendly_message(e.message()),
                });
                match located {
                    Some((_, range)) => {
                        let blank: String = text[range.clone()]
                            .chars()
                            .map(|c| if c == '\n' { '\n' } else { ' ' })
                            .collect();
                        text.replace_range(range, &blank);
                    }
                    None => return (None, errors),
                }
            }
        }
    }
    (None, errors)
}

/// serde names the offending word first and the valid ones after it, all in backticks:
/// "unknown field `listn`, expected one of `listen`, `pool`".
fn backticked<'a>(raw: &'a str, prefix: &str) -> Option<(&'a str, Vec<&'a str>)> {
    let (name, tail) = raw.strip_prefix(prefix)?.split_once('`')?;
    let expected = tail.split('`').skip(1).step_by(2).collect();
    Some((name, expected))
}

/// The candidate most like `name`, when it is alike enough to suggest.
pub(crate) fn nearest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|cand| (strsim::jaro_winkler(name, cand), cand))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score > 0.7)
        .map(|(_, cand)| cand)
}

/// Rewrites serde's wording into what the reader should do, with the nearest valid key.
fn friendly_message(raw: &str) -> String {
    let raw = raw.trim();
    if let Some((name, expected)) = backticked(raw, "unknown field `") {
        return match nearest(name, expected.iter().copied()) {
            Some(cand) => format!("unknown key `{name}`; did you mean `{cand}`?"),
            None => format!(
                "unknown key `{name}`; valid keys here: {}",
                expected.join(", ")
            ),
        };
    }
    if let Some((name, expected)) = backticked(raw, "unknown variant `") {
        return format!(
            "`{name}` is not allowed here; expected one of: {}",
            expected.join(", ")
        );
    }
    raw.to_string()
}

#[cfg(test)]
mod tests;
