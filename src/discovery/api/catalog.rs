//! Consul wire types for `/v1/catalog`: `Node`, `AgentService` (also used by
//! the agent and health endpoints), `CatalogService` rows, `catalog/node`
//! answers and the `catalog/register` / `catalog/deregister` bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use super::null_as_default;

/// `Node` as Consul serves it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Node")]
    pub node: String,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
    #[serde(rename = "TaggedAddresses", deserialize_with = "null_as_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(rename = "Meta", deserialize_with = "null_as_default")]
    pub meta: BTreeMap<String, String>,
    #[serde(rename = "CreateIndex")]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex")]
    pub modify_index: u64,
}

/// `Weights` of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Weights {
    #[serde(rename = "Passing")]
    pub passing: u32,
    #[serde(rename = "Warning")]
    pub warning: u32,
}

/// Consul's defaults: Passing 1, Warning 1.
impl Default for Weights {
    fn default() -> Weights {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// `AgentService`: the agent maps (without indexes) and the catalog/health
/// answers (with them). `Tags` is `[]` and `Meta` `{}` when empty, never null
/// (but read as empty when another server sends null).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentService {
    /// `""` for a typical service (left out then).
    #[serde(rename = "Kind", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Service")]
    pub service: String,
    #[serde(rename = "Tags", deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(rename = "Meta", deserialize_with = "null_as_default")]
    pub meta: BTreeMap<String, String>,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Weights")]
    pub weights: Weights,
    #[serde(rename = "EnableTagOverride")]
    pub enable_tag_override: bool,
    #[serde(rename = "Datacenter", skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    #[serde(rename = "CreateIndex", skip_serializing_if = "Option::is_none")]
    pub create_index: Option<u64>,
    #[serde(rename = "ModifyIndex", skip_serializing_if = "Option::is_none")]
    pub modify_index: Option<u64>,
    #[serde(
        rename = "TaggedAddresses",
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(rename = "SocketPath", skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    /// The agent form shows it for proxies and gateways only, the catalog
    /// and health forms always (consul-breadth.md §3.4).
    #[serde(rename = "Proxy", skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ConnectProxy>,
    /// The agent form shows it only for a Connect-native service, the
    /// catalog and health forms always.
    #[serde(rename = "Connect", skip_serializing_if = "Option::is_none")]
    pub connect: Option<ServiceConnect>,
    #[serde(rename = "Locality", skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// `""` in the catalog and health forms, left out by the agent.
    #[serde(rename = "PeerName", skip_serializing_if = "Option::is_none")]
    pub peer_name: Option<String>,
}

/// A service's `Locality`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Locality {
    #[serde(
        rename = "Region",
        alias = "region",
        skip_serializing_if = "String::is_empty"
    )]
    pub region: String,
    #[serde(
        rename = "Zone",
        alias = "zone",
        skip_serializing_if = "String::is_empty"
    )]
    pub zone: String,
}

/// A service's `Connect`: only `Native` is kept (a `SidecarService` in a
/// registration is not registered; see `ServiceConnectBody`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConnect {
    #[serde(rename = "Native", alias = "native", skip_serializing_if = "is_false")]
    pub native: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// A service's `Proxy` (Consul's `ConnectProxyConfig`), as Consul renders
/// it: `Mode`, `MeshGateway` and `Expose` always, the rest when set. The
/// aliases read the keys `agent::decode` folds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectProxy {
    #[serde(
        rename = "DestinationServiceName",
        alias = "destinationservicename",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination_service_name: String,
    #[serde(
        rename = "DestinationServiceID",
        alias = "destinationserviceid",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination_service_id: String,
    #[serde(
        rename = "LocalServiceAddress",
        alias = "localserviceaddress",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_service_address: String,
    #[serde(
        rename = "LocalServicePort",
        alias = "localserviceport",
        skip_serializing_if = "is_zero"
    )]
    pub local_service_port: u16,
    #[serde(
        rename = "LocalServiceSocketPath",
        alias = "localservicesocketpath",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_service_socket_path: String,
    #[serde(rename = "Mode", alias = "mode")]
    pub mode: String,
    #[serde(
        rename = "Config",
        alias = "config",
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub config: BTreeMap<String, serde_json::Value>,
    #[serde(
        rename = "Upstreams",
        alias = "upstreams",
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub upstreams: Vec<Upstream>,
    #[serde(
        rename = "MeshGateway",
        alias = "meshgateway",
        deserialize_with = "null_as_default"
    )]
    pub mesh_gateway: MeshGateway,
    #[serde(
        rename = "Expose",
        alias = "expose",
        deserialize_with = "null_as_default"
    )]
    pub expose: Expose,
    #[serde(
        rename = "TransparentProxy",
        alias = "transparentproxy",
        skip_serializing_if = "Option::is_none"
    )]
    pub transparent_proxy: Option<TransparentProxy>,
}

/// `MeshGateway` (`{}` when its mode is the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MeshGateway {
    #[serde(
        rename = "Mode",
        alias = "mode",
        skip_serializing_if = "String::is_empty"
    )]
    pub mode: String,
}

/// `Expose` (`{}` when nothing is exposed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Expose {
    #[serde(rename = "Checks", alias = "checks", skip_serializing_if = "is_false")]
    pub checks: bool,
    #[serde(
        rename = "Paths",
        alias = "paths",
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub paths: Vec<ExposePath>,
}

/// One of `Expose.Paths`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExposePath {
    #[serde(
        rename = "ListenerPort",
        alias = "listenerport",
        skip_serializing_if = "is_zero"
    )]
    pub listener_port: u16,
    #[serde(
        rename = "Path",
        alias = "path",
        skip_serializing_if = "String::is_empty"
    )]
    pub path: String,
    #[serde(
        rename = "LocalPathPort",
        alias = "localpathport",
        skip_serializing_if = "is_zero"
    )]
    pub local_path_port: u16,
    #[serde(
        rename = "Protocol",
        alias = "protocol",
        skip_serializing_if = "String::is_empty"
    )]
    pub protocol: String,
}

/// `TransparentProxy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransparentProxy {
    #[serde(
        rename = "OutboundListenerPort",
        alias = "outboundlistenerport",
        skip_serializing_if = "is_zero"
    )]
    pub outbound_listener_port: u16,
    #[serde(
        rename = "DialedDirectly",
        alias = "dialeddirectly",
        skip_serializing_if = "is_false"
    )]
    pub dialed_directly: bool,
}

/// One of a proxy's `Upstreams`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Upstream {
    #[serde(
        rename = "DestinationType",
        alias = "destinationtype",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination_type: String,
    #[serde(
        rename = "DestinationNamespace",
        alias = "destinationnamespace",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination_namespace: String,
    #[serde(
        rename = "DestinationPeer",
        alias = "destinationpeer",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination_peer: String,
    #[serde(rename = "DestinationName", alias = "destinationname")]
    pub destination_name: String,
    #[serde(
        rename = "Datacenter",
        alias = "datacenter",
        skip_serializing_if = "String::is_empty"
    )]
    pub datacenter: String,
    #[serde(
        rename = "LocalBindAddress",
        alias = "localbindaddress",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_bind_address: String,
    #[serde(
        rename = "LocalBindPort",
        alias = "localbindport",
        skip_serializing_if = "is_zero"
    )]
    pub local_bind_port: u16,
    #[serde(
        rename = "LocalBindSocketPath",
        alias = "localbindsocketpath",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_bind_socket_path: String,
    #[serde(
        rename = "Config",
        alias = "config",
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub config: BTreeMap<String, serde_json::Value>,
    #[serde(
        rename = "MeshGateway",
        alias = "meshgateway",
        deserialize_with = "null_as_default"
    )]
    pub mesh_gateway: MeshGateway,
}

/// The proxy kinds and gateways, for which the agent form shows `Proxy`.
pub fn is_proxy_kind(kind: &str) -> bool {
    kind == "connect-proxy" || kind.ends_with("-gateway")
}

/// One row of `/v1/catalog/service/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CatalogService {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Node")]
    pub node: String,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
    #[serde(rename = "TaggedAddresses", deserialize_with = "null_as_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(rename = "NodeMeta", deserialize_with = "null_as_default")]
    pub node_meta: BTreeMap<String, String>,
    #[serde(rename = "ServiceKind")]
    pub service_kind: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "ServiceName")]
    pub service_name: String,
    #[serde(rename = "ServiceTags", deserialize_with = "null_as_default")]
    pub service_tags: Vec<String>,
    #[serde(rename = "ServiceAddress")]
    pub service_address: String,
    #[serde(
        rename = "ServiceTaggedAddresses",
        deserialize_with = "null_as_default"
    )]
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(rename = "ServiceWeights")]
    pub service_weights: Weights,
    #[serde(rename = "ServiceMeta", deserialize_with = "null_as_default")]
    pub service_meta: BTreeMap<String, String>,
    #[serde(rename = "ServicePort")]
    pub service_port: u16,
    #[serde(rename = "ServiceEnableTagOverride")]
    pub service_enable_tag_override: bool,
    #[serde(rename = "ServiceProxy")]
    pub service_proxy: serde_json::Value,
    #[serde(rename = "ServiceConnect")]
    pub service_connect: serde_json::Value,
    #[serde(rename = "ServiceSocketPath")]
    pub service_socket_path: String,
    /// `null` when unset, as Consul shows it.
    #[serde(rename = "ServiceLocality")]
    pub service_locality: Option<Locality>,
    #[serde(rename = "CreateIndex")]
    pub create_index: u64,
    #[serde(rename = "ModifyIndex")]
    pub modify_index: u64,
}

/// A value of a service's `TaggedAddresses` (`{"Address": .., "Port": ..}`;
/// Consul's own documentation spells the keys in lower case).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceAddress {
    #[serde(rename = "Address", alias = "address")]
    pub address: String,
    #[serde(rename = "Port", alias = "port")]
    pub port: u16,
}

/// `/v1/catalog/node/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeServices {
    #[serde(rename = "Node")]
    pub node: Node,
    #[serde(
        rename = "Services",
        deserialize_with = "null_as_default",
        serialize_with = "node_services_form"
    )]
    pub services: BTreeMap<String, AgentService>,
}

/// `/v1/catalog/node-services/:node` (`structs.NodeServiceList`): the node
/// and its services as a list; an unknown node gives `Node: null` and no
/// services.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeServiceList {
    #[serde(rename = "Node")]
    pub node: Option<Node>,
    #[serde(
        rename = "Services",
        deserialize_with = "null_as_default",
        serialize_with = "node_service_list_form"
    )]
    pub services: Vec<AgentService>,
}

/// Serialize a service as Consul's `NodeService` (`catalog/node`, health
/// entries): the `AgentService` fields, but `Port` left out when 0 (it is
/// `omitempty` there). Only a port-less service takes the slower path.
pub fn node_service_form<S: Serializer>(s: &AgentService, ser: S) -> Result<S::Ok, S::Error> {
    if s.port != 0 {
        return s.serialize(ser);
    }
    let mut v = serde_json::to_value(s).map_err(serde::ser::Error::custom)?;
    if let Some(fields) = v.as_object_mut() {
        fields.remove("Port");
    }
    v.serialize(ser)
}

/// One service as [`node_service_form`] writes it.
struct NodeForm<'a>(&'a AgentService);

impl Serialize for NodeForm<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        node_service_form(self.0, ser)
    }
}

/// A list of services, each as [`node_service_form`] writes it.
fn node_service_list_form<S: Serializer>(v: &[AgentService], ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(v.iter().map(NodeForm))
}

/// A map of services, each as [`node_service_form`] writes it.
fn node_services_form<S: Serializer>(
    m: &BTreeMap<String, AgentService>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    ser.collect_map(m.iter().map(|(k, v)| (k, NodeForm(v))))
}

// ----- request bodies (keys normalised by `agent::decode`) -----

/// The `Service` object of a catalog registration.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CatalogServiceBody {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, alias = "name")]
    pub service: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "enabletagoverride")]
    pub enable_tag_override: Option<bool>,
    #[serde(default)]
    pub weights: Option<super::agent::WeightsBody>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default, rename = "taggedaddresses")]
    pub tagged_addresses: Option<BTreeMap<String, ServiceAddress>>,
    #[serde(default, rename = "socketpath")]
    pub socket_path: Option<String>,
    #[serde(default)]
    pub proxy: Option<ConnectProxy>,
    #[serde(default)]
    pub connect: Option<ServiceConnect>,
    #[serde(default)]
    pub locality: Option<Locality>,
    /// The CAS index of a `/v1/txn` service op.
    #[serde(default, rename = "modifyindex")]
    pub modify_index: Option<u64>,
}

/// A check of a catalog registration (a `HealthCheck`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CatalogCheckBody {
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default, rename = "checkid")]
    pub check_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default, rename = "serviceid")]
    pub service_id: Option<String>,
    #[serde(default, rename = "type")]
    pub check_type: Option<String>,
    #[serde(default)]
    pub definition: Option<serde_json::Value>,
    /// The CAS index of a `/v1/txn` check op.
    #[serde(default, rename = "modifyindex")]
    pub modify_index: Option<u64>,
}

/// `PUT /v1/catalog/register`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CatalogRegistration {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub datacenter: Option<String>,
    #[serde(default, rename = "taggedaddresses")]
    pub tagged_addresses: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "nodemeta")]
    pub node_meta: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "skipnodeupdate")]
    pub skip_node_update: Option<bool>,
    #[serde(default)]
    pub service: Option<CatalogServiceBody>,
    #[serde(default)]
    pub check: Option<CatalogCheckBody>,
    #[serde(default)]
    pub checks: Option<Vec<CatalogCheckBody>>,
}

/// `PUT /v1/catalog/deregister`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CatalogDeregistration {
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub datacenter: Option<String>,
    #[serde(default, rename = "serviceid")]
    pub service_id: Option<String>,
    #[serde(default, rename = "checkid")]
    pub check_id: Option<String>,
}

// ----- Consul's meta limits (the agent, the catalog and pilotfish's own config check them) -----

/// Consul's `metaMaxKeyPairs`.
pub const META_MAX_PAIRS: usize = 64;
/// Consul's `metaKeyMaxLength`.
pub const META_KEY_MAX_LEN: usize = 128;
/// Consul's `metaValueMaxLength`.
pub const META_VALUE_MAX_LEN: usize = 512;
/// Consul's `metaKeyReservedPrefix` (service meta; node meta may carry
/// it, as Consul's own `consul-version` and `consul-network-segment` do).
pub const META_RESERVED_PREFIX: &str = "consul-";
/// Consul's `validateMetadata`, with its texts (the pair count is
/// "Node metadata" for services too, as in Consul). Pairs are checked in
/// key order, so the pair named is the same on every try.
pub fn check_meta(meta: &BTreeMap<String, String>, allow_reserved: bool) -> Result<(), String> {
    if meta.len() > META_MAX_PAIRS {
        return Err(format!(
            "Node metadata cannot contain more than {META_MAX_PAIRS} key/value pairs"
        ));
    }
    for (key, value) in meta {
        let why = if key.is_empty() {
            "Key cannot be blank".to_string()
        } else if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            "Key contains invalid characters".to_string()
        } else if key.len() > META_KEY_MAX_LEN {
            format!("Key is too long (limit: {META_KEY_MAX_LEN} characters)")
        } else if !allow_reserved && key.starts_with(META_RESERVED_PREFIX) {
            format!("Key prefix '{META_RESERVED_PREFIX}' is reserved for internal use")
        } else if value.len() > META_VALUE_MAX_LEN {
            format!("Value is too long (limit: {META_VALUE_MAX_LEN} characters)")
        } else {
            continue;
        };
        return Err(format!(
            "Couldn't load metadata pair ('{key}', '{value}'): {why}"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_consul_catalog_service_row() {
        let rows: Vec<CatalogService> = serde_json::from_str(
            r#"[{"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "foobar",
                 "Address": "192.168.10.10", "Datacenter": "dc1",
                 "TaggedAddresses": {"lan": "192.168.10.10"}, "NodeMeta": null,
                 "ServiceKind": "", "ServiceID": "web-1", "ServiceName": "web",
                 "ServiceTags": null, "ServiceAddress": "172.17.0.3",
                 "ServiceTaggedAddresses": {"lan": {"address": "172.17.0.3", "port": 5000}},
                 "ServiceWeights": {"Passing": 10, "Warning": 1}, "ServiceMeta": null,
                 "ServicePort": 5000, "ServiceSocketPath": "",
                 "ServiceEnableTagOverride": false,
                 "ServiceProxy": {"MeshGateway": {}, "Expose": {}}, "ServiceConnect": {},
                 "ServiceLocality": null, "Namespace": "default", "Partition": "default",
                 "CreateIndex": 51, "ModifyIndex": 51}]"#,
        )
        .unwrap();
        let r = &rows[0];
        assert_eq!((r.service_id.as_str(), r.service_port), ("web-1", 5000));
        assert!(r.service_tags.is_empty() && r.node_meta.is_empty());
        assert_eq!(r.service_tagged_addresses["lan"].port, 5000);
        assert_eq!(r.service_weights.passing, 10);
    }

    #[test]
    fn a_missing_weights_reads_as_consuls_default() {
        let s: AgentService = serde_json::from_str(r#"{"ID": "a", "Service": "a"}"#).unwrap();
        assert_eq!(s.weights, Weights::default());
        assert_eq!((s.weights.passing, s.weights.warning), (1, 1));
    }
}
