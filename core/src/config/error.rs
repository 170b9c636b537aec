//! Config errors that point at the problem: file, line, column and a fix.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A pipeline file's text, kept so that any later error can point into it.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// 1-based line and column of byte offset `at` (columns count characters).
    pub fn line_column(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let before = &self.text[..self.text.floor_char_boundary(at)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line - 1).unwrap_or("")
    }

    /// The directory that relative paths in the file are relative to.
    pub fn dir(&self) -> &Path {
        self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }
}

/// What is wrong with a pipeline file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error has no position (e.g. an unreadable file).
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// What to do about it.
    pub hint: String,
    /// The offending line, for display.
    snippet: String,
    /// Characters to underline, starting at `column`.
    width: usize,
}

impl ConfigError {
    /// An error at byte range `span` of `file`.
    pub fn at(file: &Arc<SourceFile>, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        let (line, column) = file.line_column(span.start);
        let snippet = file.line_text(line).to_string();
        let (end_line, end_column) = file.line_column(span.end);
        let width = if end_line == line { end_column.saturating_sub(column).max(1) } else { 1 };
        ConfigError { file: file.path.clone(), line, column, message: message.into(), hint: hint.into(), snippet, width }
    }

    /// An error about the file as a whole.
    pub fn whole(path: &Path, message: impl Into<String>, hint: impl Into<String>) -> Self {
        ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            hint: hint.into(),
            snippet: String::new(),
            width: 0,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            writeln!(f, "error: {}: {}", self.file.display(), self.message)?;
        } else {
            writeln!(f, "error: {}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)?;
            let gutter = self.line.to_string().len();
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", self.line, self.snippet)?;
            writeln!(f, "{:gutter$} | {}{}", "", " ".repeat(self.column - 1), "^".repeat(self.width))?;
        }
        write!(f, "  = hint: {}", self.hint)
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in a pipeline file (never empty), in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// `None` when there are no errors.
    pub fn new(mut errors: Vec<ConfigError>) -> Option<ConfigErrors> {
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        (!errors.is_empty()).then_some(ConfigErrors(errors))
    }

    /// The first error in the file.
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true; for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "\n\n")?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n\n{} errors in {}", self.0.len(), self.0[0].file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_position_snippet_and_hint() {
        let file = Arc::new(SourceFile { path: "p.toml".into(), text: "a = 1\nbad = 2\n".into() });
        let e = ConfigError::at(&file, 6..9, "unknown key `bad`", "remove it");
        assert_eq!((e.line, e.column), (2, 1));
        assert_eq!(e.to_string(), "error: p.toml:2:1: unknown key `bad`\n  |\n2 | bad = 2\n  | ^^^\n  = hint: remove it");
    }
}
