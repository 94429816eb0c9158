use std::path::Path;

use super::{Config, ConfigError, ConfigErrors};

/// The syntax of a configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML (`.yaml`, `.yml`).
    Yaml,
    /// TOML (`.toml`).
    Toml,
}

impl Format {
    /// The format a path's extension names; YAML when unknown.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Format::Toml,
            _ => Format::Yaml,
        }
    }
}

/// Reads and parses a configuration file (validation is [`super::validate`],
/// or compiling it with [`crate::stack::compile`]).
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let source = Some(path.display().to_string());
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(
            source.clone(),
            ConfigError::new("", format!("cannot read file: {e}")),
        )
    })?;
    let mut cfg = parse_str(&text, Format::from_path(path)).map_err(|mut e| {
        e.source = source.clone();
        e
    })?;
    cfg.base_dir = path.parent().map(Path::to_path_buf);
    Ok(cfg)
}

/// Parses a configuration from text, without validating it.
///
/// Both formats are first read into a generic tree, then deserialised with
/// `serde_path_to_error`, so a type error or an unknown key reports the path
/// of the key whatever the syntax.
pub fn parse_str(text: &str, format: Format) -> Result<Config, ConfigErrors> {
    let value: serde_json::Value = match format {
        // YAML 1.2 booleans only: `true` and `false`. With YAML 1.1's, a
        // claim `country: NO` or a header value `on` would be read as a
        // boolean before the schema says it is a string (and TOML, which
        // has no such spellings, would mean something else).
        // Errors never quote the file: the lines around a syntax error may
        // hold a secret (a JWT key, a Redis password), and the error goes
        // to the log, `/admin/status` and `/admin/reload`'s answer. They
        // give the line and column instead.
        Format::Yaml => serde_saphyr::from_str_with_options(
            text,
            serde_saphyr::options! { strict_booleans: true, with_snippet: false },
        )
        .map_err(|e| ConfigErrors::one(None, ConfigError::new("", format!("invalid YAML: {e}"))))?,
        Format::Toml => toml::from_str(text).map_err(|e: toml::de::Error| {
            let at = e.span().map(|span| line_column(text, span.start));
            let message = e.message().trim_end();
            let text = match at {
                Some((line, column)) => {
                    format!("invalid TOML at line {line}, column {column}: {message}")
                }
                None => format!("invalid TOML: {message}"),
            };
            ConfigErrors::one(None, ConfigError::new("", text))
        })?,
    };
    if value.is_null() {
        return Err(ConfigErrors::one(
            None,
            ConfigError::new("", "the file is empty"),
        ));
    }
    serde_path_to_error::deserialize::<_, Config>(value).map_err(|e| {
        let path = display_path(e.path());
        let message = without_value(&e.into_inner().to_string());
        ConfigErrors::one(None, ConfigError::new(path, message))
    })
}

/// The 1-based line and column (in characters) of byte `at` of `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A type error without the value it found: ``invalid type: integer
/// `12345`, expected a string`` for a numeric `admin.token` would show the
/// token. Its kind (`integer`, `map`...) and the path say enough.
fn without_value(message: &str) -> String {
    const PREFIX: &str = "invalid type: ";
    if let Some(rest) = message.strip_prefix(PREFIX)
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let kind = found.split([' ', '`', '"']).next().unwrap_or(found);
        return format!("{PREFIX}{kind}, expected {expected}");
    }
    message.to_owned()
}

fn display_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    if out == "?" { String::new() } else { out }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-0123456789-abcdefghij-klmnop";

    fn error_text(text: &str, format: Format) -> String {
        match parse_str(text, format) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    /// Syntax and type errors name the place, never the file's text: the
    /// lines around an error may hold a secret.
    #[test]
    fn errors_show_no_value_of_the_file() {
        let yaml = [
            // A duplicate key.
            format!(
                "listen: \"127.0.0.1:0\"\nauth_providers:\n  p:\n    jwt:\n      secret: \"{SECRET}\"\n      secret: \"{SECRET}\"\n"
            ),
            // A syntax error next to a Redis password.
            format!("listen: \"127.0.0.1:0\"\nredis_url: \"redis://:{SECRET}@cache\"\nroutes: [\n"),
            // A numeric token where a string is expected.
            "listen: \"127.0.0.1:0\"\nadmin:\n  token: 123456789012345678901234567890\n".to_owned(),
        ];
        for text in &yaml {
            let shown = error_text(text, Format::Yaml);
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains("1234567890"), "{shown}");
        }
        let toml = [
            format!(
                "listen = \"127.0.0.1:0\"\n[admin]\ntoken = \"{SECRET}\"\ntoken = \"{SECRET}\"\n"
            ),
            format!("listen = \"127.0.0.1:0\"\nredis = \"redis://:{SECRET}@cache\" x\n"),
        ];
        for text in &toml {
            let shown = error_text(text, Format::Toml);
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(shown.contains("line "), "{shown}");
        }
        let shown = error_text(
            "listen = \"127.0.0.1:0\"\n[admin]\ntoken = 123456789012345678\n",
            Format::Toml,
        );
        assert!(shown.contains("admin.token"), "{shown}");
        assert!(shown.contains("integer"), "{shown}");
        assert!(!shown.contains("1234567890"), "{shown}");
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("ab\ncdé f", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé f", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé f", "ab\ncdé ".len()), (2, 5));
    }
}
