//! Raw → typed config. Reports every error at once, each with its key path.

use super::env::Env;
use super::raw::RawConfig;
use super::Config;

/// Every problem found in a config, each with its key path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigErrors {
    pub errors: Vec<(String, String)>,
}

impl ConfigErrors {
    pub fn from_toml(e: toml::de::Error) -> ConfigErrors {
        ConfigErrors {
            errors: vec![("".into(), e.to_string().trim_end().to_string())],
        }
    }

    pub fn messages(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|(path, msg)| {
                if path.is_empty() {
                    msg.clone()
                } else {
                    format!("{path}: {msg}")
                }
            })
            .collect()
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.messages().join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

pub fn validate(_raw: RawConfig, _env: &Env) -> Result<Config, ConfigErrors> {
    todo!("validation lands in the next commit")
}
