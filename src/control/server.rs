//! Control-plane HTTP server on a Unix socket (written by the control helper).
// Placeholder until the control module lands (merge replaces this file).
pub fn bind(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    tokio::net::UnixListener::bind(path)
}
pub async fn serve(
    _l: tokio::net::UnixListener,
    _p: std::path::PathBuf,
    _r: tokio::sync::mpsc::Sender<super::ControlRequest>,
    s: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    s.cancelled().await;
    Ok(())
}
