//! Consul wire types for `/v1/health` (being written).
