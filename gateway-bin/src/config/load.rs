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
        Format::Yaml => serde_saphyr::from_str_with_options(
            text,
            serde_saphyr::options! { strict_booleans: true },
        )
        .map_err(|e| ConfigErrors::one(None, ConfigError::new("", format!("invalid YAML: {e}"))))?,
        Format::Toml => toml::from_str(text).map_err(|e| {
            ConfigErrors::one(None, ConfigError::new("", format!("invalid TOML: {e}")))
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
        ConfigErrors::one(None, ConfigError::new(path, e.into_inner().to_string()))
    })
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
