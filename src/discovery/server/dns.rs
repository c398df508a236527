//! Consul DNS answers from the catalog (hickory-server). Written next.
