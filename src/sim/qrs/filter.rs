//! The QRS `filter` query language, evaluated against a row's JSON: `field op value` joined by
//! `and`/`or` (and binds tighter), with parentheses. Operators eq ne gt ge lt le, and sw ew so
//! for strings. Values are 'quoted' ('' escapes a quote) or bare (GUIDs, numbers, true, false,
//! null). Strings compare case-insensitively; ISO-8601 times compare as instants.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Cmp {
        field: String,
        op: Op,
        value: Literal,
    },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Bare(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed filter: {0}")]
pub struct FilterError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(FilterError("unterminated quoted value".into())),
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            s.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => s.push(c),
                    }
                }
                out.push(Token::Quoted(s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '\'' {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    Ok(out)
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, at: 0 };
        let f = p.or_expr()?;
        if p.at != p.tokens.len() {
            return Err(FilterError(format!(
                "unexpected {:?} after a complete expression",
                p.tokens[p.at]
            )));
        }
        Ok(f)
    }

    /// Whether `row` matches; a field the row does not have is an error, as in the QRS.
    pub fn matches(&self, row: &Value) -> Result<bool, FilterError> {
        match self {
            Filter::And(a, b) => Ok(a.matches(row)? && b.matches(row)?),
            Filter::Or(a, b) => Ok(a.matches(row)? || b.matches(row)?),
            Filter::Cmp { field, op, value } => {
                let actual = lookup(row, field)
                    .ok_or_else(|| FilterError(format!("unknown field `{field}`")))?;
                compare(actual, *op, value)
            }
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn peek_keyword(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or_expr(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and_expr()?;
        while self.peek_keyword("or") {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and_expr()?));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.term()?;
        while self.peek_keyword("and") {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Filter, FilterError> {
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or_expr()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err(FilterError("missing `)`".into())),
                }
            }
            Some(Token::Word(field)) => {
                let op = match self.next() {
                    Some(Token::Word(op)) => parse_op(&op)?,
                    other => {
                        return Err(FilterError(format!(
                            "expected an operator after `{field}`, found {other:?}"
                        )))
                    }
                };
                let value = match self.next() {
                    Some(Token::Quoted(s)) => Literal::Text(s),
                    Some(Token::Word(w))
                        if !w.eq_ignore_ascii_case("and") && !w.eq_ignore_ascii_case("or") =>
                    {
                        Literal::Bare(w)
                    }
                    other => {
                        return Err(FilterError(format!(
                            "expected a value after `{field}`, found {other:?}"
                        )))
                    }
                };
                Ok(Filter::Cmp { field, op, value })
            }
            other => Err(FilterError(format!(
                "expected a field name, found {other:?}"
            ))),
        }
    }
}

fn parse_op(op: &str) -> Result<Op, FilterError> {
    Ok(match op.to_ascii_lowercase().as_str() {
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "gt" => Op::Gt,
        "ge" => Op::Ge,
        "lt" => Op::Lt,
        "le" => Op::Le,
        "sw" => Op::StartsWith,
        "ew" => Op::EndsWith,
        "so" => Op::Contains,
        _ => return Err(FilterError(format!("unknown operator `{op}`"))),
    })
}

/// Dotted path lookup with case-insensitive keys (`user.userDirectory`).
fn lookup<'a>(row: &'a Value, field: &str) -> Option<&'a Value> {
    let mut v = row;
    for part in field.split('.') {
        let obj = v.as_object()?;
        v = obj
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(part))
            .map(|(_, v)| v)?;
    }
    Some(v)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn compare(actual: &Value, op: Op, literal: &Literal) -> Result<bool, FilterError> {
    let text = match literal {
        Literal::Text(s) | Literal::Bare(s) => s.as_str(),
    };
    if matches!(literal, Literal::Bare(w) if w.eq_ignore_ascii_case("null")) {
        return match op {
            Op::Eq => Ok(actual.is_null()),
            Op::Ne => Ok(!actual.is_null()),
            _ => Err(FilterError("null compares only with eq or ne".into())),
        };
    }
    let ordering = match actual {
        Value::Null => return Ok(op == Op::Ne),
        Value::Bool(b) => {
            let want: bool = text
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| FilterError(format!("`{text}` is not true or false")))?;
            b.cmp(&want)
        }
        Value::Number(n) => {
            let want: f64 = text
                .parse()
                .map_err(|_| FilterError(format!("`{text}` is not a number")))?;
            n.as_f64()
                .unwrap_or(f64::NAN)
                .partial_cmp(&want)
                .unwrap_or(Ordering::Less)
        }
        Value::String(s) => {
            let (a, b) = (s.to_lowercase(), text.to_lowercase());
            match op {
                Op::StartsWith => return Ok(a.starts_with(&b)),
                Op::EndsWith => return Ok(a.ends_with(&b)),
                Op::Contains => return Ok(a.contains(&b)),
                _ => {}
            }
            match (parse_time(s), parse_time(text)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => a.cmp(&b),
            }
        }
        _ => return Err(FilterError("only plain values can be compared".into())),
    };
    Ok(match op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        Op::StartsWith | Op::EndsWith | Op::Contains => {
            return Err(FilterError("sw, ew and so apply to strings only".into()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn precedence_and_binds_tighter_than_or() {
        let f = Filter::parse("id eq a or id eq b and id eq c").unwrap();
        assert!(f.matches(&json!({"id": "A"})).unwrap());
        assert!(!f.matches(&json!({"id": "b"})).unwrap());
    }

    #[test]
    fn times_compare_as_instants() {
        let f = Filter::parse("lastUsed le '2026-10-23T23:59:59.999Z'").unwrap();
        assert!(f
            .matches(&json!({"lastUsed": "2026-10-23T23:59:59.999Z"}))
            .unwrap());
        assert!(!f
            .matches(&json!({"lastUsed": "2026-10-24T00:00:00.000Z"}))
            .unwrap());
        assert!(f
            .matches(&json!({"lastUsed": "2026-10-24T01:59:59.999+02:00"}))
            .unwrap());
    }

    #[test]
    fn malformed_filters_are_errors() {
        for bad in [
            "lastUsed",
            "lastUsed le",
            "id eq 'x",
            "id zz 1",
            "(id eq 1",
            "id eq 1 and",
            "id eq 1 x",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
        let f = Filter::parse("nosuch eq 1").unwrap();
        assert!(f.matches(&json!({"id": "1"})).is_err());
    }

    #[test]
    fn nested_fields_and_quotes() {
        let f = Filter::parse("(user.userDirectory eq 'lab') and name eq 'O''Brien'").unwrap();
        assert!(f
            .matches(&json!({"user": {"userDirectory": "LAB"}, "name": "o'brien"}))
            .unwrap());
    }
}
