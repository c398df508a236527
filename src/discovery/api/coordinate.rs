//! Consul wire types for `/v1/coordinate`: a network coordinate (`Vec`,
//! `Error`, `Adjustment`, `Height`, in that order, seconds), a node's entry
//! (`Node`, `Segment`, `Coord`; also the `PUT /v1/coordinate/update` body)
//! and a datacenter's map of server coordinates. Keys are read as Consul
//! writes them or as [`super::agent::decode`] folds them.

use serde::{Deserialize, Serialize};

/// serf's `coordinate.Coordinate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Coord {
    #[serde(rename = "Vec", alias = "vec", default)]
    pub vec: Vec<f64>,
    #[serde(rename = "Error", alias = "error", default)]
    pub error: f64,
    #[serde(rename = "Adjustment", alias = "adjustment", default)]
    pub adjustment: f64,
    #[serde(rename = "Height", alias = "height", default)]
    pub height: f64,
}

/// One node's coordinate in one segment (`CoordinateEntry`); the body of
/// `PUT /v1/coordinate/update` too (`Coord` may then be absent or `null`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinateEntry {
    #[serde(rename = "Node", alias = "node", default)]
    pub node: String,
    #[serde(rename = "Segment", alias = "segment", default)]
    pub segment: String,
    #[serde(rename = "Coord", alias = "coord", default)]
    pub coord: Option<Coord>,
}

/// `GET /v1/coordinate/datacenters`: one datacenter's servers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinateDatacenterMap {
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
    #[serde(rename = "AreaID")]
    pub area_id: String,
    #[serde(rename = "Coordinates", default)]
    pub coordinates: Vec<CoordinateEntry>,
}
