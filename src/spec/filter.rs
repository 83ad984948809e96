//! Node selection for `--on NAME,GLOB,@TAG`: which nodes a command acts on.

use super::model::Node;

/// Why an `--on` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("`{0}` has an empty item; expected NAME,GLOB,@TAG")]
    EmptyItem(String),
}

/// A parsed `--on` value: comma-separated names, globs (`*`, `?`) and `@tag`s; a node is selected
/// when any item matches it.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    items: Vec<String>,
}

impl NodeFilter {
    pub fn parse(s: &str) -> Result<NodeFilter, FilterError> {
        let items: Vec<String> = s.split(',').map(|x| x.trim().to_string()).collect();
        if items.iter().any(|i| i.is_empty() || i == "@") {
            return Err(FilterError::EmptyItem(s.to_string()));
        }
        Ok(NodeFilter { items })
    }

    pub fn all() -> NodeFilter {
        NodeFilter::default()
    }

    pub fn is_all(&self) -> bool {
        self.items.is_empty()
    }

    pub fn matches(&self, node: &Node) -> bool {
        self.is_all()
            || self.items.iter().any(|i| match i.strip_prefix('@') {
                Some(tag) => node.tags.iter().any(|t| glob(tag, t)),
                None => glob(i, &node.name),
            })
    }

    /// For hosts that are not nodes (the registry host): selected by its name or glob.
    pub fn matches_name(&self, name: &str) -> bool {
        self.is_all() || self.items.iter().any(|i| !i.starts_with('@') && glob(i, name))
    }

    /// Items that selected no node at all (a typo the user should hear about).
    pub fn unmatched<'a>(&'a self, nodes: &[Node]) -> Vec<&'a str> {
        self.items
            .iter()
            .filter(|i| {
                !nodes.iter().any(|n| NodeFilter { items: vec![(*i).clone()] }.matches(n))
            })
            .map(String::as_str)
            .collect()
    }
}

/// Shell-style glob with `*` and `?`.
pub fn glob(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, tags: &[&str]) -> Node {
        Node {
            name: name.into(),
            address: "127.0.0.1".into(),
            role: super::super::model::Role::Agent,
            profile: None,
            ssh: Default::default(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            config: vec![],
            span: (0, 0).into(),
        }
    }

    #[test]
    fn names_globs_and_tags() {
        let nodes = [node("board1", &["rack1"]), node("board2", &["rack2"]), node("server", &[])];
        let f = NodeFilter::parse("server,@rack2").unwrap();
        let sel: Vec<_> = nodes.iter().filter(|n| f.matches(n)).map(|n| n.name.as_str()).collect();
        assert_eq!(sel, ["board2", "server"]);
        let f = NodeFilter::parse("board*").unwrap();
        assert_eq!(nodes.iter().filter(|n| f.matches(n)).count(), 2);
        let f = NodeFilter::parse("b?ard1,nosuch,@rack9").unwrap();
        assert_eq!(f.unmatched(&nodes), ["nosuch", "@rack9"]);
        assert!(NodeFilter::parse("a,,b").is_err());
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob("*", ""));
        assert!(glob("a*c", "abbbc"));
        assert!(!glob("a*c", "abbbd"));
        assert!(glob("*-riscv64", "openeuler-riscv64"));
    }
}
