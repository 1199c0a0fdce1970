//! The admin bearer token named by `[admin] token_file`: read at start and on every reload, so a
//! changed file takes effect with the reload and an unreadable or empty one fails it.

use super::{Config, ConfigError, ConfigErrors};

/// The token the config asks for, or `None` when POSTs are open.
pub fn load_token(config: &Config) -> Result<Option<String>, ConfigErrors> {
    let Some(file) = config
        .file
        .admin
        .as_ref()
        .and_then(|a| a.token_file.as_ref())
    else {
        return Ok(None);
    };
    let path = config.resolve(file);
    let fail = |message: String| ConfigErrors {
        file: config.path.clone(),
        errors: vec![ConfigError {
            key: "admin.token_file".to_string(),
            line: None,
            message,
        }],
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail(format!(
            "{} is empty; put the token on its first line",
            path.display()
        )));
    }
    Ok(Some(token.to_string()))
}
