//! The merchant's mapping profiles (the `/mappings` folder of SFTP): the
//! account's list, one profile's TOML text, and uploading one through a
//! form — checked and stored by `ingest::mappings::store_profile`, the code
//! the SFTP upload and the CLI use, so a profile refused there is refused
//! here with the same reason.

use super::auth::Merchant;
use super::pages;
use super::{ConsoleState, PageError};
use crate::domain::mapping::{check_name, MAX_PROFILE_BYTES};
use crate::ingest::mappings::{store_profile, MAX_PROFILES_PER_ACCOUNT};
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

/// `GET /mappings`: the account's profiles by name, and the upload form.
pub(super) async fn list(State(state): State<ConsoleState>, merchant: Merchant) -> Result<Response, PageError> {
    list_page(&state, &merchant, StatusCode::OK, None, String::new()).await
}

async fn list_page(
    state: &ConsoleState,
    merchant: &Merchant,
    status: StatusCode,
    error: Option<String>,
    name: String,
) -> Result<Response, PageError> {
    let stored = state.store().list_mappings(merchant.account.as_str()).await?;
    let profiles = stored
        .into_iter()
        .map(|m| pages::MappingRow { name: m.name, sha256: m.sha256, updated: m.updated_at })
        .collect();
    let page = pages::Mappings {
        chrome: merchant.chrome(),
        csrf: merchant.csrf.clone(),
        profiles,
        can_upload: merchant.scopes.create,
        error,
        name,
        max_bytes: MAX_PROFILE_BYTES,
        max_profiles: MAX_PROFILES_PER_ACCOUNT,
    };
    Ok((status, pages::html(&page)).into_response())
}

/// `GET /mappings/{name}`: one profile's text (escaped, never markup).
pub(super) async fn view(
    State(state): State<ConsoleState>,
    merchant: Merchant,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    check_name(&name).map_err(|_| PageError::not_found())?;
    let stored = state.store().list_mappings(merchant.account.as_str()).await?;
    let found = stored.into_iter().find(|m| m.name == name).ok_or_else(PageError::not_found)?;
    let page = pages::MappingView {
        chrome: merchant.chrome(),
        name: found.name,
        text: found.text,
        sha256: found.sha256,
        updated: found.updated_at,
    };
    Ok(pages::html(&page).into_response())
}

/// `POST /mappings` (multipart: `csrf`, `name`, then `file`): the file's
/// bytes are checked and stored as profile `name` (the file's name without
/// `.toml` when the field is empty), replacing one of that name.
pub(super) async fn upload(
    State(state): State<ConsoleState>,
    merchant: Merchant,
    mut form: Multipart,
) -> Result<Response, PageError> {
    let mut csrf = None;
    let mut name = String::new();
    let mut bytes: Option<(Vec<u8>, String)> = None;
    let cut = || PageError::new(StatusCode::BAD_REQUEST, "The upload was cut.");
    while let Some(mut part) = form.next_field().await.map_err(|_| cut())? {
        match part.name() {
            Some("csrf") => csrf = Some(part.text().await.map_err(|_| cut())?),
            Some("name") => name = part.text().await.map_err(|_| cut())?.trim().to_owned(),
            Some("file") => {
                // The token is checked before a byte of the file is kept.
                merchant.check_csrf(csrf.as_deref())?;
                let file_name = part.file_name().unwrap_or_default().to_owned();
                let mut data = Vec::new();
                while let Some(chunk) = part.chunk().await.map_err(|_| cut())? {
                    if data.len() + chunk.len() > MAX_PROFILE_BYTES {
                        let why = format!("The profile is over the limit of {MAX_PROFILE_BYTES} bytes.");
                        return list_page(&state, &merchant, StatusCode::PAYLOAD_TOO_LARGE, Some(why), name).await;
                    }
                    data.extend_from_slice(&chunk);
                }
                bytes = Some((data, file_name));
            }
            _ => continue,
        }
    }
    merchant.check_csrf(csrf.as_deref())?;
    if !merchant.scopes.create {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This login may not change mapping profiles (scope customers:create).",
        ));
    }
    let refuse =
        |why: String, name: String| list_page(&state, &merchant, StatusCode::UNPROCESSABLE_ENTITY, Some(why), name);
    let Some((data, file_name)) = bytes.filter(|(d, _)| !d.is_empty()) else {
        return refuse("Choose a profile file (TOML) to upload.".to_owned(), name).await;
    };
    if name.is_empty() {
        let base = file_name.rsplit(['/', '\\']).next().unwrap_or_default();
        name = base.strip_suffix(".toml").unwrap_or(base).to_owned();
    }
    if let Err(why) = check_name(&name) {
        return refuse(format!("Mapping {name} refused: {why}"), name).await;
    }
    match store_profile(state.store(), merchant.account.as_str(), &name, &data).await? {
        Ok(_) => {
            tracing::info!(account = %merchant.account, user = %merchant.username, mapping = %name,
                "mapping profile stored in the web console");
            Ok(Redirect::to(&format!("/mappings/{name}")).into_response())
        }
        Err(why) => refuse(format!("Mapping {name} refused: {why}"), name).await,
    }
}
