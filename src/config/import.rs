//! ContainerPilot 3.x JSON5 → pilotfish TOML (written by the import helper).
// Placeholder until the importer lands (merge replaces this file).
pub struct Imported {
    pub toml: String,
    pub notes: Vec<String>,
}
#[derive(Debug, thiserror::Error)]
#[error("importer not merged yet")]
pub struct ImportError;
pub fn import_containerpilot(_text: &str) -> Result<Imported, ImportError> {
    Err(ImportError)
}
