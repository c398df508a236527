//! Consul wire types for `/v1/txn` (being written).
