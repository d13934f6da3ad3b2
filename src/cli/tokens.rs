//! `intake token create|list|revoke`: API tokens. A token is printed once,
//! when it is made; only its hash is stored.

use anyhow::{bail, Result};
use clap::Subcommand;
use intake::domain::shown::printable;
use intake::domain::user::Scopes;
use intake::store::{NewToken, Store};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token that acts as USERNAME (its account, at most its scopes);
    /// the token is the last line of standard output.
    Create {
        username: String,
        /// customers:create and/or customers:update (default: the user's scopes).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Days until it expires (default: never).
        #[arg(long)]
        expires: Option<u32>,
        /// A name to recognise it by in `token list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// Tokens (never their values), of one account or all.
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once (every node refuses it from the next request).
    Revoke { id: String },
}

pub async fn token(store: &Store, cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Create { username, scopes, expires, name } => {
            let Some(user) = store.find_user(&username).await? else { bail!("no user {username}") };
            let scopes =
                if scopes.is_empty() { user.scopes } else { Scopes::parse(scopes.iter().map(String::as_str))? };
            if (scopes.create && !user.scopes.create) || (scopes.update && !user.scopes.update) {
                bail!(
                    "user {username} lacks a scope asked for: a token never has more than its user ({})",
                    user.scopes.names().join(" ")
                );
            }
            if expires == Some(0) {
                bail!("--expires takes a number of days, at least 1");
            }
            if let Some(name) = &name {
                if name.chars().count() > 100 || name.chars().any(char::is_control) {
                    bail!("--name: at most 100 characters, no control characters");
                }
            }
            let (value, hash) = intake::api::auth::generate();
            let token_id = format!("tok_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
            let new = NewToken {
                token_id: token_id.clone(),
                token_hash: hash,
                username,
                name,
                scopes,
                expires_in_days: expires,
            };
            store.create_token(&new).await?;
            eprintln!("token {token_id} created; it is shown only now:");
            println!("{value}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List { account, json } => {
            let tokens = store.list_tokens(account.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(ExitCode::SUCCESS);
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            println!("{:<22} {:<16} {:<16} {:<34} {:<10} NAME", "ID", "USER", "ACCOUNT", "SCOPES", "STATE");
            for t in tokens {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<22} {:<16} {:<16} {:<34} {:<10} {}",
                    t.token_id,
                    t.username,
                    t.account,
                    t.scopes.join(" "),
                    state,
                    printable(&t.name.unwrap_or_default())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { id } => {
            intake::manage::revoke_token(store, None, &id).await?;
            println!("token {id} revoked");
            Ok(ExitCode::SUCCESS)
        }
    }
}
