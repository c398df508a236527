//! systemd's readiness protocol (`Type=notify`): one datagram to the socket
//! named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! Without the variable nothing happens, so the agent behaves the same
//! outside systemd.

use std::os::unix::net::UnixDatagram;

/// Send `state` (e.g. `READY=1`, `STOPPING=1`, `STATUS=...`, lines joined by
/// `\n`) to the service manager, if there is one. Failures are logged: the
/// agent runs on either way, and systemd reports the missing notification.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    if let Err(e) = send(&target, state) {
        tracing::warn!("telling systemd {state:?} through NOTIFY_SOCKET={target}: {e}");
    }
}

fn send(target: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), target)?;
        }
    }
    Ok(())
}
