//! What a filter may select on each endpoint: the Go types Consul filters
//! (`api.AgentService`, `structs.ServiceNode`, `structs.HealthCheck`, …)
//! as bexpr sees them, field by field under their Go names, without the
//! fields tagged `bexpr:"-"` (indexes, `Namespace`, `Partition`,
//! `Locality`, `Proxy.Config`, …). A filter is evaluated on the JSON the
//! endpoint answers, whose keys are these same names, so a field added to
//! an answer becomes selectable by adding one line here.

use std::sync::LazyLock;

/// A Go type as bexpr's field configuration sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    String,
    /// Any Go integer kind.
    Int,
    Bool,
    /// `time.Duration` (an `int64` to bexpr); answers hold `"10s"` or ns.
    Duration,
    /// A slice of a primitive (`Tags`).
    List(Box<Type>),
    /// A slice of structs (`Checks`): sub-selectors test every element.
    StructList(Fields),
    /// `map[string]T`.
    Map(Box<Type>),
    Struct(Fields),
}

/// A struct's selectable fields, by Go name.
pub type Fields = Vec<(String, Type)>;

fn fields(list: Vec<(&str, Type)>) -> Fields {
    list.into_iter().map(|(n, t)| (n.to_string(), t)).collect()
}

impl Type {
    /// The field `name` of a struct or struct slice.
    pub fn field(&self, name: &str) -> Option<&Type> {
        match self {
            Type::Struct(fields) | Type::StructList(fields) => {
                fields.iter().find(|(n, _)| n == name).map(|(_, t)| t)
            }
            _ => None,
        }
    }
}

fn map_of(t: Type) -> Type {
    Type::Map(Box::new(t))
}

fn strings() -> Type {
    Type::List(Box::new(Type::String))
}

/// `Weights {Passing, Warning}`.
fn weights() -> Type {
    Type::Struct(fields(vec![("Passing", Type::Int), ("Warning", Type::Int)]))
}

fn mesh_gateway() -> Type {
    Type::Struct(fields(vec![("Mode", Type::String)]))
}

/// A connect proxy's configuration (`Proxy`, `ServiceProxy`) without its
/// free-form `Config`, which bexpr skips.
fn proxy() -> Type {
    Type::Struct(fields(vec![
        ("DestinationServiceName", Type::String),
        ("DestinationServiceID", Type::String),
        ("LocalServiceAddress", Type::String),
        ("LocalServicePort", Type::Int),
        ("LocalServiceSocketPath", Type::String),
        ("Mode", Type::String),
        (
            "TransparentProxy",
            Type::Struct(fields(vec![
                ("OutboundListenerPort", Type::Int),
                ("DialedDirectly", Type::Bool),
            ])),
        ),
        (
            "Upstreams",
            Type::StructList(fields(vec![
                ("DestinationType", Type::String),
                ("DestinationNamespace", Type::String),
                ("DestinationPartition", Type::String),
                ("DestinationPeer", Type::String),
                ("DestinationName", Type::String),
                ("Datacenter", Type::String),
                ("LocalBindAddress", Type::String),
                ("LocalBindPort", Type::Int),
                ("LocalBindSocketPath", Type::String),
                ("LocalBindSocketMode", Type::String),
                ("MeshGateway", mesh_gateway()),
                ("CentrallyConfigured", Type::Bool),
            ])),
        ),
        ("MeshGateway", mesh_gateway()),
        (
            "Expose",
            Type::Struct(fields(vec![
                ("Checks", Type::Bool),
                (
                    "Paths",
                    Type::StructList(fields(vec![
                        ("ListenerPort", Type::Int),
                        ("Path", Type::String),
                        ("LocalPathPort", Type::Int),
                        ("Protocol", Type::String),
                        ("ParsedFromCheck", Type::Bool),
                    ])),
                ),
            ])),
        ),
    ]))
}

fn connect() -> Type {
    Type::Struct(fields(vec![("Native", Type::Bool)]))
}

/// A service's `TaggedAddresses`: `map[string]{Address, Port}`.
fn service_tagged_addresses() -> Type {
    map_of(Type::Struct(fields(vec![
        ("Address", Type::String),
        ("Port", Type::Int),
    ])))
}

/// `api.AgentService` (`/v1/agent/services`) and `structs.NodeService`
/// (the services of `/v1/catalog/node/:n`, `Service` of
/// `/v1/health/service/:s`): the same selectable fields.
fn service() -> Fields {
    fields(vec![
        ("Kind", Type::String),
        ("ID", Type::String),
        ("Service", Type::String),
        ("Tags", strings()),
        ("Meta", map_of(Type::String)),
        ("Port", Type::Int),
        ("Address", Type::String),
        ("SocketPath", Type::String),
        ("TaggedAddresses", service_tagged_addresses()),
        ("Weights", weights()),
        ("EnableTagOverride", Type::Bool),
        ("Proxy", proxy()),
        ("Connect", connect()),
        ("PeerName", Type::String),
    ])
}

/// `structs.Node` (`/v1/catalog/nodes`, `Node` of `/v1/health/service/:s`).
fn node() -> Fields {
    fields(vec![
        ("ID", Type::String),
        ("Node", Type::String),
        ("Address", Type::String),
        ("Datacenter", Type::String),
        ("TaggedAddresses", map_of(Type::String)),
        ("Meta", map_of(Type::String)),
        ("PeerName", Type::String),
    ])
}

/// `structs.HealthCheck` with its `Definition`.
fn health_check() -> Fields {
    fields(vec![
        ("Node", Type::String),
        ("CheckID", Type::String),
        ("Name", Type::String),
        ("Status", Type::String),
        ("Notes", Type::String),
        ("Output", Type::String),
        ("ServiceID", Type::String),
        ("ServiceName", Type::String),
        ("ServiceTags", strings()),
        ("Type", Type::String),
        ("Interval", Type::String),
        ("Timeout", Type::String),
        ("ExposedPort", Type::Int),
        ("PeerName", Type::String),
        (
            "Definition",
            Type::Struct(fields(vec![
                ("HTTP", Type::String),
                ("TLSServerName", Type::String),
                ("TLSSkipVerify", Type::Bool),
                ("Header", map_of(strings())),
                ("Method", Type::String),
                ("Body", Type::String),
                ("DisableRedirects", Type::Bool),
                ("TCP", Type::String),
                ("TCPUseTLS", Type::Bool),
                ("UDP", Type::String),
                ("H2PING", Type::String),
                ("H2PingUseTLS", Type::Bool),
                ("OSService", Type::String),
                ("Interval", Type::Duration),
                ("OutputMaxSize", Type::Int),
                ("Timeout", Type::Duration),
                ("DeregisterCriticalServiceAfter", Type::Duration),
                ("ScriptArgs", strings()),
                ("DockerContainerID", Type::String),
                ("Shell", Type::String),
                ("GRPC", Type::String),
                ("GRPCUseTLS", Type::Bool),
                ("AliasNode", Type::String),
                ("AliasService", Type::String),
                ("TTL", Type::Duration),
            ])),
        ),
    ])
}

/// `structs.ServiceNode`: a row of `/v1/catalog/service/:s` (and what
/// `/v1/catalog/services` filters before it groups names and tags): the
/// node's fields (its `Meta` as `NodeMeta`), then the service's, each
/// prefixed `Service` (`Service` itself as `ServiceName`), then `PeerName`.
fn service_node() -> Fields {
    let node = node()
        .into_iter()
        .filter(|(n, _)| n != "PeerName")
        .map(|(n, t)| (if n == "Meta" { "NodeMeta".into() } else { n }, t));
    let service = service()
        .into_iter()
        .filter(|(n, _)| n != "PeerName")
        .map(|(n, t)| match n.as_str() {
            "Service" => ("ServiceName".to_string(), t),
            _ => (format!("Service{n}"), t),
        });
    node.chain(service)
        .chain([("PeerName".to_string(), Type::String)])
        .collect()
}

/// A `/v1/agent/members` entry (serf's member as Consul's api shows it).
fn member() -> Fields {
    fields(vec![
        ("Name", Type::String),
        ("Addr", Type::String),
        ("Port", Type::Int),
        ("Tags", map_of(Type::String)),
        ("Status", Type::Int),
        ("ProtocolMin", Type::Int),
        ("ProtocolMax", Type::Int),
        ("ProtocolCur", Type::Int),
        ("DelegateMin", Type::Int),
        ("DelegateMax", Type::Int),
        ("DelegateCur", Type::Int),
    ])
}

/// The element type each filterable endpoint tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// `/v1/agent/services` values; `/v1/catalog/node/:n`'s services.
    Service,
    /// `/v1/catalog/nodes`.
    Node,
    /// `/v1/catalog/service/:s`, `/v1/catalog/services`.
    ServiceNode,
    /// `/v1/agent/checks` values, `/v1/health/{node,checks,state}`.
    HealthCheck,
    /// `/v1/health/service/:s`: `Node`, `Service`, `Checks`.
    ServiceEntry,
    /// `/v1/agent/members`.
    Member,
}

impl Schema {
    pub fn root(self) -> &'static Type {
        static SERVICE: LazyLock<Type> = LazyLock::new(|| Type::Struct(service()));
        static NODE: LazyLock<Type> = LazyLock::new(|| Type::Struct(node()));
        static SERVICE_NODE: LazyLock<Type> = LazyLock::new(|| Type::Struct(service_node()));
        static HEALTH_CHECK: LazyLock<Type> = LazyLock::new(|| Type::Struct(health_check()));
        static SERVICE_ENTRY: LazyLock<Type> = LazyLock::new(|| {
            Type::Struct(fields(vec![
                ("Node", Type::Struct(node())),
                ("Service", Type::Struct(service())),
                ("Checks", Type::StructList(health_check())),
            ]))
        });
        static MEMBER: LazyLock<Type> = LazyLock::new(|| Type::Struct(member()));
        match self {
            Schema::Service => &SERVICE,
            Schema::Node => &NODE,
            Schema::ServiceNode => &SERVICE_NODE,
            Schema::HealthCheck => &HEALTH_CHECK,
            Schema::ServiceEntry => &SERVICE_ENTRY,
            Schema::Member => &MEMBER,
        }
    }
}
