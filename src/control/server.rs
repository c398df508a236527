//! Control-plane HTTP server on a Unix socket (written by the control helper).
