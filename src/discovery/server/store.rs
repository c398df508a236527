//! Durability of the server's log and state. In this first cut only the
//! in-memory mode (`--dev`) exists: asking for a data dir is refused with a
//! clear error rather than silently keeping nothing on disk.

use std::path::Path;

use super::state::{Command, State};

/// Where applied commands are kept.
pub struct Store {
    _private: (),
}

impl Store {
    /// Open the store and the state recovered from it.
    pub fn open(data_dir: Option<&Path>) -> Result<(Store, State), String> {
        match data_dir {
            None => Ok((Store { _private: () }, State::new())),
            Some(dir) => Err(format!(
                "--data-dir {} is not supported yet; use --dev (in memory)",
                dir.display()
            )),
        }
    }

    /// Make one command durable before it is applied.
    pub fn append(&mut self, _index: u64, _now_ms: u64, _cmd: &Command) -> Result<(), String> {
        Ok(())
    }
}
