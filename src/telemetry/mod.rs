//! Prometheus `/metrics` and JSON `/status` (written by the telemetry helper).
