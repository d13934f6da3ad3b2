//! The public HTTP API (`[api] listen`): customers one at a time, with the
//! same validation and upsert rules as a CSV row, for a caller holding a
//! bearer token of one account. Errors are problem documents. Knows nothing
//! about SFTP.

pub mod auth;
mod customers;
mod idempotency;
mod jobs;
mod openapi;
pub mod problem;
mod rate;

use crate::config::ApiSettings;
use crate::penalties::Penalties;
use crate::serve_http::{BoundedServer, TlsFiles};
use crate::store::Store;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use problem::Problem;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every request handler sees.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) store: Store,
    /// Failed logins per source: the SFTP server's count, shared.
    penalties: Arc<Penalties>,
    /// Requests per token.
    rates: Arc<rate::RateLimits>,
    /// The OpenAPI document, made with the router.
    openapi: Arc<std::sync::OnceLock<String>>,
    /// Where bulk jobs arrive (as SFTP uploads do); `None`: no bulk jobs.
    ctx: Option<Arc<crate::ingest::Context>>,
}

impl ApiState {
    /// Failed token attempts count in `penalties` (the SFTP server's, so a
    /// source is refused alike on both); each token may make
    /// `settings.rate_per_token` requests a second, `burst_per_token` at once.
    pub fn new(store: Store, penalties: Arc<Penalties>, settings: &ApiSettings) -> ApiState {
        ApiState {
            store,
            penalties,
            rates: Arc::new(rate::RateLimits::new(settings.rate_per_token, settings.burst_per_token)),
            openapi: Arc::new(std::sync::OnceLock::new()),
            ctx: None,
        }
    }

    /// Bulk jobs arrive through `ctx`, as SFTP uploads do.
    pub fn with_jobs(mut self, ctx: Arc<crate::ingest::Context>) -> ApiState {
        self.ctx = Some(ctx);
        self
    }

    /// Refused by this process's count or by the count nodes share.
    async fn refused(&self, ip: IpAddr) -> bool {
        self.penalties.refuses(&self.store, ip).await
    }

    /// Counts a failure here and for all nodes; whether it is refused now.
    async fn record_failure(&self, ip: IpAddr) -> bool {
        self.penalties.count_failure(&self.store, ip, "token attempt").await
    }
}

/// The routes and their OpenAPI document, from one list: a route is
/// served only if it is documented.
fn routes() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(customers::find, customers::create))
        .routes(routes!(customers::get, customers::update))
        .routes(routes!(jobs::list, jobs::create))
        .routes(routes!(jobs::get, jobs::discard))
        .routes(routes!(jobs::put_data))
        .routes(routes!(jobs::complete))
        .routes(routes!(jobs::results))
        .routes(routes!(jobs::failed))
        .routes(routes!(openapi::serve))
        .split_for_parts()
}

/// The OpenAPI document the server serves (`docs/openapi.json`).
pub fn openapi_document() -> String {
    openapi::document(&routes().1)
}

/// The API's routes.
pub fn router(state: ApiState, settings: &ApiSettings) -> Router {
    let (routes, document) = routes();
    let _ = state.openapi.set(openapi::document(&document));
    routes
        .fallback(|| async { Problem::not_found("route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take this method")
        })
        .layer(DefaultBodyLimit::max(settings.max_json_bytes))
        .layer(axum::middleware::map_response(as_problem))
        .with_state(state)
}

/// An error answered by the framework (a body over the limit, a bad query
/// string) becomes a problem document like every other error.
async fn as_problem(response: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (code, detail) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is over the limit".to_owned()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send JSON".to_owned()),
        s if s.is_server_error() => ("internal_error", "the request failed; try again later".to_owned()),
        _ => ("bad_request", "the request is malformed".to_owned()),
    };
    Problem::new(status, code, detail).into_response()
}

/// The bound API listener.
pub struct ApiServer {
    server: BoundedServer,
    app: Router,
}

impl ApiServer {
    pub async fn bind(settings: &ApiSettings, tls: Option<Arc<TlsFiles>>, state: ApiState) -> std::io::Result<Self> {
        let server = BoundedServer::bind("api", &settings.listen, settings.limits(), tls).await?;
        Ok(ApiServer { server, app: router(state, settings) })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        self.server.run(self.app, shutdown).await
    }
}

/// Starts the API listener when enabled (TLS from `[api] tls_cert` /
/// `tls_key`, read again on SIGHUP); returns where it listens.
pub async fn start(
    config: &crate::config::Config,
    store: &Store,
    ctx: Arc<crate::ingest::Context>,
    penalties: Arc<Penalties>,
    tasks: &mut crate::app::Parts,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    use anyhow::Context as _;
    let settings = &config.api;
    if !settings.enabled {
        return Ok(None);
    }
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(TlsFiles::load(cert, key)?)),
        (None, None) => None,
        _ => anyhow::bail!("[api] tls_cert and tls_key go together"),
    };
    let console = config.console.enabled.then(|| {
        crate::console::ConsoleState::new(config, store.clone(), ctx.clone(), penalties.clone(), tls.is_some())
    });
    let state = ApiState::new(store.clone(), penalties, settings).with_jobs(ctx);
    if settings.open_job_expiry_secs > 0 {
        let (state, stop) = (state.clone(), shutdown.clone());
        let expiry = std::time::Duration::from_secs(settings.open_job_expiry_secs);
        tasks.spawn(async move {
            sweep_open_jobs(state, expiry, stop).await;
            Ok(())
        });
    }
    let mut server = ApiServer::bind(settings, tls.clone(), state)
        .await
        .with_context(|| format!("while binding the API listener ([api] listen = {})", settings.listen))?;
    // The web console in front: what it does not route reaches the API unchanged.
    if let Some(console) = console {
        server.app = crate::console::router(console, server.app);
    }
    let addr = server.local_addr()?;
    if tls.is_some() {
        tracing::info!(%addr, "serving the HTTP API over TLS");
    } else if crate::serve_http::is_loopback(&settings.listen) {
        tracing::info!(%addr, "serving the HTTP API (plain HTTP on loopback)");
    } else {
        tracing::warn!(%addr, "serving the HTTP API over plain HTTP on a non-loopback address: put a TLS proxy in front or set [api] tls_cert and tls_key");
    }
    if let Some(tls) = tls {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            reload_on_hangup(tls, stop).await;
            Ok(())
        });
    }
    let stop = shutdown.clone();
    tasks.spawn(async move { server.run(stop).await.context("the API server failed") });
    Ok(Some(addr))
}

/// Discards open bulk jobs untouched for `expiry`, looking every
/// `expiry / 2` (at most every 5 minutes, at least every second).
async fn sweep_open_jobs(state: ApiState, expiry: std::time::Duration, shutdown: CancellationToken) {
    let every = (expiry / 2).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = jobs::sweep_open_jobs(&state, expiry).await {
            tracing::warn!(code = e.code, "cannot sweep abandoned open bulk jobs; trying again later");
        }
    }
}

/// Reads the certificate and key again at every SIGHUP.
async fn reload_on_hangup(tls: Arc<TlsFiles>, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; the TLS certificate is read at start only");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangups.recv() => match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: the API's TLS certificate and key were read again"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: the TLS certificate was not reloaded; the one in use stays"),
            },
        }
    }
}
