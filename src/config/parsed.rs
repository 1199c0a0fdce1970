//! Values written as text and parsed once, when the file is loaded: schedules and time zones.
//! Deserializing never fails on a bad value; validation reports the parse error with the key's
//! line, and whatever runs later (the license jobs) uses the parsed value without parsing again.

use serde::{Deserialize, Deserializer};

/// Text the config parses into a `T`.
pub trait FromConfigText: Sized {
    fn from_config_text(text: &str) -> Result<Self, String>;
}

/// The text as written and what it parsed to (or why not).
#[derive(Debug, Clone)]
pub struct Parsed<T> {
    text: String,
    value: Result<T, String>,
}

impl<T: FromConfigText> Parsed<T> {
    pub fn new(text: &str) -> Parsed<T> {
        Parsed {
            text: text.to_string(),
            value: T::from_config_text(text),
        }
    }
}

impl<T> Parsed<T> {
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed value; the error is what validation reported when the file was loaded.
    pub fn value(&self) -> Result<&T, &str> {
        self.value.as_ref().map_err(|e| e.as_str())
    }
}

impl<T: FromConfigText> From<&str> for Parsed<T> {
    fn from(text: &str) -> Parsed<T> {
        Parsed::new(text)
    }
}

impl<'de, T: FromConfigText> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Parsed<T>, D::Error> {
        Ok(Parsed::new(&String::deserialize(d)?))
    }
}

impl FromConfigText for super::schedule::Schedule {
    fn from_config_text(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl FromConfigText for chrono_tz::Tz {
    fn from_config_text(text: &str) -> Result<Self, String> {
        text.parse().map_err(|_| {
            format!("`{text}` is not an IANA time zone name, like \"UTC\" or \"Europe/Stockholm\"")
        })
    }
}
