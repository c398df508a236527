//! Consul wire types for `/v1/session` (being written).
