//! Runs only intake's SFTP server, with users given on the command line.
//! For benchmarks and manual interop checks; the real daemon is `intake serve`.
//!
//! ```text
//! cargo run --release --example sftp_only -- --listen 127.0.0.1:2223 --data /tmp/sftp \
//!     --user acme --account acme --authorized-keys ~/.ssh/id_ed25519.pub [--password secret]
//! ```
//! Stops on SIGINT/SIGTERM.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use intake::domain::user::{Scopes, SftpUser};
use intake::sftp::{hash_password, SftpServer, SftpSettings, UserDirectory};
use tokio_util::sync::CancellationToken;

struct Users(HashMap<String, SftpUser>);

#[async_trait::async_trait]
impl UserDirectory for Users {
    async fn find_user(&self, username: &str) -> Result<Option<SftpUser>, intake::sftp::DirectoryError> {
        Ok(self.0.get(username).cloned())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let mut settings = SftpSettings::default();
    let mut data = PathBuf::from("./sftp-data");
    let (mut user, mut account, mut keys, mut password) = (None, None, Vec::new(), None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => settings.listen = value()?,
            "--data" => data = PathBuf::from(value()?),
            "--user" => user = Some(value()?),
            "--account" => account = Some(value()?),
            "--authorized-keys" => {
                keys.extend(intake::sftp::read_authorized_keys(std::path::Path::new(&value()?))?);
            }
            "--password" => password = Some(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    let username = user.context("--user is required")?;
    let account = intake::domain::AccountId::parse(&account.unwrap_or_else(|| username.clone()))?;
    let password_hash = password.as_deref().map(hash_password).transpose()?;
    let users = Users(HashMap::from([(
        username.clone(),
        SftpUser { username, account, public_keys: keys, password_hash, scopes: Scopes { create: true, update: true } },
    )]));
    let server =
        SftpServer::bind(&settings, &data.join("ssh_host_ed25519_key"), data.join("accounts"), Arc::new(users)).await?;
    println!("listening on {}", server.local_addr());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    server.run(shutdown).await?;
    Ok(())
}
