//! A tiny YAML writer for the files k3s reads. k3s parses YAML 1.1, where bare `yes`, `on`, `n`,
//! `1:20` or `2024-01-01` are not strings (docs/k3s-behaviour.md §5.4 YAML dialect), so every string is written
//! double-quoted (JSON escaping is valid YAML); only integers and booleans are bare.

use std::fmt::Write;

#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Yaml>),
    /// Keys in insertion order (the files stay diff-friendly and stable).
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    pub fn str(s: impl Into<String>) -> Yaml {
        Yaml::Str(s.into())
    }
}

pub fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The document, ending with a newline.
pub fn to_string(doc: &Yaml) -> String {
    let mut out = String::new();
    match doc {
        Yaml::Map(m) if !m.is_empty() => write_map(&mut out, m, 0),
        other => {
            let _ = writeln!(out, "{}", scalar(other).unwrap_or_else(|| "{}".into()));
        }
    }
    out
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::Str(s) => Some(quote(s)),
        Yaml::Int(i) => Some(i.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::List(l) if l.is_empty() => Some("[]".into()),
        Yaml::Map(m) if m.is_empty() => Some("{}".into()),
        _ => None,
    }
}

fn write_map(out: &mut String, m: &[(String, Yaml)], indent: usize) {
    let pad = " ".repeat(indent);
    for (k, v) in m {
        let key = quote(k);
        match scalar(v) {
            Some(s) => {
                let _ = writeln!(out, "{pad}{key}: {s}");
            }
            None => {
                let _ = writeln!(out, "{pad}{key}:");
                match v {
                    Yaml::Map(inner) => write_map(out, inner, indent + 2),
                    Yaml::List(items) => write_list(out, items, indent + 2),
                    _ => unreachable!("scalars handled above"),
                }
            }
        }
    }
}

fn write_list(out: &mut String, items: &[Yaml], indent: usize) {
    let pad = " ".repeat(indent);
    for item in items {
        match scalar(item) {
            Some(s) => {
                let _ = writeln!(out, "{pad}- {s}");
            }
            None => match item {
                Yaml::Map(m) => {
                    let mut inner = String::new();
                    write_map(&mut inner, m, indent + 2);
                    let inner = inner.trim_start();
                    let _ = write!(out, "{pad}- {inner}");
                }
                Yaml::List(l) => {
                    let _ = writeln!(out, "{pad}-");
                    write_list(out, l, indent + 2);
                }
                _ => unreachable!(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_traps_are_quoted() {
        let doc = Yaml::Map(vec![
            ("a".into(), Yaml::str("yes")),
            ("b".into(), Yaml::str("1:20")),
            ("c".into(), Yaml::str("2024-01-01")),
            ("d".into(), Yaml::Int(3)),
            ("e".into(), Yaml::Bool(true)),
            ("f".into(), Yaml::List(vec![Yaml::str("on"), Yaml::str("n")])),
            ("g".into(), Yaml::Map(vec![("x y".into(), Yaml::str("quote\"d"))])),
        ]);
        assert_eq!(
            to_string(&doc),
            "\"a\": \"yes\"\n\"b\": \"1:20\"\n\"c\": \"2024-01-01\"\n\"d\": 3\n\"e\": true\n\"f\":\n  - \"on\"\n  - \"n\"\n\"g\":\n  \"x y\": \"quote\\\"d\"\n"
        );
    }
}
