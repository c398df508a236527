//! `/v1/kv/<key>`: GET (single key, `?recurse`, `?keys[&separator]`, `?raw`,
//! blocking), PUT (`?flags`, `?cas`, `?acquire`, `?release`) and DELETE
//! (`?recurse`, `?cas`), with Consul's status codes and texts
//! (consul-wire.md §4). The key is the raw remainder of the decoded path, so
//! it may contain `/` and may be empty (`GET /v1/kv/?recurse`).
//!
//! Blocking indexes are per query (§3.2): a single key answers with its own
//! ModifyIndex (or its tombstone's), a prefix with the max under it including
//! tombstones, so a write to one key wakes only the queries watching it.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use super::query::{self, json, ApiError, QueryOptions, Rendered};
use crate::discovery::api::kv::KvPair;
use crate::discovery::server::state::{Command, Outcome};
use crate::discovery::server::{Server, Topic};

/// Consul's default `kv_max_value_size`.
pub const MAX_VALUE_SIZE: usize = 512 * 1024;

const VALUE_SIZE_DOC: &str =
    "https://www.consul.io/docs/agent/config/config-files#kv_max_value_size";

pub fn routes() -> Router<Server> {
    Router::new()
        .route("/v1/kv/", any(kv))
        .route("/v1/kv/{*key}", any(kv))
}

async fn kv(State(server): State<Server>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (method, key, opts, length) = match head(parts, &server) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    // A parked query keeps only its key and options: the request head
    // (headers, URI, extensions) and the empty GET body are gone by now.
    // The writes are boxed so that their futures (reading a body, waiting
    // for the write) do not size this one, which a parked GET keeps alive.
    let result = match method {
        Method::GET => {
            drop(body);
            get(server, key, opts).await
        }
        Method::PUT => Box::pin(put(server, key, opts, body, length)).await,
        Method::DELETE => {
            drop(body);
            Box::pin(delete(server, key, opts)).await
        }
        other => Err(query::method_not_allowed(&other)),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The method, key, options and Content-Length of a KV request; consumes
/// the head so none of it outlives parsing.
fn head(
    parts: Parts,
    server: &Server,
) -> Result<(Method, String, QueryOptions, Option<u64>), ApiError> {
    let opts = QueryOptions::parse(parts.uri.query(), &parts.headers)?;
    opts.check_dc(server)?;
    let key = query::path_rest(parts.uri.path(), "/v1/kv/")?;
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    Ok((parts.method, key, opts, length))
}

async fn get(server: Server, key: String, opts: QueryOptions) -> Result<Response, ApiError> {
    let pretty = opts.pretty;
    if opts.flag("keys") {
        // Consul reads the historic misspelling too; `separator` wins.
        let sep = opts
            .get("separator")
            .or_else(|| opts.get("seperator"))
            .map(String::from);
        let blocking = opts
            .blocking("kv", &key)
            .watching(Topic::KvPrefix(key.clone()));
        drop(opts);
        let prefix = key.clone();
        return Ok(blocking
            .answer(
                &server,
                move |s| s.kv_prefix_index(&prefix),
                move |s| {
                    let keys = s.kv_keys(&key, sep.as_deref()).0;
                    // The root answers `[]`, any other empty prefix 404.
                    if keys.is_empty() && !key.is_empty() {
                        return Rendered::not_found();
                    }
                    Rendered::json(&keys, pretty)
                },
            )
            .await);
    }
    if opts.flag("recurse") {
        let blocking = opts
            .blocking("kv", &key)
            .watching(Topic::KvPrefix(key.clone()));
        drop(opts);
        let prefix = key.clone();
        return Ok(blocking
            .answer(
                &server,
                move |s| s.kv_prefix_index(&prefix),
                move |s| {
                    let pairs: Vec<KvPair> =
                        s.kv_list(&key).0.into_iter().map(KvPair::from).collect();
                    if pairs.is_empty() {
                        return Rendered::not_found();
                    }
                    Rendered::json(&pairs, pretty)
                },
            )
            .await);
    }
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    let raw = opts.flag("raw");
    let blocking = opts
        .blocking("kv", &key)
        .watching(Topic::KvKey(key.clone()));
    drop(opts);
    let probe_key = key.clone();
    Ok(blocking
        .answer(
            &server,
            move |s| s.kv_key_index(&probe_key),
            move |s| match s.kv_get(&key).0 {
                None => Rendered::not_found(),
                Some(e) if raw => Rendered::raw(e.value.clone()),
                Some(e) => Rendered::json(&[KvPair::from(e)], pretty),
            },
        )
        .await)
}

async fn put(
    server: Server,
    key: String,
    opts: QueryOptions,
    body: Body,
    length: Option<u64>,
) -> Result<Response, ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    opts.conflicting(&["cas", "acquire", "release"])?;
    let flags = opts.uint_param("flags")?.unwrap_or(0);
    let cas = opts.uint_param("cas")?;
    if let Some(n) = length.filter(|n| *n > MAX_VALUE_SIZE as u64) {
        // Read (and drop) a bounded oversized body first: answering before
        // the client finished sending makes it see a reset, not the 413.
        if n <= DRAIN_LIMIT {
            let _ = axum::body::to_bytes(body, DRAIN_LIMIT as usize).await;
        }
        return Err(too_large(n));
    }
    let value = axum::body::to_bytes(body, MAX_VALUE_SIZE)
        .await
        .map_err(|e| body_error(e, length))?
        .to_vec();
    let cmd = if let Some(index) = cas {
        Command::KvCas {
            key,
            value,
            flags,
            index,
        }
    } else if let Some(session) = opts.get("acquire") {
        Command::KvAcquire {
            key,
            value,
            flags,
            session: session.to_string(),
        }
    } else if let Some(session) = opts.get("release") {
        Command::KvRelease {
            key,
            value,
            flags,
            session: session.to_string(),
        }
    } else {
        Command::KvSet { key, value, flags }
    };
    write_bool(&server, cmd, &opts).await
}

async fn delete(server: Server, key: String, opts: QueryOptions) -> Result<Response, ApiError> {
    opts.conflicting(&["recurse", "cas"])?;
    let cmd = if opts.flag("recurse") {
        Command::KvDeleteTree { prefix: key }
    } else if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    } else if let Some(index) = opts.uint_param("cas")? {
        Command::KvDeleteCas { key, index }
    } else {
        Command::KvDelete { key }
    };
    write_bool(&server, cmd, &opts).await
}

/// Apply a KV write and answer its `true`/`false`.
async fn write_bool(
    server: &Server,
    cmd: Command,
    opts: &QueryOptions,
) -> Result<Response, ApiError> {
    match server.write(cmd).await {
        Ok(w) => match w.outcome {
            Outcome::Bool(b) => Ok(json(&b, opts)),
            other => Err(ApiError::internal(format!(
                "unexpected outcome of a KV write: {other:?}"
            ))),
        },
        Err(e) => Err(e.into()),
    }
}

/// Oversized bodies up to this size are read before the 413 is sent.
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;

/// 413 when the body went over the limit; 400 when it could not be read
/// (a malformed chunk size, a body cut short).
fn body_error(e: axum::Error, length: Option<u64>) -> ApiError {
    let e = e.into_inner();
    if e.downcast_ref::<http_body_util::LengthLimitError>()
        .is_some()
    {
        return too_large(length.unwrap_or(MAX_VALUE_SIZE as u64 + 1));
    }
    ApiError::bad_request(format!("Failed to read the request body: {e}"))
}

fn too_large(n: u64) -> ApiError {
    ApiError::too_large(format!(
        "Request body({n} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See {VALUE_SIZE_DOC}."
    ))
}
