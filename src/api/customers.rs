//! `POST/GET/PATCH /api/v1/accounts/{avid}/customers…`: one customer, with
//! the validation of a CSV row (`ingest::rows::parse_values`) and the merge
//! rules of the CSV upsert (`ingest::upsert`).

use super::auth::Caller;
use super::idempotency;
use super::openapi::{Customer, CustomerInput, CustomerPatch};
use super::problem::{FieldError, Problem, ProblemBody};
use super::ApiState;
use crate::domain::{AccountSettings, RowError};
use crate::ingest::{rows, upsert};
use crate::store::{CustomerKey, CustomerRecord, StoredCustomer};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// The stored customer as the API returns it (`id` is the `customer_id`
/// of the results files).
pub(super) fn customer_json(record: &CustomerRecord) -> Value {
    let c = &record.customer;
    let addresses: Vec<Value> =
        c.addresses.as_array().map(|a| a.iter().filter_map(|x| x.get("value").cloned()).collect()).unwrap_or_default();
    json!({
        "id": c.customer_id,
        "ref": c.customer_ref,
        "addresses": addresses,
        "metadata": c.metadata,
        "appdata": c.appdata,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    })
}

/// A path parameter as the router decoded it: one segment of plain
/// characters; anything that could be read as a path is not found.
fn segment(raw: &str) -> Result<&str, Problem> {
    let plain = !raw.is_empty()
        && raw.len() <= 255
        && raw != "."
        && raw != ".."
        && !raw.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if plain {
        Ok(raw)
    } else {
        Err(Problem::not_found("resource"))
    }
}

/// The caller's account, if the path names it.
async fn account_of(state: &ApiState, caller: &Caller, avid: &str) -> Result<AccountSettings, Problem> {
    caller.check_account(segment(avid)?)?;
    state.store.get_account(avid).await.map_err(Problem::internal)?.ok_or_else(|| Problem::not_found("account"))
}

fn invalid(errors: Vec<RowError>) -> Problem {
    let detail = match errors.len() {
        1 => "the customer is invalid: 1 error".to_owned(),
        n => format!("the customer is invalid: {n} errors"),
    };
    let errors = errors
        .into_iter()
        .map(|e| FieldError { code: e.code.code().to_owned(), field: e.field, message: e.message })
        .collect();
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_customer", detail).with_errors(errors)
}

fn body_error(code: &str, field: &str, message: impl Into<String>) -> FieldError {
    FieldError { code: code.to_owned(), field: field.to_owned(), message: message.into() }
}

/// The body's fields, typed; wrong shapes become field errors with the
/// code of the field they concern.
struct Body {
    customer_ref: Option<String>,
    addresses: Option<Vec<String>>,
    metadata: Option<Map<String, Value>>,
    appdata: Option<Map<String, Value>>,
}

/// The most values `addresses` may list in a body (duplicates included).
const MAX_LISTED_ADDRESSES: usize = 100;

fn read_body(bytes: &Bytes, headers: &HeaderMap, allowed: &[&str]) -> Result<Body, Problem> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let v = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        })
        .unwrap_or(false);
    if !json_type {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the customer as Content-Type: application/json",
        ));
    }
    // serde_json stops at 128 levels of nesting: a deep body is an error, not a stack overflow.
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let Value::Object(mut object) = value else {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid_json", "the body must be a JSON object"));
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if !allowed.contains(&key.as_str()) {
            let shown = crate::domain::customer::quote(key);
            errors.push(body_error("unknown_field", key, format!("{shown} is not a field of a customer")));
        }
    }
    let customer_ref = match object.remove("ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errors.push(body_error("missing_ref", "ref", "ref must be a string"));
            None
        }
    };
    let addresses = match object.remove("addresses") {
        None | Some(Value::Null) => None,
        // Never parsed one by one past a bound: duplicates are dropped
        // before the count of 1–10 is checked, but a body listing thousands
        // would cost seconds of parsing and an answer as long.
        Some(Value::Array(items)) if items.len() > MAX_LISTED_ADDRESSES => {
            let message = format!(
                "addresses lists {} values; at most {MAX_LISTED_ADDRESSES} may be listed (and {} distinct kept)",
                items.len(),
                crate::domain::customer::MAX_ADDRESSES
            );
            errors.push(body_error("too_many_addresses", "addresses", message));
            None
        }
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len().min(64));
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s),
                    _ => errors.push(body_error(
                        "invalid_phone",
                        &format!("addresses[{i}]"),
                        "an address must be a string: a phone number in E.164 or an email",
                    )),
                }
            }
            Some(out)
        }
        Some(_) => {
            errors.push(body_error("missing_address", "addresses", "addresses must be an array of strings"));
            None
        }
    };
    let mut object_field = |name: &str, code: &str| match object.remove(name) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => {
            errors.push(body_error(code, name, format!("{name} must be a JSON object such as {{\"key\": \"value\"}}")));
            None
        }
    };
    let metadata = object_field("metadata", "invalid_metadata");
    let appdata = object_field("appdata", "invalid_appdata");
    if !errors.is_empty() {
        let detail = format!("the customer is invalid: {} errors", errors.len());
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_customer", detail).with_errors(errors));
    }
    Ok(Body { customer_ref, addresses, metadata, appdata })
}

#[utoipa::path(
    post,
    path = "/api/v1/accounts/{avid}/customers",
    tag = "customers",
    params(
        ("avid" = String, Path, description = "The account's AVID (the token's account)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 h (1-255 visible ASCII characters)",
            pattern = r"^[!-~]([ -~]{0,253}[!-~])?$")
    ),
    request_body(content = CustomerInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = Customer, headers(("Location" = String, description = "The customer's URL"))),
        (status = 400, description = "Not JSON, or a bad Idempotency-Key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or customer", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks customers:create", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The account has a customer with this ref (code ref_exists)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is over max_json_bytes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid: every error with its row error code, or an Idempotency-Key reused with another body", body = ProblemBody, content_type = "application/problem+json")
    )
)]
/// `POST /api/v1/accounts/{avid}/customers`: creates, never updates;
/// with an `Idempotency-Key`, the first final answer is replayed for 24 h.
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Path(avid): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let account = account_of(&state, &caller, &avid).await?;
    caller.require_create()?;
    let Some(key) = idempotency::key_of(&headers)? else {
        let (customer, location) = create_customer(&state, &account, &caller, &headers, &bytes).await?;
        return Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(customer)).into_response());
    };
    let hash = idempotency::request_hash("POST customers", &bytes);
    if let Some(replayed) = idempotency::replay(&state, &avid, &key, &hash).await? {
        return Ok(replayed);
    }
    let (status, location, body) = match create_customer(&state, &account, &caller, &headers, &bytes).await {
        Ok((customer, location)) => (StatusCode::CREATED, Some(location), customer.to_string()),
        Err(problem) => (problem.status, None, problem.body_json()),
    };
    idempotency::remember(&state, &avid, &key, &hash, status, location, body).await
}

/// Validates and creates; the stored customer and its location.
async fn create_customer(
    state: &ApiState,
    account: &AccountSettings,
    caller: &Caller,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<(Value, String), Problem> {
    let avid = account.avid.as_str();
    let body = read_body(bytes, headers, &["ref", "addresses", "metadata", "appdata"])?;
    let command = rows::parse_values(
        body.customer_ref.as_deref(),
        body.addresses.as_deref(),
        body.metadata.as_ref(),
        body.appdata.as_ref(),
        account,
    )
    .map_err(invalid)?;
    let customer = StoredCustomer::of(&command, None);
    let created = state.store.create_customer(avid, &customer).await.map_err(Problem::internal)?;
    if !created {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "ref_exists",
            format!(
                "the account already has a customer with ref {}",
                crate::domain::customer::quote(&customer.customer_ref)
            ),
        ));
    }
    let record = state
        .store
        .find_customer(avid, CustomerKey::Id(&customer.customer_id))
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::internal("a created customer cannot be read back"))?;
    tracing::info!(account = %avid, customer_id = %customer.customer_id, user = %caller.username, "customer created over the API");
    let location = format!("/api/v1/accounts/{avid}/customers/{}", customer.customer_id);
    Ok((customer_json(&record), location))
}

#[derive(serde::Deserialize)]
pub(super) struct RefQuery {
    #[serde(rename = "ref")]
    customer_ref: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/accounts/{avid}/customers",
    tag = "customers",
    params(("avid" = String, Path, description = "The account's AVID (the token's account)"), ("ref" = String, Query, description = "The customer's ref")),
    responses(
        (status = 200, description = "The customer, appdata included", body = Customer),
        (status = 400, description = "No ref given", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or customer", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
/// `GET /api/v1/accounts/{avid}/customers?ref=REF`.
pub(super) async fn find(
    State(state): State<ApiState>,
    caller: Caller,
    Path(avid): Path<String>,
    Query(query): Query<RefQuery>,
) -> Result<Json<Value>, Problem> {
    account_of(&state, &caller, &avid).await?;
    let Some(customer_ref) = query.customer_ref else {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "missing_ref", "give the customer's ref: ?ref=REF"));
    };
    let record = state
        .store
        .find_customer(&avid, CustomerKey::Ref(customer_ref.trim()))
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::not_found("customer"))?;
    Ok(Json(customer_json(&record)))
}

#[utoipa::path(
    get,
    path = "/api/v1/accounts/{avid}/customers/{id}",
    tag = "customers",
    params(("avid" = String, Path, description = "The account's AVID (the token's account)"), ("id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The customer, appdata included", body = Customer),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or customer", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
/// `GET /api/v1/accounts/{avid}/customers/{id}`.
pub(super) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path((avid, id)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    account_of(&state, &caller, &avid).await?;
    let record = state
        .store
        .find_customer(&avid, CustomerKey::Id(segment(&id)?))
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::not_found("customer"))?;
    Ok(Json(customer_json(&record)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/accounts/{avid}/customers/{id}",
    tag = "customers",
    params(("avid" = String, Path, description = "The account's AVID (the token's account)"), ("id" = String, Path, description = "The customer's id")),
    request_body(content = CustomerPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The customer after the change (unchanged if nothing changed)", body = Customer),
        (status = 400, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or customer", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks customers:update", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is over max_json_bytes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid: every error with its row error code", body = ProblemBody, content_type = "application/problem+json")
    )
)]
/// `PATCH /api/v1/accounts/{avid}/customers/{id}`: the CSV upsert's merge:
/// addresses (when given) replaced, metadata and appdata keys given set,
/// others kept; nothing written when nothing changes.
pub(super) async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    Path((avid, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    let account = account_of(&state, &caller, &avid).await?;
    caller.require_update()?;
    let body = read_body(&bytes, &headers, &["ref", "addresses", "metadata", "appdata"])?;
    let current = state
        .store
        .find_customer(&avid, CustomerKey::Id(segment(&id)?))
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::not_found("customer"))?;
    if let Some(given) = &body.customer_ref {
        if given.trim() != current.customer.customer_ref {
            let error = body_error("ref_exists", "ref", "a customer's ref cannot change");
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_customer",
                "the customer is invalid: 1 error",
            )
            .with_errors(vec![error]));
        }
    }
    // Absent addresses keep the stored ones: they go through the same parse.
    let kept: Vec<String>;
    let addresses = match &body.addresses {
        Some(a) => Some(a.as_slice()),
        None => {
            kept = stored_addresses(&current.customer);
            Some(kept.as_slice())
        }
    };
    let command = rows::parse_values(
        Some(&current.customer.customer_ref),
        addresses,
        body.metadata.as_ref(),
        body.appdata.as_ref(),
        &account,
    )
    .map_err(invalid)?;
    let merged = upsert::merged(&current.customer, &command);
    if upsert::same_content(&merged, &current.customer) {
        return Ok(Json(customer_json(&current)));
    }
    if !state.store.replace_customer(&avid, &merged).await.map_err(Problem::internal)? {
        return Err(Problem::not_found("customer"));
    }
    let record = state
        .store
        .find_customer(&avid, CustomerKey::Id(&merged.customer_id))
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::not_found("customer"))?;
    tracing::info!(account = %avid, customer_id = %merged.customer_id, user = %caller.username, "customer updated over the API");
    Ok(Json(customer_json(&record)))
}

fn stored_addresses(customer: &StoredCustomer) -> Vec<String> {
    customer
        .addresses
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.get("value").and_then(Value::as_str).map(str::to_owned)).collect())
        .unwrap_or_default()
}
