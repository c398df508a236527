//! Placeholder until the haproxy-runtime branch merges (not committed).
use std::path::Path;
pub enum Change {
    None,
    Runtime(Vec<String>),
    Reload,
}
pub fn plan(_installed: &str, _rendered: &str) -> Change {
    Change::Reload
}
pub async fn apply(_socket: &Path, _commands: &[String]) -> Result<(), String> {
    Err("x".into())
}
