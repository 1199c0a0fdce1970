//! Maps byte offsets and key paths of the TOML source to line numbers, so every config error
//! can name the line it is about.

use toml_edit::{ImDocument, Item, Table, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

pub fn line_of_offset(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

pub struct Locator<'a> {
    src: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> Locator<'a> {
    pub fn new(src: &'a str) -> Self {
        Locator {
            src,
            doc: ImDocument::parse(src).ok(),
        }
    }

    /// The line of the key at `path`, or of its nearest existing parent.
    pub fn line(&self, path: &[Seg]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut best = None;
        locate_in_table(doc.as_table(), path, &mut best);
        best.map(|span: std::ops::Range<usize>| line_of_offset(self.src, span.start))
    }

    /// The dotted key path of the key-value whose source text holds `offset`.
    pub fn path_at(&self, offset: usize) -> Option<(Vec<Seg>, std::ops::Range<usize>)> {
        let doc = self.doc.as_ref()?;
        let mut path = Vec::new();
        find_in_table(doc.as_table(), offset, &mut path)
    }
}

fn locate_in_table(table: &Table, path: &[Seg], best: &mut Option<std::ops::Range<usize>>) {
    let Some((Seg::Key(k), rest)) = path.split_first() else {
        return;
    };
    let Some((key, item)) = table.get_key_value(k) else {
        return;
    };
    if let Some(span) = key.span().or_else(|| item.span()) {
        *best = Some(span);
    }
    match (item, rest.split_first()) {
        (Item::Table(t), _) => locate_in_table(t, rest, best),
        (Item::ArrayOfTables(a), Some((Seg::Index(i), deeper))) => {
            if let Some(t) = a.get(*i) {
                if let Some(span) = t.span() {
                    *best = Some(span);
                }
                locate_in_table(t, deeper, best);
            }
        }
        (Item::Value(Value::InlineTable(t)), Some((Seg::Key(inner), _))) => {
            if let Some((key, _)) = t.get_key_value(inner) {
                if let Some(span) = key.span() {
                    *best = Some(span);
                }
            }
        }
        _ => {}
    }
}

fn find_in_table(
    table: &Table,
    offset: usize,
    path: &mut Vec<Seg>,
) -> Option<(Vec<Seg>, std::ops::Range<usize>)> {
    for (k, item) in table.iter() {
        let key = table.key(k)?;
        path.push(Seg::Key(k.to_string()));
        let found = match item {
            Item::Value(v) => {
                let start = key.span().map(|s| s.start);
                let end = v.span().map(|s| s.end);
                match (start, end) {
                    (Some(s), Some(e)) if s <= offset && offset < e.max(s + 1) => {
                        Some((path.clone(), s..e))
                    }
                    _ => None,
                }
            }
            Item::Table(t) => find_in_table(t, offset, path),
            Item::ArrayOfTables(a) => {
                let mut hit = None;
                for (i, t) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    hit = find_in_table(t, offset, path);
                    path.pop();
                    if hit.is_some() {
                        break;
                    }
                }
                hit
            }
            Item::None => None,
        };
        path.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}
