//! Problems found in cluster.kdl, collected (never first-error-only) and reported as one miette
//! diagnostic with the file name, each offending span underlined, and what was expected.

use std::fmt;
use std::path::Path;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

/// One problem at one place in the file.
#[derive(Debug, Clone)]
pub struct Problem {
    pub span: SourceSpan,
    pub message: String,
    pub label: String,
    pub help: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(Some(self.label.clone()), self.span))))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

/// Everything wrong with one file. Exit status 2.
#[derive(Debug)]
pub struct SpecError {
    pub file: String,
    pub source: NamedSource<String>,
    text: String,
    pub problems: Vec<Problem>,
}

impl SpecError {
    pub fn new(file: &Path, text: &str, mut problems: Vec<Problem>) -> SpecError {
        problems.sort_by_key(|p| p.span.offset());
        let file = file.display().to_string();
        SpecError {
            source: NamedSource::new(file.clone(), text.to_string()).with_language("kdl"),
            file,
            text: text.to_string(),
            problems,
        }
    }

    /// 1-based (line, column) of a byte offset; columns count characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
    }

    /// `file:line:col: message` lines, one per problem, in file order.
    pub fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| {
                let (l, c) = self.line_col(p.span.offset());
                format!("{}:{l}:{c}: {}", self.file, p.message)
            })
            .collect()
    }
}

pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut start = offset;
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{} is not a valid cluster description ({n} problem{})", self.file, if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for SpecError {}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("rvcluster::spec"))
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.problems.iter().map(|p| p as &dyn Diagnostic)))
    }
}

/// Collects problems while decoding, and the spans of secrets written inline (masked before the
/// source is ever shown).
#[derive(Default)]
pub struct Problems(pub Vec<Problem>, pub Vec<SourceSpan>);

impl Problems {
    pub fn push(&mut self, span: SourceSpan, message: impl Into<String>, label: impl Into<String>) {
        self.0.push(Problem { span, message: message.into(), label: label.into(), help: None });
    }
    pub fn push_help(
        &mut self,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.0.push(Problem { span, message: message.into(), label: label.into(), help: Some(help.into()) });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Masks this span (a secret's value) in any source shown to the user.
    pub fn redact(&mut self, span: SourceSpan) {
        self.1.push(span);
    }
}

/// The text with every redacted span replaced by `*` (same byte length, so spans stay valid).
pub fn redacted(text: &str, spans: &[SourceSpan]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for s in spans {
        let end = (s.offset() + s.len()).min(bytes.len());
        for b in &mut bytes[s.offset().min(end)..end] {
            if *b != b'\n' {
                *b = b'*';
            }
        }
    }
    String::from_utf8(bytes).unwrap_or_else(|_| "*".repeat(text.len()))
}

/// "did you mean `x`?" for a misspelt name, when one candidate is close enough.
pub fn did_you_mean(got: &str, candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(got, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_and_in_chars() {
        let t = "ab\ncdé f\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 7), (2, 4));
    }

    #[test]
    fn suggestions_only_when_close() {
        assert_eq!(did_you_mean("nodes", &["node", "image"]).as_deref(), Some("did you mean `node`?"));
        assert_eq!(did_you_mean("zzzzzz", &["node", "image"]), None);
    }
}
