//! Health reads by check: a service's checks, the checks in a state, and a
//! service's instances filtered by several tags (what `watch` needs).

use super::{segment, Client, Error, Meta, Query};
use crate::discovery::api::health::{HealthCheck, ServiceEntry};

impl Client {
    /// `GET /v1/health/checks/<service>`.
    pub async fn health_checks(
        &self,
        service: &str,
        q: &Query,
    ) -> Result<(Vec<HealthCheck>, Meta), Error> {
        let path = format!("/v1/health/checks/{}", segment(service));
        self.read_list(&path, Vec::new(), q).await
    }

    /// `GET /v1/health/state/<state>` (`any`, `passing`, `warning`, `critical`).
    pub async fn health_state(
        &self,
        state: &str,
        q: &Query,
    ) -> Result<(Vec<HealthCheck>, Meta), Error> {
        let path = format!("/v1/health/state/{}", segment(state));
        self.read_list(&path, Vec::new(), q).await
    }

    /// `GET /v1/health/service/<name>[?passing][&tag=...]` with every tag
    /// required (the Go client's `ServiceMultipleTags`).
    pub async fn health_service_tags(
        &self,
        name: &str,
        tags: &[String],
        passing: bool,
        q: &Query,
    ) -> Result<(Vec<ServiceEntry>, Meta), Error> {
        let mut params = Vec::new();
        if passing {
            params.push(("passing", "1".to_string()));
        }
        params.extend(tags.iter().map(|t| ("tag", t.clone())));
        let path = format!("/v1/health/service/{}", segment(name));
        self.read_list(&path, params, q).await
    }
}
