//! `GET /v1/snapshot` and `PUT /v1/snapshot`: save the whole replicated state
//! (KV, sessions, catalog) and restore it, as `consul snapshot save|restore`
//! do. The file and archive formats are `discovery::snapshot`'s.
//!
//! A save answers Consul's container (a gzip'd tar of `meta.json`,
//! `state.bin` and `SHA256SUMS`); a restore takes it, the archive checked
//! as Consul checks it (500 with Consul's texts), or the older
//! `pilotfish-snapshot` file (400 naming what is wrong, nothing changed).
//!
//! A save reads the local replica after the read mode's check (default:
//! a leader is known; `?stale`: whatever this server has; `?consistent`:
//! confirmed with a quorum). The state's JSON is written straight from the
//! replica (no copy of the state, under its read lock, which holds back
//! applying writes meanwhile) into an anonymous file in the data dir (or
//! `$TMPDIR`), hashed as it goes, and the answer is streamed from that
//! file: a save never holds the state twice nor its JSON in memory. A restore is one raft entry,
//! [`Command::Restore`], so every server applies it at the same index; the
//! indexes clients see afterwards are described in `state`'s module doc.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::query::{self, ApiError, QueryOptions};
use crate::discovery::api::snapshot::{RaftConfiguration, RaftServer, SnapshotMeta};
use crate::discovery::server::state::Command;
use crate::discovery::server::{blocking, Consistency, Server};
use crate::discovery::snapshot::{archive, decode, write_body, SnapshotFileError, MAX_SNAPSHOT};

pub fn routes() -> Router<Server> {
    Router::new().route(
        "/v1/snapshot",
        get(save)
            .put(restore)
            .fallback(query::reject_method)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_SNAPSHOT + 1)),
    )
}

/// A temporary file in `dir` (or `$TMPDIR`), gone once closed.
fn scratch(dir: Option<&std::path::Path>) -> std::io::Result<std::fs::File> {
    match dir {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
}

/// The archive of the replica as it is: the state's JSON written to an
/// anonymous file under the replica's read lock (hashed as it goes), then
/// the archive built from it into another; answers that file, its length
/// and the index the state was taken at.
fn save_to_file(
    server: &Server,
    dir: Option<&std::path::Path>,
) -> std::io::Result<(std::fs::File, u64, u64)> {
    use std::io::Seek;
    let out = std::io::BufWriter::with_capacity(1 << 20, scratch(dir)?);
    let (index, term, membership, written) = server.read_raft(|s, last_log, stored| {
        let index = s.last_applied();
        let term = last_log.map_or(0, |l| l.leader_id.term);
        let membership = stored.membership();
        let servers: Vec<(String, String, u8)> = membership
            .nodes()
            .map(|(id, p)| {
                let voter = membership.voter_ids().any(|v| v == *id);
                (p.node_id.clone(), p.addr.clone(), u8::from(!voter))
            })
            .collect();
        let configuration_index = stored.log_id().map_or(0, |l| l.index);
        (
            index,
            term,
            (servers, configuration_index),
            write_body(&s.snapshot_view(), index, out),
        )
    });
    let (header, out) = written?;
    let mut state = out.into_inner().map_err(|e| e.into_error())?;
    let size = state.stream_position()?;
    state.rewind()?;
    // The header line's sha256 is the body's: `sha256=<hex>` is its last word.
    let sha = header
        .trim_end()
        .rsplit_once("sha256=")
        .map_or(String::new(), |(_, h)| h.to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (servers, configuration_index) = membership;
    let meta = SnapshotMeta {
        version: 1,
        id: format!("{term}-{index}-{}", now.as_millis()),
        index,
        term,
        peers: archive::legacy_peers(
            &servers
                .iter()
                .filter(|s| s.2 == 0)
                .map(|s| s.1.clone())
                .collect::<Vec<_>>(),
        ),
        configuration: RaftConfiguration {
            servers: servers
                .into_iter()
                .map(|(id, address, suffrage)| RaftServer {
                    suffrage,
                    id,
                    address,
                })
                .collect(),
        },
        configuration_index,
        size,
    };
    let archive = std::io::BufWriter::new(scratch(dir)?);
    let archive = archive::write(
        archive,
        &meta,
        std::io::BufReader::new(state),
        &sha,
        now.as_secs(),
    )?;
    let mut file = archive.into_inner().map_err(|e| e.into_error())?;
    let len = file.stream_position()?;
    file.rewind()?;
    Ok((file, len, index))
}

/// `GET /v1/snapshot[?stale|?consistent]`: the archive, with
/// `X-Consul-Index` set to the index it was taken at.
async fn save(State(server): State<Server>, opts: QueryOptions) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    // Not a query path for the middleware (Consul forwards snapshots to the
    // leader unless ?stale): apply the read mode here.
    let mode = if opts.stale {
        Consistency::Stale
    } else if opts.consistent {
        Consistency::Consistent
    } else {
        Consistency::Default
    };
    server
        .read_barrier(mode)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let dir = server.config().data_dir.clone();
    let (file, total, index) = blocking(|| save_to_file(&server, dir.as_deref()))
        .map_err(|e| ApiError::internal(format!("writing the snapshot: {e}")))?;
    let mut resp = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        tokio::fs::File::from_std(file),
        256 * 1024,
    ))
    .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-gzip"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    query::query_headers(&mut resp, index);
    Ok(resp)
}

/// `PUT /v1/snapshot` with a file as the body: verified, then replicated as
/// one [`Command::Restore`]. 200 with an empty body, as Consul.
async fn restore(
    State(server): State<Server>,
    opts: QueryOptions,
    body: Bytes,
) -> Result<Response, ApiError> {
    opts.check_dc(&server)?;
    if body.len() > MAX_SNAPSHOT {
        return Err(ApiError::too_large(format!(
            "Snapshot too large ({} bytes): at most {MAX_SNAPSHOT} bytes can be restored",
            body.len()
        )));
    }
    let file = decode(&body).map_err(|e| match e {
        // Consul's 500s and texts for its own container.
        SnapshotFileError::Archive(e) => ApiError::internal(e.to_string()),
        // A state.bin that is not pilotfish's (a Consul archive, say).
        SnapshotFileError::Content(_) | SnapshotFileError::StateFormat { .. }
            if archive::is_archive(&body) =>
        {
            ApiError::internal(format!("Raft error when restoring snapshot: state.bin {e}"))
        }
        e => ApiError::bad_request(format!("Invalid snapshot: {e}. Nothing was restored.")),
    })?;
    drop(body);
    let written = server
        .write(Command::Restore {
            snapshot: Box::new(file.snapshot),
        })
        .await?;
    tracing::info!(
        "restored the snapshot taken at index {} (restore applied at index {})",
        file.index,
        written.index
    );
    Ok(().into_response())
}
