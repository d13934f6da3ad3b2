//! The console's static files, embedded in the binary: htmx (vendored,
//! 2.0.11 from npm's `htmx.org`, BSD-2-Clause: `assets/htmx.LICENSE`), one
//! stylesheet and the upload form's drop zone (`drop.js`). Their URLs carry
//! a version or a hash of the content, so they are cached for a year.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const HTMX: &[u8] = include_bytes!("assets/htmx.min.js");
const CSS: &[u8] = include_bytes!("assets/console.css");
const DROP: &[u8] = include_bytes!("assets/drop.js");

pub(crate) const HTMX_PATH: &str = "/assets/htmx-2.0.11.min.js";

/// `/assets/console-<hash>.css`.
pub(crate) fn css_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| format!("/assets/console-{}.css", &hex::encode(Sha256::digest(CSS))[..12]))
}

/// `/assets/drop-<hash>.js`: the upload form's drop zone.
pub(crate) fn drop_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| format!("/assets/drop-{}.js", &hex::encode(Sha256::digest(DROP))[..12]))
}

pub(super) async fn serve(Path(name): Path<String>) -> Response {
    let path = format!("/assets/{name}");
    let (body, kind) = if path == HTMX_PATH {
        (HTMX, "text/javascript; charset=utf-8")
    } else if path == css_path() {
        (CSS, "text/css; charset=utf-8")
    } else if path == drop_path() {
        (DROP, "text/javascript; charset=utf-8")
    } else {
        return super::PageError::not_found().into_response();
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")],
        body,
    )
        .into_response()
}
