//! Templates: rendering configuration files from the catalog and applying them.

pub mod haproxy;
