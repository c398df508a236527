//! `/v1/event`: fire a user event and list the agent's recent ones (a
//! blocking read on Consul's event index, see `api::event::id_to_index`).

use reqwest::Method;

use super::{decode, segment, Client, Error, Meta, Query, REQUEST_TIMEOUT};
use crate::discovery::api::event::UserEvent;

/// What to fire: the name, the payload, and the regex filters the agents
/// apply on receipt (`tag` needs `service`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fire {
    pub name: String,
    pub payload: Option<Vec<u8>>,
    pub node: Option<String>,
    pub service: Option<String>,
    pub tag: Option<String>,
}

impl Client {
    /// `PUT /v1/event/fire/<name>[?node=][&service=][&tag=]`, the payload as
    /// the body: the fired event as the agent answers it (`LTime` 0).
    pub async fn event_fire(&self, fire: &Fire) -> Result<UserEvent, Error> {
        let path = format!("/v1/event/fire/{}", segment(&fire.name));
        let params: Vec<(&str, String)> = [
            ("node", &fire.node),
            ("service", &fire.service),
            ("tag", &fire.tag),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().filter(|v| !v.is_empty()).map(|v| (k, v.clone())))
        .collect();
        let a = self
            .call(
                Method::PUT,
                &path,
                &params,
                fire.payload.clone(),
                REQUEST_TIMEOUT,
            )
            .await?
            .success()?;
        decode(&path, &a.body)
    }

    /// `GET /v1/event/list[?name=]`: the agent's ring, oldest first. Its
    /// index is not monotonic (compare it for equality only).
    pub async fn event_list(
        &self,
        name: Option<&str>,
        q: &Query,
    ) -> Result<(Vec<UserEvent>, Meta), Error> {
        let mut params = Vec::new();
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            params.push(("name", n.to_string()));
        }
        self.read_list("/v1/event/list", params, q).await
    }
}
