//! Consul wire types for `/v1/kv` (being written).
