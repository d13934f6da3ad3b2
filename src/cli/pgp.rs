//! `intake pgp init|show|add-key|list|remove-key`: an account's OpenPGP
//! keys (spec §12). The server key's secret part never leaves the database
//! unlocked and is never printed.

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use intake::config::Config;
use intake::keyring::Keyring;
use intake::store::PgpRole;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PgpCommand {
    /// Make the account's server key (Ed25519 + Curve25519, v4); run again
    /// to rotate: the new key is offered, the older ones still decrypt.
    Init { avid: String },
    /// Print the account's public key, armoured (made on first use): what
    /// the merchant encrypts uploads to (also /keys/intake.asc over SFTP).
    Show { avid: String },
    /// Add a merchant's public key (armoured or binary) from FILE; a secret,
    /// expired or revoked key is refused.
    AddKey { avid: String, file: PathBuf },
    /// Remove a key by its fingerprint.
    RemoveKey { avid: String, fingerprint: String },
    /// The account's keys: role, fingerprint, created, expires.
    List { avid: String },
}

async fn account_exists(store: &intake::store::Store, avid: &str) -> Result<()> {
    if store.get_account(avid).await?.is_none() {
        bail!("no account `{avid}`");
    }
    Ok(())
}

pub async fn pgp(config: &Config, cmd: PgpCommand) -> Result<ExitCode> {
    let store = super::open_store(config).await?;
    let keyring = Keyring::new(store.clone(), config.pgp_passphrase_path());
    match cmd {
        PgpCommand::Init { avid } => {
            account_exists(&store, &avid).await?;
            let fingerprint = keyring.init(&avid).await?;
            println!("made server key {fingerprint} for account {avid}");
        }
        PgpCommand::Show { avid } => {
            account_exists(&store, &avid).await?;
            print!("{}", keyring.public_armored(&avid).await?);
        }
        PgpCommand::AddKey { avid, file } => {
            account_exists(&store, &avid).await?;
            let bytes = std::fs::read(&file).with_context(|| format!("while reading {}", file.display()))?;
            let key = keyring.add_merchant_key(&avid, &bytes).await?;
            println!("added merchant key {} to account {avid}", key.fingerprint);
        }
        PgpCommand::RemoveKey { avid, fingerprint } => {
            if !store.remove_pgp_key(&avid, &fingerprint.to_ascii_lowercase()).await? {
                bail!("account `{avid}` has no key {fingerprint}");
            }
            println!("removed key {fingerprint} from account {avid}");
        }
        PgpCommand::List { avid } => {
            account_exists(&store, &avid).await?;
            println!("{:<9} {:<40} {:<20} EXPIRES", "ROLE", "FINGERPRINT", "CREATED");
            for k in keyring.list(&avid).await? {
                let at = |secs: i64| {
                    time::OffsetDateTime::from_unix_timestamp(secs)
                        .map(intake::domain::job::rfc3339::format)
                        .unwrap_or_else(|_| secs.to_string())
                };
                let role = match k.role {
                    PgpRole::Server => "server",
                    PgpRole::Merchant => "merchant",
                };
                let expires = k.expires_at.map(at).unwrap_or_else(|| "never".into());
                println!("{role:<9} {:<40} {:<20} {expires}", k.fingerprint, at(k.created_at));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
