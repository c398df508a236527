//! `PUT /v1/txn` (consul-wire.md §4.5): KV, Node, Service, Check and
//! Session operations; all ops apply or none; 200
//! `{"Results":[...],"Errors":null}` or 409 with the errors. A txn made only
//! of reads is answered from the state without a write, with the query
//! headers. A KV-only txn stays the `KvTxn` command older servers apply.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;

use super::query::{self, json, json_with_index, ApiError, QueryOptions};
use crate::discovery::api::txn::{parse_ops, TxnResponse};
use crate::discovery::server::state::kv::{TxnError, TxnOutcome};
use crate::discovery::server::state::txn::{self, TxnOp};
use crate::discovery::server::state::{Command, Outcome};
use crate::discovery::server::Server;

/// Consul's `maxTxnOps` (older releases; newer allow 128).
pub const MAX_OPS: usize = 64;
/// Consul's default `txn_max_req_len`.
pub const MAX_BODY: usize = 512 * 1024;

pub fn routes() -> Router<Server> {
    Router::new().route(
        "/v1/txn",
        put(txn)
            .fallback(query::reject_method)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY * 2)),
    )
}

async fn txn(
    State(server): State<Server>,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large(format!(
            "Request body({} bytes) too large, max size: {MAX_BODY} bytes. See {}.",
            body.len(),
            "https://www.consul.io/docs/agent/config/config-files#txn_max_req_len"
        )));
    }
    let parsed = parse_ops(&body)
        .map_err(|e| ApiError::bad_request(format!("Failed to parse body: {e}")))?;
    drop(body);
    if parsed.len() > MAX_OPS {
        return Err(ApiError::too_large(format!(
            "Transaction contains too many operations ({} > {MAX_OPS})",
            parsed.len()
        )));
    }
    let mut ops = Vec::with_capacity(parsed.len());
    let mut errors = Vec::new();
    for (op_index, op) in parsed.into_iter().enumerate() {
        match op {
            Ok(mut op) => match op.bound() {
                Ok(()) => ops.push(op),
                Err(e) => errors.push(TxnError {
                    op_index,
                    what: e.to_string(),
                }),
            },
            Err(what) => errors.push(TxnError { op_index, what }),
        }
    }
    if !errors.is_empty() {
        return Ok(answer(&TxnOutcome::RolledBack(errors), &opts, None));
    }
    let kv_only: Option<Vec<_>> = ops
        .iter()
        .map(|op| match op {
            TxnOp::Kv(op) => Some(op.clone()),
            _ => None,
        })
        .collect();
    if let Some(ops) = kv_only {
        if let Some((outcome, index)) = server.read(|s| s.kv_txn_read(&ops)) {
            return Ok(answer(&outcome, &opts, Some(index)));
        }
        return match server.write(Command::KvTxn { ops }).await?.outcome {
            Outcome::Txn(outcome) => Ok(answer(&outcome, &opts, None)),
            other => Err(ApiError::internal(format!(
                "unexpected outcome of a txn: {other:?}"
            ))),
        };
    }
    let dc = &server.config().datacenter;
    if let Some((outcome, index)) = server.read(|s| s.txn_read(&ops)) {
        return Ok(answer_results(&outcome, dc, &opts, Some(index)));
    }
    match server.write(Command::Txn { ops }).await?.outcome {
        Outcome::TxnResults(outcome) => Ok(answer_results(&outcome, dc, &opts, None)),
        other => Err(ApiError::internal(format!(
            "unexpected outcome of a txn: {other:?}"
        ))),
    }
}

fn answer(outcome: &TxnOutcome, opts: &QueryOptions, index: Option<u64>) -> Response {
    let rolled_back = matches!(outcome, TxnOutcome::RolledBack(_));
    respond(
        &TxnResponse::from_outcome(outcome),
        rolled_back,
        opts,
        index,
    )
}

fn answer_results(
    outcome: &txn::TxnOutcome,
    datacenter: &str,
    opts: &QueryOptions,
    index: Option<u64>,
) -> Response {
    let rolled_back = matches!(outcome, txn::TxnOutcome::RolledBack(_));
    respond(
        &TxnResponse::from_results(outcome, datacenter),
        rolled_back,
        opts,
        index,
    )
}

fn respond(
    body: &TxnResponse,
    rolled_back: bool,
    opts: &QueryOptions,
    index: Option<u64>,
) -> Response {
    let mut r = match index {
        Some(i) => json_with_index(body, i, opts),
        None => json(body, opts),
    };
    if rolled_back {
        *r.status_mut() = StatusCode::CONFLICT;
    }
    r.into_response()
}
