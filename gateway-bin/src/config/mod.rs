//! The gateway's configuration file: schema, loading and validation.
//!
//! One schema, written in YAML or TOML. Loading is two steps: the file is
//! deserialised into the plain structs of [`schema`] (unknown keys and wrong
//! types fail here, with the path of the key), then [`validate`] checks what
//! serde cannot (durations, URLs, references between sections, route
//! templates, duplicate names) and reports every problem it finds, each with
//! its path.

mod load;
pub mod policies;
pub mod schema;
mod units;
pub(crate) mod validate;

pub use load::{Format, load_file, parse_str};
pub use schema::Config;
pub use units::{parse_duration, parse_size};
pub use validate::{admin_token, check_admin_token, validate};

use std::fmt;

/// One thing wrong with a configuration, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the bad key, like `routes[1].match.path_prefix`; empty for the
    /// whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Adds `e` unless the same error (path and message) is already there:
/// `check_structure` reports some settings that a builder, run after it,
/// reports again (a store shared by routes, once per route).
pub(crate) fn push_new(errs: &mut Vec<ConfigError>, e: ConfigError) {
    if !errs.contains(&e) {
        errs.push(e);
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file the errors are about, if it came from a file.
    pub source: Option<String>,
    /// The errors, in file order where known.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn one(source: Option<String>, err: ConfigError) -> Self {
        Self {
            source,
            errors: vec![err],
        }
    }

    /// Whether some error has exactly this path.
    pub fn has_path(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        match &self.source {
            Some(s) => writeln!(
                f,
                "{s}: {n} error{} in configuration",
                if n == 1 { "" } else { "s" }
            )?,
            None => writeln!(
                f,
                "{n} error{} in configuration",
                if n == 1 { "" } else { "s" }
            )?,
        }
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
