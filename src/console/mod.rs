//! The web console: server-rendered pages (askama templates, checked at
//! compile time; htmx embedded for live progress, every action a real link
//! or form first) served at `/` on the public API's listener. Merchants
//! sign in with their SFTP username and password and see only their
//! account; operators (`intake admin add`) see every account. Sessions live
//! in the database (any node serves them), with an optional second factor
//! (TOTP, required of operators); every form carries the session's
//! CSRF token; every page is sent with a strict Content-Security-Policy (no
//! inline script or style) and may not be framed.
//!
//! Files reach the core as every front end's do: through
//! `ingest::arrival` (uploads, resubmitted rows, retries) and the store.

mod admin;
mod assets;
mod auth;
mod mappings;
mod merchant;
mod operators;
mod pages;
mod rows;
mod totp;

use crate::ingest::Context;
use crate::store::{SessionLife, Store};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The most a resubmitted page of failed rows may weigh (its form).
const RESUBMIT_BYTES: usize = 32 * 1024 * 1024;

/// What every console handler sees.
#[derive(Clone)]
pub struct ConsoleState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    ctx: Arc<Context>,
    life: SessionLife,
    /// Served over TLS: cookies are `Secure`.
    secure: bool,
    /// Failed sign-ins count with SFTP logins and tokens (one count per source).
    penalties: Arc<crate::penalties::Penalties>,
    passwords: tokio::sync::Semaphore,
    archive_days: u64,
    rows_index: rows::IndexCache,
    /// Where accounts' folders are made (`intake account add`'s).
    data_dir: std::path::PathBuf,
    /// A node's heartbeat older than this is silent (`intake nodes`).
    takeover_secs: f64,
}

impl ConsoleState {
    /// `max_failures` failed sign-ins from one address in `window` refuse
    /// it for a window (the SFTP server's `[sftp]` limits).
    pub fn new(
        config: &crate::config::Config,
        store: Store,
        ctx: Arc<Context>,
        penalties: Arc<crate::penalties::Penalties>,
        secure: bool,
    ) -> ConsoleState {
        let settings = &config.console;
        ConsoleState {
            inner: Arc::new(Inner {
                store,
                ctx,
                life: SessionLife {
                    idle_secs: settings.session_idle_secs.min(i64::MAX as u64) as i64,
                    max_secs: settings.session_max_secs.min(i64::MAX as u64) as i64,
                },
                secure,
                penalties,
                passwords: tokio::sync::Semaphore::new(4),
                archive_days: config.retention.archive_days,
                rows_index: rows::IndexCache::default(),
                data_dir: config.data_dir.clone(),
                takeover_secs: config.cluster.takeover_after().as_secs_f64(),
            }),
        }
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn ctx(&self) -> &Context {
        &self.inner.ctx
    }
}

/// The console's routes in front of `api`: a request no console route
/// takes goes to the API as it is (its answers unchanged).
pub fn router(state: ConsoleState, api: Router) -> Router {
    Router::new()
        .route("/", get(merchant::home))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/admin/login", get(auth::admin_login_form).post(auth::admin_login))
        .route("/logout", post(auth::logout))
        .route("/logout-everywhere", post(auth::logout_everywhere))
        .route("/account/totp", get(auth::totp_page).post(auth::totp_confirm))
        .route("/account/totp/disable", post(auth::totp_disable))
        .route("/account/totp/recovery", post(auth::totp_recovery))
        .route("/jobs", get(merchant::jobs))
        .route("/jobs/{id}", get(merchant::job))
        .route("/jobs/{id}/results.csv", get(merchant::download_results))
        .route("/jobs/{id}/failed.csv", get(merchant::download_failed))
        .route("/jobs/{id}/upload.csv", get(merchant::download_upload))
        // A page of failed rows may hold 64 KiB cells.
        .route("/jobs/{id}/resubmit", post(merchant::resubmit).layer(DefaultBodyLimit::max(RESUBMIT_BYTES)))
        .route("/upload", get(merchant::upload_form).post(merchant::upload).layer(DefaultBodyLimit::disable()))
        .route("/mappings", get(mappings::list).post(mappings::upload))
        .route("/mappings/{name}", get(mappings::view))
        .route("/admin", get(admin::jobs))
        .route("/admin/jobs/{id}", get(admin::job))
        .route("/admin/jobs/{id}/retry", post(admin::retry))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/accounts", get(operators::accounts).post(operators::create_account))
        .route("/admin/accounts/{avid}", get(operators::account))
        .route("/admin/accounts/{avid}/disable", post(operators::disable_account))
        .route("/admin/accounts/{avid}/enable", post(operators::enable_account))
        .route("/admin/accounts/{avid}/users", post(operators::create_user))
        .route("/admin/accounts/{avid}/users/disable", post(operators::disable_user))
        .route("/admin/accounts/{avid}/users/enable", post(operators::enable_user))
        .route("/admin/accounts/{avid}/users/password", post(operators::reset_password))
        .route("/admin/accounts/{avid}/tokens/revoke", post(operators::revoke_token))
        .route("/admin/nodes", get(operators::nodes))
        .route("/admin/webhooks", get(operators::webhooks))
        .route("/assets/{name}", get(assets::serve))
        .route_layer(axum::middleware::map_response(security_headers))
        .with_state(state)
        .fallback_service(api)
}

/// Every console answer: no framing, no inline script or style, no
/// sniffing, no referrer (URLs carry ids), no caching of pages.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A console page that could not be made: the status and a page saying it
/// (details go to the log, never to the browser).
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn not_found() -> PageError {
        PageError { status: StatusCode::NOT_FOUND, message: "There is no such page.".into() }
    }

    fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError { status, message: message.into() }
    }

    fn internal(e: impl std::fmt::Display) -> PageError {
        tracing::error!(error = %e, "a console page failed");
        PageError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "Something went wrong; try again later.".into(),
        }
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        PageError::internal(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = pages::ErrorPage {
            chrome: pages::Chrome::signed_out(),
            status: self.status.as_u16(),
            message: &self.message,
        };
        (self.status, pages::html(&page)).into_response()
    }
}
