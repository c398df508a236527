//! Consul's `/v1/agent/metrics` JSON (go-metrics' `MetricsSummary`), fields
//! in go-metrics' order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSummary {
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    #[serde(rename = "Gauges", default)]
    pub gauges: Vec<GaugeValue>,
    #[serde(rename = "Points", default)]
    pub points: Vec<PointValue>,
    #[serde(rename = "Counters", default)]
    pub counters: Vec<SampledValue>,
    #[serde(rename = "Samples", default)]
    pub samples: Vec<SampledValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GaugeValue {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Value")]
    pub value: f32,
    #[serde(rename = "Labels", default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PointValue {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Points", default)]
    pub points: Vec<f32>,
}

/// A counter's or a sample's aggregate over the interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampledValue {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Count")]
    pub count: u64,
    #[serde(rename = "Rate")]
    pub rate: f64,
    #[serde(rename = "Sum")]
    pub sum: f64,
    #[serde(rename = "Min")]
    pub min: f64,
    #[serde(rename = "Max")]
    pub max: f64,
    #[serde(rename = "Mean")]
    pub mean: f64,
    #[serde(rename = "Stddev")]
    pub stddev: f64,
    #[serde(rename = "Labels", default)]
    pub labels: BTreeMap<String, String>,
}
