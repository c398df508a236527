//! Consul wire types for `/v1/agent` (being written).
