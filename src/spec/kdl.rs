//! Small typed accessors over kdl nodes that record a `Problem` (with the exact span) instead of
//! failing: the decoder keeps going so that every problem in the file is reported at once.

use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use super::diag::{Problems, did_you_mean};

pub fn type_name(v: &KdlValue) -> &'static str {
    match v {
        KdlValue::String(_) => "a string",
        KdlValue::Integer(_) => "an integer",
        KdlValue::Float(_) => "a number",
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Null => "#null",
    }
}

/// The arguments and properties of one node, checked against what the node accepts.
pub struct Entries<'a> {
    pub node: &'a KdlNode,
    pub args: Vec<&'a KdlEntry>,
    props: Vec<(&'a str, &'a KdlEntry)>,
    /// Allowed names that an unknown property was probably meant to be (no second "missing" error).
    typos: Vec<&'static str>,
}

impl<'a> Entries<'a> {
    /// Splits entries; unknown or repeated properties become problems.
    pub fn new(node: &'a KdlNode, allowed_props: &[&'static str], p: &mut Problems) -> Entries<'a> {
        let mut typos = Vec::new();
        let mut args = Vec::new();
        let mut props: Vec<(&str, &KdlEntry)> = Vec::new();
        let what = node.name().value();
        for e in node.entries() {
            match e.name() {
                None => args.push(e),
                Some(id) => {
                    let key = id.value();
                    if !allowed_props.contains(&key) {
                        let msg = format!("unknown property `{key}` on `{what}`");
                        let expected = if allowed_props.is_empty() {
                            format!("`{what}` takes no properties")
                        } else {
                            format!("expected one of: {}", allowed_props.join(", "))
                        };
                        match did_you_mean(key, allowed_props) {
                            Some(h) => {
                                if let Some(t) = allowed_props.iter().find(|a| h.contains(&format!("`{a}`"))) {
                                    typos.push(*t);
                                }
                                p.push_help(e.span(), msg, "unknown property", format!("{h} ({expected})"))
                            }
                            None => p.push_help(e.span(), msg, "unknown property", expected),
                        }
                    } else if props.iter().any(|(k, _)| *k == key) {
                        p.push(e.span(), format!("property `{key}` is given twice on `{what}`"), "second value");
                    } else {
                        props.push((key, e));
                    }
                }
            }
        }
        Entries { node, args, props, typos }
    }

    pub fn prop(&self, key: &str) -> Option<&'a KdlEntry> {
        self.props.iter().find(|(k, _)| *k == key).map(|(_, e)| *e)
    }

    pub fn name(&self) -> &str {
        self.node.name().value()
    }

    /// Exactly `n` positional arguments; extra ones are problems.
    pub fn expect_args(&self, min: usize, max: usize, what: &str, p: &mut Problems) -> bool {
        let n = self.args.len();
        if n < min {
            p.push(
                self.node.name().span(),
                format!("`{}` needs {what}", self.name()),
                format!("missing {what}"),
            );
            return false;
        }
        if n > max {
            for extra in &self.args[max..] {
                p.push(
                    extra.span(),
                    format!("`{}` takes {} argument{}, found {n}", self.name(), max, if max == 1 { "" } else { "s" }),
                    "unexpected argument",
                );
            }
        }
        true
    }

    pub fn arg_str(&self, i: usize, what: &str, p: &mut Problems) -> Option<(String, SourceSpan)> {
        let e = self.args.get(i)?;
        entry_str(e, &format!("{what} of `{}`", self.name()), p)
    }

    pub fn prop_str(&self, key: &str, p: &mut Problems) -> Option<(String, SourceSpan)> {
        let e = self.prop(key)?;
        entry_str(e, &format!("`{key}`"), p)
    }

    pub fn required_prop_str(&self, key: &str, what: &str, p: &mut Problems) -> Option<(String, SourceSpan)> {
        if self.prop(key).is_none() {
            if self.typos.contains(&key) {
                return None;
            }
            p.push(
                self.node.name().span(),
                format!("`{}` needs `{key}=` ({what})", self.name()),
                format!("missing {key}="),
            );
            return None;
        }
        self.prop_str(key, p)
    }

    pub fn prop_bool(&self, key: &str, p: &mut Problems) -> Option<bool> {
        let e = self.prop(key)?;
        match e.value() {
            KdlValue::Bool(b) => Some(*b),
            v => {
                p.push_help(
                    e.span(),
                    format!("`{key}` must be #true or #false, found {}", type_name(v)),
                    "expected a boolean",
                    "KDL v2 booleans are written #true and #false",
                );
                None
            }
        }
    }

    /// An integer property within `range` (`what` says what it counts, for the error).
    pub fn prop_count(&self, key: &str, range: std::ops::RangeInclusive<i128>, what: &str, p: &mut Problems) -> Option<u32> {
        let e = self.prop(key)?;
        match e.value() {
            KdlValue::Integer(i) if range.contains(i) => Some(*i as u32),
            KdlValue::Integer(i) => {
                p.push(e.span(), format!("`{key}` must be {what} from {} to {}, found {i}", range.start(), range.end()), format!("expected {}..{}", range.start(), range.end()));
                None
            }
            v => {
                p.push(
                    e.span(),
                    format!("`{key}` must be {what} from {} to {}, found {}", range.start(), range.end(), type_name(v)),
                    format!("expected an integer {}..{}", range.start(), range.end()),
                );
                None
            }
        }
    }

    pub fn prop_port(&self, key: &str, p: &mut Problems) -> Option<u16> {
        let e = self.prop(key)?;
        entry_port(e, key, p)
    }

    /// Every positional argument as a string.
    pub fn arg_strs(&self, what: &str, p: &mut Problems) -> Vec<(String, SourceSpan)> {
        self.args.iter().filter_map(|e| entry_str(e, &format!("{what} of `{}`", self.name()), p)).collect()
    }
}

pub fn entry_str(e: &KdlEntry, what: &str, p: &mut Problems) -> Option<(String, SourceSpan)> {
    match e.value() {
        KdlValue::String(s) => Some((s.clone(), e.span())),
        v => {
            p.push(e.span(), format!("{what} must be a string, found {}", type_name(v)), "expected a string");
            None
        }
    }
}

pub fn entry_port(e: &KdlEntry, key: &str, p: &mut Problems) -> Option<u16> {
    match e.value() {
        KdlValue::Integer(i) if (1..=65535).contains(i) => Some(*i as u16),
        KdlValue::Integer(i) => {
            p.push(e.span(), format!("port {i} is out of range"), "expected 1..65535");
            None
        }
        v => {
            p.push(e.span(), format!("`{key}` must be a port number, found {}", type_name(v)), "expected an integer 1..65535");
            None
        }
    }
}

/// The children of a node, each name checked against what is allowed there.
pub fn children<'a>(node: &'a KdlNode, allowed: &[&str], p: &mut Problems) -> Vec<&'a KdlNode> {
    let Some(doc) = node.children() else { return Vec::new() };
    let mut out = Vec::new();
    for child in doc.nodes() {
        let name = child.name().value();
        if allowed.contains(&name) {
            out.push(child);
        } else {
            unknown_node(child, allowed, &format!("inside `{}`", node.name().value()), p);
        }
    }
    out
}

pub fn unknown_node(node: &KdlNode, allowed: &[&str], place: &str, p: &mut Problems) {
    let name = node.name().value();
    let expected = format!("expected one of: {}", allowed.join(", "));
    let msg = format!("unknown node `{name}` {place}");
    match did_you_mean(name, allowed) {
        Some(h) => p.push_help(node.name().span(), msg, "unknown node", format!("{h} ({expected})")),
        None => p.push_help(node.name().span(), msg, "unknown node", expected),
    }
}

/// A node that must not have children.
pub fn no_children(node: &KdlNode, p: &mut Problems) {
    if let Some(doc) = node.children() {
        p.push(doc.span(), format!("`{}` takes no children block", node.name().value()), "unexpected block");
    }
}
