//! `portcullis defs serve`: a small static HTTP(S) server for one definitions package directory,
//! so an organisation can run its own update server (or mirror) without anything else.
//!
//! It serves only the plain files directly in the directory (no listings, no sub-directories,
//! no hidden files) and logs every request. It needs no trust of its own: appliances verify
//! every package against their pinned keys, so a compromised server can refuse service but
//! never install anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A client that does not finish its TLS handshake in this time is dropped, so idle
/// connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The router serving the files of `dir`.
pub fn router(dir: &Path) -> Router {
    Router::new()
        .route("/{name}", axum::routing::get(file))
        .fallback(not_found)
        .with_state(Arc::new(dir.to_path_buf()))
}

async fn not_found(
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
) -> StatusCode {
    tracing::info!(target: "defs", client = %client, path = %uri.path(), status = 404, "definitions request");
    StatusCode::NOT_FOUND
}

async fn file(
    State(dir): State<Arc<PathBuf>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    let path = dir.join(&name);
    let opened = match plain {
        true => tokio::fs::File::open(&path).await.ok(),
        false => None,
    };
    let metadata = match &opened {
        Some(f) => f.metadata().await.ok().filter(|m| m.is_file()),
        None => None,
    };
    let (Some(f), Some(metadata)) = (opened, metadata) else {
        tracing::info!(target: "defs", client = %client, file = %name, status = 404, "definitions request");
        return StatusCode::NOT_FOUND.into_response();
    };
    tracing::info!(target: "defs", client = %client, file = %name, status = 200, bytes = metadata.len(), "definitions request");
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(f));
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, metadata.len().to_string()),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        body,
    )
        .into_response()
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tracing::info!(target: "defs", listen = %listener.local_addr()?, tls = acceptor.is_some(), "definitions server listening");
    loop {
        let (stream, client) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(target: "defs", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = router.clone().layer(axum::Extension(ConnectInfo(client)));
        let service = TowerToHyperService::new(service);
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let http = hyper::server::conn::http1::Builder::new();
            let result = match acceptor {
                None => {
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    tokio::select! { r = connection => r, _ = shutdown.cancelled() => Ok(()) }
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::info!(target: "defs", client = %client, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(target: "defs", client = %client, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection = http.serve_connection(TokioIo::new(tls), service);
                    tokio::select! { r = connection => r, _ = shutdown.cancelled() => Ok(()) }
                }
            };
            if let Err(e) = result {
                tracing::debug!(target: "defs", client = %client, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Why `portcullis defs serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The package directory is unusable.
    #[error("{}: {problem}", dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

/// `portcullis defs serve`: serves `dir` on `listen` (HTTPS with `tls` = (certificate chain,
/// key) PEM files) until SIGINT or SIGTERM.
pub async fn run(
    dir: &Path,
    listen: SocketAddr,
    tls: Option<(&Path, &Path)>,
) -> Result<(), ServeError> {
    if !dir.is_dir() {
        return Err(ServeError::Directory {
            dir: dir.to_path_buf(),
            problem: "is not a directory".into(),
        });
    }
    if !dir.join(portcullis_defs::MANIFEST_FILE).is_file() {
        tracing::warn!(target: "defs", dir = %dir.display(), "no manifest.json in the directory: appliances will find no package");
    }
    let tls = match tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key, dir, "localhost")?),
        None => None,
    };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: listen,
            source,
        })?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
        tracing::info!(target: "defs", "definitions server stopping");
        stop.cancel();
    });
    serve(listener, router(dir), tls, shutdown).await?;
    Ok(())
}
