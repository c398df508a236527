//! Control-plane CLI client over the Unix socket (written by the control helper).
// Placeholder until the control module lands (merge replaces this file).
pub enum ClientCommand {
    Reload,
    Maintenance { enable: bool },
    PutEnv(Vec<String>),
    PutMetric(Vec<String>),
    Ping,
    Status { json: bool },
}
#[derive(Debug, thiserror::Error)]
#[error("control client not merged yet")]
pub struct ClientError;
pub async fn run(_socket: &std::path::Path, _cmd: ClientCommand) -> Result<String, ClientError> {
    Err(ClientError)
}
