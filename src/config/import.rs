//! ContainerPilot 3.x JSON5 → pilotfish TOML (written by the import helper).
