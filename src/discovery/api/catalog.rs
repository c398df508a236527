//! Consul wire types for `/v1/catalog` (being written).
