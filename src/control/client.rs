//! Control-plane CLI client over the Unix socket (written by the control helper).
