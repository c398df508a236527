//! The wire conventions every endpoint shares (consul-wire.md §0 and §3): query
//! flags true by presence, `?wait` as a Go duration, the token in three places, index
//! headers that are never 0, plain-text error bodies with Consul's status codes,
//! and the blocking-query wait rules.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::discovery::api::gofmt::{go_quote, parse_duration};
use crate::discovery::server::state::State;
use crate::discovery::server::{Server, Topic};

/// Default and maximum blocking wait (Consul's).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// Not Consul's (it reads any size): the largest registration body. A
/// registration within the limits of `state::catalog` is far smaller;
/// a bigger body is refused before it is parsed, since parsing JSON
/// costs ten times its size and the allocator keeps that high-water mark.
pub const REGISTRATION_MAX_BODY: usize = 256 * 1024;

/// The body limit of a registration route.
pub fn registration_body_limit() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(REGISTRATION_MAX_BODY)
}

/// The query string and headers of a request, decoded once.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    params: Vec<(String, String)>,
    pub token: Option<String>,
    /// `?index=`: 0 when absent (no blocking).
    pub index: u64,
    /// `?wait=`, clamped to [`MAX_WAIT`]; [`DEFAULT_WAIT`] when absent.
    pub wait: Duration,
    pub stale: bool,
    pub consistent: bool,
    pub pretty: bool,
    pub dc: Option<String>,
}

impl QueryOptions {
    pub fn parse(query: Option<&str>, headers: &HeaderMap) -> Result<QueryOptions, ApiError> {
        let params = query.map(url_pairs).transpose()?.unwrap_or_default();
        let mut o = QueryOptions {
            params,
            ..Default::default()
        };
        o.token = headers
            .get("x-consul-token")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .or_else(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(String::from)
            })
            .or_else(|| o.get("token").map(String::from));
        o.index = match o.get("index") {
            None => 0,
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::bad_request(format!("Invalid index '{v}'")))?,
        };
        o.wait = match o.get("wait") {
            None => DEFAULT_WAIT,
            Some(v) => parse_duration(v)
                .map_err(|e| ApiError::bad_request(format!("Invalid wait time: {e}")))?
                .min(MAX_WAIT),
        };
        o.stale = o.flag("stale");
        o.consistent = o.flag("consistent");
        if o.stale && o.consistent {
            return Err(ApiError::bad_request(
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ));
        }
        o.pretty = o.flag("pretty");
        o.dc = o.get("dc").filter(|d| !d.is_empty()).map(String::from);
        Ok(o)
    }

    /// The first value of a parameter (`Some("")` for `?recurse`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A `u64` parameter parsed like Go's `strconv.ParseUint` (`?cas=`,
    /// `?flags=`); Consul answers a bad one with 500 and Go's error text.
    pub fn uint_param(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_uint(v).map(Some),
        }
    }

    /// The query string re-encoded like Go's `url.Values.Encode()` (keys
    /// sorted), as Consul prints it in `Conflicting flags: ...`.
    pub fn encode(&self) -> String {
        let mut pairs: Vec<&(String, String)> = self.params.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// 400 `Conflicting flags: ...` when more than one of `flags` is present.
    pub fn conflicting(&self, flags: &[&str]) -> Result<(), ApiError> {
        if flags.iter().filter(|f| self.flag(f)).count() > 1 {
            return Err(ApiError::bad_request(format!(
                "Conflicting flags: {}",
                self.encode()
            )));
        }
        Ok(())
    }

    /// Every value of a repeatable parameter (`?tag=a&tag=b`).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// True by presence: `?recurse`, `?recurse=`, `?recurse=1`, `?keys=True`.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Go `strconv.ParseBool`, for `passing` and `enable`; empty means true.
    pub fn bool_param(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("" | "1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(Some(true)),
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!(
                "strconv.ParseBool: parsing \"{v}\": invalid syntax"
            ))),
        }
    }

    /// A blocking wait with Consul's jitter: up to wait/16 is added.
    pub fn jittered_wait(&self) -> Duration {
        let jitter = self.wait / 16;
        let frac: f64 = rand::random();
        self.wait + jitter.mul_f64(frac)
    }

    /// Reject any datacenter but ours (empty = ours).
    pub fn check_dc(&self, server: &Server) -> Result<(), ApiError> {
        check_datacenter(self.dc.as_deref(), server)
    }

    /// The blocking read of `endpoint` on `target` (a key, a name, or
    /// empty). Its key, which decides which parked queries share an answer,
    /// names the endpoint, the target and every parameter but the client's
    /// own index, wait and token (the ACL guard already let it in), each
    /// length-prefixed so no two requests can spell the same key.
    pub fn blocking(&self, endpoint: &str, target: &str) -> Blocking {
        use std::fmt::Write as _;
        // Without an index the read never parks, so it needs no key.
        let mut key = String::new();
        if self.index != 0 {
            let _ = write!(key, "{endpoint}\n{}:{target}", target.len());
            for (k, v) in &self.params {
                if !matches!(k.as_str(), "index" | "wait" | "token") {
                    let _ = write!(key, "\n{}:{k}{}:{v}", k.len(), v.len());
                }
            }
        }
        Blocking {
            key: key.into(),
            topic: Topic::Other,
            index: self.index,
            wait: self.jittered_wait(),
        }
    }
}

/// A blocking read as a parked query keeps it: its shared key, the
/// client's index and its wait (the options themselves are dropped).
pub struct Blocking {
    key: Arc<str>,
    topic: Topic,
    index: u64,
    wait: Duration,
}

impl Blocking {
    /// What the probe reads, when it is one KV key or prefix: a wake pass
    /// then runs it only after writes under it (default: every pass).
    pub fn watching(self, topic: Topic) -> Blocking {
        Blocking { topic, ..self }
    }

    /// Answer with `render`'s view of the state once `probe`, the query's
    /// index, is past the client's (see [`Server::block_on`]): every
    /// waiter of the same key gets the one answer rendered per wake.
    pub async fn answer(
        self,
        server: &Server,
        probe: impl Fn(&State) -> u64 + Send + Sync + 'static,
        render: impl Fn(&State) -> Rendered + Send + Sync + 'static,
    ) -> Response {
        let (rendered, index) = server
            .block_on(self.key, self.topic, self.index, self.wait, probe, render)
            .await;
        rendered.response(index)
    }
}

/// An answer rendered once and sent by every waiter of its query: status,
/// kind and body (shared, not copied, per response).
pub struct Rendered {
    status: StatusCode,
    kind: Kind,
    body: Bytes,
}

enum Kind {
    Json,
    /// A KV value as stored (`?raw`).
    Raw,
    Text,
}

impl Rendered {
    /// A JSON body (indented when `pretty`).
    pub fn json<T: Serialize>(value: &T, pretty: bool) -> Rendered {
        let body = if pretty {
            serde_json::to_vec_pretty(value)
        } else {
            serde_json::to_vec(value)
        };
        match body {
            Ok(b) => Rendered {
                status: StatusCode::OK,
                kind: Kind::Json,
                body: b.into(),
            },
            Err(e) => Rendered {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: Kind::Text,
                body: e.to_string().into(),
            },
        }
    }

    /// A KV value as stored (`?raw`), served so a browser won't run it.
    pub fn raw(value: Vec<u8>) -> Rendered {
        Rendered {
            status: StatusCode::OK,
            kind: Kind::Raw,
            body: value.into(),
        }
    }

    /// `404` with an empty body.
    pub fn not_found() -> Rendered {
        Rendered {
            status: StatusCode::NOT_FOUND,
            kind: Kind::Text,
            body: Bytes::new(),
        }
    }

    /// The answer with the query headers of `index`.
    pub fn response(&self, index: u64) -> Response {
        let mut r = self.to_response();
        query_headers(&mut r, index);
        r
    }

    fn to_response(&self) -> Response {
        let mut r = Response::new(Body::from(self.body.clone()));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        match self.kind {
            Kind::Json => {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Kind::Raw => {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                h.insert(
                    "x-content-type-options",
                    HeaderValue::from_static("nosniff"),
                );
                h.insert(
                    "content-security-policy",
                    HeaderValue::from_static("sandbox"),
                );
            }
            Kind::Text if !self.body.is_empty() => {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
            }
            Kind::Text => {}
        }
        r
    }
}

/// A `?dc=` or a body's `Datacenter`: ours (any case) or empty, else Consul's 500.
pub fn check_datacenter(dc: Option<&str>, server: &Server) -> Result<(), ApiError> {
    match dc {
        Some(dc) if !dc.is_empty() && !dc.eq_ignore_ascii_case(&server.config().datacenter) => {
            Err(ApiError::internal("No path to datacenter"))
        }
        _ => Ok(()),
    }
}

/// Go's `strconv.ParseUint(v, 10, 64)` with its error text.
pub fn parse_uint(v: &str) -> Result<u64, ApiError> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse().map_err(|_| {
            ApiError::internal(format!(
                "strconv.ParseUint: parsing {}: value out of range",
                go_quote(v)
            ))
        })
    } else {
        Err(ApiError::internal(format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            go_quote(v)
        )))
    }
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What follows `prefix` in a request path, percent-decoded the way Go's
/// `URL.Path` is (`%2F` becomes `/`, `+` stays `+`); empty if the path does
/// not start with `prefix`. Consul just trims the route prefix, so IDs and
/// keys may contain `/` and `:` and may be empty.
///
/// Consul's keys are Go strings, any bytes; ours are UTF-8 text, so a path
/// whose decoded bytes are not UTF-8 is a 400 rather than a lossy key that
/// would merge with another (`%FF` and `%FE` would both become U+FFFD).
pub fn path_rest(path: &str, prefix: &str) -> Result<String, ApiError> {
    let Some(rest) = path.strip_prefix(prefix) else {
        return Ok(String::new());
    };
    String::from_utf8(unescape(rest, false)).map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid path {path:?}: the percent-decoded bytes after {prefix:?} are not UTF-8; \
             keys and IDs must be UTF-8 text"
        ))
    })
}

/// Percent-decode `%XX` (and `+` as a space in a query component); a `%`
/// not followed by two hex digits stays as it is, as Go leaves it in paths.
fn unescape(s: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Consul's answer to a method a route does not serve.
pub fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed"),
    )
}

/// A `MethodRouter` fallback answering [`method_not_allowed`].
pub async fn reject_method(method: Method) -> ApiError {
    method_not_allowed(&method)
}

/// The decoded pairs of a query string; 400 for a component whose bytes
/// are not UTF-8 (a lossy decode could make two values one).
fn url_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    let text = |s: &str| {
        String::from_utf8(unescape(s, true)).map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid query parameter {s:?}: its percent-decoded bytes are not UTF-8"
            ))
        })
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((text(k)?, text(v)?))
        })
        .collect()
}

/// Decode `%XX` and `+` (as a space) in a query component, lossily (for
/// the ACL token, which then simply does not match).
pub fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&unescape(s, true)).into_owned()
}

impl<S: Send + Sync> FromRequestParts<S> for QueryOptions {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        QueryOptions::parse(parts.uri.query(), &parts.headers)
    }
}

/// An error answered the way Consul answers it: a status and a plain-text body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, m)
    }
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Permission denied")
    }
    pub fn too_large(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.message).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    }
}

/// A registration over the input limits: 400 with Consul's text.
impl From<crate::discovery::server::state::catalog::LimitError> for ApiError {
    fn from(e: crate::discovery::server::state::catalog::LimitError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl From<crate::discovery::server::WriteError> for ApiError {
    fn from(e: crate::discovery::server::WriteError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

/// A 404 with an empty body and the query headers (KV not found: clients
/// need `X-Consul-Index` to keep blocking).
/// The headers of a query endpoint: `X-Consul-Index` (never 0),
/// `X-Consul-KnownLeader`, `X-Consul-LastContact`.
pub fn query_headers(resp: &mut Response, index: u64) {
    let h = resp.headers_mut();
    h.insert("x-consul-index", HeaderValue::from(index.max(1)));
    h.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    h.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
}

/// A JSON body (indented with `?pretty`).
pub fn json<T: Serialize>(value: &T, opts: &QueryOptions) -> Response {
    Rendered::json(value, opts.pretty).to_response()
}

/// A JSON body with the query headers.
pub fn json_with_index<T: Serialize>(value: &T, index: u64, opts: &QueryOptions) -> Response {
    let mut r = json(value, opts);
    query_headers(&mut r, index);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_flags_and_tokens() {
        let mut h = HeaderMap::new();
        let o = QueryOptions::parse(
            Some("recurse&keys=True&index=7&wait=1s&tag=a&tag=b&token=t"),
            &h,
        )
        .unwrap();
        assert!(o.flag("recurse") && o.flag("keys") && !o.flag("raw"));
        assert_eq!((o.index, o.wait), (7, Duration::from_secs(1)));
        assert_eq!(o.all("tag"), ["a", "b"]);
        assert_eq!(o.token.as_deref(), Some("t"));
        h.insert("x-consul-token", HeaderValue::from_static("hdr"));
        let o = QueryOptions::parse(Some("token=q"), &h).unwrap();
        assert_eq!(o.token.as_deref(), Some("hdr"));
        assert_eq!(
            QueryOptions::parse(Some("wait=10"), &h).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(percent_decode("scope%2Fname"), "scope/name");
        assert_eq!(
            QueryOptions::parse(Some("stale&consistent"), &h)
                .unwrap_err()
                .message,
            "Cannot specify ?stale with ?consistent, conflicting semantics."
        );
    }

    #[test]
    fn non_utf8_keys_and_params_are_refused_not_merged() {
        for path in ["/v1/kv/u/%FF", "/v1/kv/u/%FE", "/v1/kv/%C3"] {
            let e = path_rest(path, "/v1/kv/").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{path}");
            assert!(e.message.contains(path), "{}", e.message);
        }
        assert_eq!(path_rest("/v1/kv/%C3%A9", "/v1/kv/").unwrap(), "é");
        let h = HeaderMap::new();
        let e = QueryOptions::parse(Some("keys&separator=%FF"), &h).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn wait_is_clamped_to_ten_minutes() {
        let h = HeaderMap::new();
        let o = QueryOptions::parse(Some("index=5&wait=1h"), &h).unwrap();
        assert_eq!(o.wait, Duration::from_secs(600));
    }

    #[test]
    fn paths_uints_and_conflicts_read_like_go() {
        assert_eq!(path_rest("/v1/kv/a%2Fb+c%3A", "/v1/kv/").unwrap(), "a/b+c:");
        assert_eq!(path_rest("/v1/kv/", "/v1/kv/").unwrap(), "");
        assert_eq!(path_rest("/v1/kv/100%", "/v1/kv/").unwrap(), "100%");
        assert_eq!(path_rest("/v1/kv/%4", "/v1/kv/").unwrap(), "%4");
        assert_eq!(parse_uint("12").unwrap(), 12);
        assert_eq!(
            parse_uint("").unwrap_err().message,
            "strconv.ParseUint: parsing \"\": invalid syntax"
        );
        let h = HeaderMap::new();
        let o = QueryOptions::parse(Some("release=s%201&cas=0"), &h).unwrap();
        assert_eq!(
            o.conflicting(&["cas", "acquire", "release"])
                .unwrap_err()
                .message,
            "Conflicting flags: cas=0&release=s+1"
        );
    }
}
