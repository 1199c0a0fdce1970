//! The prioritize body, read without re-encoding: QPS expects `AppName` "exactly the same", so
//! the answer is the request text with only the engine array's elements reordered — every other
//! byte (key order, unknown fields, escapes, spacing) is copied through.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::ops::Range;

/// Engine list keys: current sites, then 1.x sites.
pub const ENGINE_KEYS: [&str; 2] = ["QlikSenseEngines", "QlikViewEngines"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadRequest {
    #[error("the body is not UTF-8 text")]
    NotUtf8,
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not a JSON object")]
    NotObject,
    #[error("the body has no engine list (\"QlikSenseEngines\" or \"QlikViewEngines\")")]
    NoEngineList,
    #[error("\"{0}\" must be a list of strings")]
    NotStrings(&'static str),
}

pub struct Prioritize<'a> {
    text: &'a str,
    /// Which key held the engine list.
    pub key: &'static str,
    pub app_name: Option<String>,
    /// The engine strings, decoded.
    pub engines: Vec<String>,
    /// Each element's JSON text exactly as sent.
    raw_engines: Vec<&'a str>,
    /// Where the engine array sits in `text`.
    span: Range<usize>,
}

impl<'a> Prioritize<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Prioritize<'a>, BadRequest> {
        let text = std::str::from_utf8(body).map_err(|_| BadRequest::NotUtf8)?;
        let fields = parse_fields(text)?;
        let find = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        let (key, array) = ENGINE_KEYS
            .iter()
            .find_map(|k| find(k).map(|v| (*k, v)))
            .ok_or(BadRequest::NoEngineList)?;
        let elements: Vec<&RawValue> =
            serde_json::from_str(array.get()).map_err(|_| BadRequest::NotStrings(key))?;
        let mut engines = Vec::with_capacity(elements.len());
        for e in &elements {
            let s: String =
                serde_json::from_str(e.get()).map_err(|_| BadRequest::NotStrings(key))?;
            engines.push(s);
        }
        let app_name = find("AppName").and_then(|v| serde_json::from_str::<String>(v.get()).ok());
        let span = offset_in(text, array.get());
        let raw_engines = elements
            .iter()
            .map(|e| offset_in(array.get(), e.get()))
            .map(|r| &array.get()[r])
            .collect();
        Ok(Prioritize {
            text,
            key,
            app_name,
            engines,
            raw_engines,
            span,
        })
    }

    /// The request text with the engines in `order` (a permutation of their indexes); anything
    /// else (a wrong length, a repeated index) returns the request unchanged.
    pub fn render(&self, order: &[usize]) -> String {
        let n = self.raw_engines.len();
        let mut seen = vec![false; n];
        let is_permutation = order.len() == n
            && order
                .iter()
                .all(|&i| i < n && !std::mem::replace(&mut seen[i], true));
        if !is_permutation || order.iter().enumerate().all(|(pos, &i)| pos == i) {
            return self.text.to_string();
        }
        let mut out = String::with_capacity(self.text.len() + n);
        out.push_str(&self.text[..self.span.start]);
        out.push('[');
        for (pos, &i) in order.iter().enumerate() {
            if pos > 0 {
                out.push_str(", ");
            }
            out.push_str(self.raw_engines[i]);
        }
        out.push(']');
        out.push_str(&self.text[self.span.end..]);
        out
    }

    pub fn text(&self) -> &'a str {
        self.text
    }
}

/// Where `part` (a sub-slice of `whole`, as serde_json's borrowed raw values are) lies in `whole`.
fn offset_in(whole: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// The top-level object's fields in order, each value as its raw text.
fn parse_fields(text: &str) -> Result<Vec<(String, &RawValue)>, BadRequest> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = de.deserialize_map(FieldsVisitor).map_err(|e| {
        if e.is_data() {
            BadRequest::NotObject
        } else {
            BadRequest::NotJson(e.to_string())
        }
    })?;
    de.end().map_err(|e| BadRequest::NotJson(e.to_string()))?;
    Ok(fields)
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
            out.push(entry);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_only_the_array() {
        let body =
            br#"{ "AppName" : "caf\u00e9 \"x\"",  "QlikSenseEngines":["a","b\/c" ,"d"], "z":1}"#;
        let p = Prioritize::parse(body).unwrap();
        assert_eq!(p.engines, ["a", "b/c", "d"]);
        assert_eq!(p.app_name.as_deref(), Some("café \"x\""));
        assert_eq!(
            p.render(&[2, 0, 1]),
            r#"{ "AppName" : "caf\u00e9 \"x\"",  "QlikSenseEngines":["d", "a", "b\/c"], "z":1}"#
        );
        assert_eq!(p.render(&[0, 1, 1]), std::str::from_utf8(body).unwrap());
    }

    #[test]
    fn rejects_what_has_no_engine_strings() {
        assert!(matches!(
            Prioritize::parse(b"{nope"),
            Err(BadRequest::NotJson(_))
        ));
        assert_eq!(Prioritize::parse(b"[1]").err(), Some(BadRequest::NotObject));
        assert_eq!(
            Prioritize::parse(br#"{"AppName":"x"}"#).err(),
            Some(BadRequest::NoEngineList)
        );
        assert_eq!(
            Prioritize::parse(br#"{"QlikViewEngines":[1]}"#).err(),
            Some(BadRequest::NotStrings("QlikViewEngines"))
        );
        assert!(matches!(
            Prioritize::parse(br#"{"QlikViewEngines":[]} x"#),
            Err(BadRequest::NotJson(_))
        ));
    }
}
