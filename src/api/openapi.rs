//! The OpenAPI 3.1 document of the API, generated from the handlers' route
//! attributes (utoipa): the router is built from the same list, so a route
//! cannot exist undocumented. `docs/openapi.json` is this document,
//! committed; a test checks that the two are equal.

use super::problem::{FieldError, ProblemBody};
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "intake API",
        description = "Customers one at a time, with the validation and merge rules of a CSV row. \
            Errors are RFC 9457 problem documents carrying intake's stable codes.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ProblemBody, FieldError, CustomerInput, CustomerPatch, Customer, super::jobs::JobState)),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    tags(
        (name = "customers", description = "The Create Customer command and loading a customer"),
        (name = "jobs", description = "Bulk jobs: a CSV file on the engine of SFTP uploads")
    )
)]
pub(super) struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("A token made by `intake token create USERNAME`"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// A customer to create (no other fields).
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct CustomerInput {
    /// The merchant's identifier, unique in the account (1–255 characters after trimming).
    #[serde(rename = "ref")]
    #[schema(min_length = 1, max_length = 255)]
    customer_ref: String,
    /// Phone numbers (E.164) or emails; the first is the default; duplicates are dropped.
    #[schema(min_items = 1, max_items = 10)]
    addresses: Vec<String>,
    /// Visible to the customer.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// Private to the merchant.
    #[schema(value_type = Option<Object>)]
    appdata: Option<serde_json::Value>,
}

/// Changes to a customer: addresses (when given) replace the stored ones;
/// metadata and appdata keys given are set, others kept.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct CustomerPatch {
    /// If given, the customer's own ref (a ref cannot change).
    #[serde(rename = "ref")]
    customer_ref: Option<String>,
    #[schema(min_items = 1, max_items = 10)]
    addresses: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    appdata: Option<serde_json::Value>,
}

/// A stored customer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Customer {
    /// The customer_id, as in the results files.
    id: String,
    #[schema(rename = "ref")]
    customer_ref: String,
    /// Normalised: phones in E.164, email domains lower-cased.
    addresses: Vec<String>,
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    #[schema(value_type = Object)]
    appdata: serde_json::Value,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// The document, as served and committed.
pub(super) fn document(api: &utoipa::openapi::OpenApi) -> String {
    let mut text = api.to_pretty_json().expect("the OpenAPI document serialises");
    text.push('\n');
    text
}

/// `GET /api/v1/openapi.json` (no token needed).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "customers",
    security(()),
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json", body = Object))
)]
pub(super) async fn serve(
    axum::extract::State(state): axum::extract::State<super::ApiState>,
) -> axum::response::Response {
    let text = state.openapi.get().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}
