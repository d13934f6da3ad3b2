//! `intake account` and `intake user`: accounts (settings, presets, webhook)
//! and their SFTP users.

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use intake::config::Config;
use intake::domain::user::Scopes;
use intake::domain::{AccountSettings, FileEncoding, PhoneCheck, PhoneRegion};
use intake::manage;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Add an account (its folders are created under the data directory).
    Add(AccountArgs),
    /// Change an account's settings; those not given stay as they are.
    Set(AccountArgs),
    List,
    /// Remove an account and its SFTP users; its customers stay in the store.
    Remove {
        avid: String,
    },
    /// Disable an account: none of its users can sign in over SFTP or to the
    /// console, their API tokens are refused and their console sessions end.
    Disable {
        avid: String,
    },
    /// Enable a disabled account again.
    Enable {
        avid: String,
    },
}

#[derive(Args)]
pub struct AccountArgs {
    avid: String,
    #[arg(long)]
    default_region: Option<String>,
    #[arg(long)]
    encoding: Option<String>,
    #[arg(long)]
    phone_check: Option<String>,
    /// Start the CSV reports with a UTF-8 BOM, so that Excel on Windows shows
    /// non-ASCII text correctly.
    #[arg(long, overrides_with = "no_report_bom")]
    report_bom: bool,
    /// CSV reports without a BOM (the default).
    #[arg(long)]
    no_report_bom: bool,
    /// Reject uploads that are not OpenPGP-encrypted to the account's key
    /// (`encryption_required`); `--pgp-require-encryption=false` to allow.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pgp_require_encryption: Option<bool>,
    /// Reject uploads not signed by one of the merchant's keys in /keys.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pgp_require_signature: Option<bool>,
    /// Encrypt results and failed records to the merchant's keys in /keys
    /// (NAME.results.csv.pgp, NAME.failed.csv.pgp).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pgp_encrypt_reports: Option<bool>,
    /// Built-in mapping presets to try for this account's files:
    /// shopify,stripe,square,woocommerce,hubspot,mailchimp, `all` or `none`.
    #[arg(long)]
    presets: Option<String>,
    #[command(flatten)]
    webhook: super::webhooks::WebhookArgs,
}

impl AccountArgs {
    /// The settings these arguments give `base`.
    fn applied_to(&self, mut base: AccountSettings) -> Result<AccountSettings> {
        if let Some(region) = &self.default_region {
            base.default_region = Some(PhoneRegion::parse(region)?);
        }
        if let Some(encoding) = &self.encoding {
            base.encoding = FileEncoding::parse(encoding)?;
        }
        if let Some(check) = &self.phone_check {
            base.phone_check = PhoneCheck::parse(check)?;
        }
        if self.report_bom || self.no_report_bom {
            base.report_bom = self.report_bom;
        }
        if let Some(on) = self.pgp_require_encryption {
            base.pgp.require_encryption = on;
        }
        if let Some(on) = self.pgp_require_signature {
            base.pgp.require_signature = on;
        }
        if let Some(on) = self.pgp_encrypt_reports {
            base.pgp.encrypt_reports = on;
        }
        Ok(base)
    }
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add an SFTP user to an account.
    Add {
        username: String,
        #[arg(long)]
        account: String,
        /// A file of OpenSSH public keys (authorized_keys lines); repeatable.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Read a password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// customers:create and/or customers:update (default: both).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    List,
    Remove {
        username: String,
    },
    /// Set a user's password (for SFTP and the web console), read from
    /// standard input; the user's console sessions end.
    Passwd {
        username: String,
        /// Read the password from standard input (one line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Disable a user: no SFTP or console sign-in, its API tokens refused,
    /// its console sessions ended.
    Disable {
        username: String,
    },
    /// Enable a disabled user again.
    Enable {
        username: String,
    },
}

/// One line of standard input: a password, not empty.
pub fn read_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("while reading the password")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("the password read from standard input is empty");
    }
    Ok(password.to_owned())
}

pub async fn account(config: &Config, cmd: AccountCommand) -> Result<ExitCode> {
    let store = super::open_store(config).await?;
    match cmd {
        AccountCommand::Add(a) => {
            let settings = a.applied_to(AccountSettings::new(manage::parse_avid(&a.avid)?))?;
            super::webhooks::check_webhook_args(&a.webhook)?;
            let presets = a.presets.as_deref().map(presets_of).transpose()?;
            manage::create_account(&store, &config.data_dir, &settings).await?;
            if let Some(presets) = presets {
                store.set_presets(&a.avid, &presets).await?;
            }
            println!("added account {}", a.avid);
            super::webhooks::apply_webhook(&store, &a.avid, &a.webhook).await?;
        }
        AccountCommand::Set(a) => {
            let current = store.get_account(&a.avid).await?.with_context(|| format!("no account `{}`", a.avid))?;
            let settings = a.applied_to(current)?;
            super::webhooks::check_webhook_args(&a.webhook)?;
            let presets = a.presets.as_deref().map(presets_of).transpose()?;
            store.put_account(&settings).await?;
            if let Some(presets) = presets {
                store.set_presets(&a.avid, &presets).await?;
            }
            super::webhooks::apply_webhook(&store, &a.avid, &a.webhook).await?;
            println!("updated account {}", a.avid);
        }
        AccountCommand::List => {
            let disabled: std::collections::HashSet<String> =
                store.account_overview().await?.into_iter().filter(|a| a.disabled).map(|a| a.avid).collect();
            println!(
                "{:<24} {:<8} {:<14} {:<11} {:<9} REPORT_BOM",
                "AVID", "REGION", "ENCODING", "PHONE_CHECK", "STATE"
            );
            for a in store.list_accounts().await? {
                let region = a.default_region.map(|r| r.code()).unwrap_or_else(|| "-".into());
                let bom = if a.report_bom { "yes" } else { "no" };
                let state = if disabled.contains(a.avid.as_str()) { "disabled" } else { "enabled" };
                println!(
                    "{:<24} {:<8} {:<14} {:<11} {state:<9} {bom}",
                    a.avid,
                    region,
                    a.encoding.as_str(),
                    a.phone_check.as_str()
                );
            }
        }
        AccountCommand::Remove { avid } => {
            store.remove_account(&avid).await?;
            println!("removed account {avid} and its SFTP users; its customers and files are kept");
        }
        AccountCommand::Disable { avid } => {
            manage::set_account_disabled(&store, &avid, true).await?;
            println!("disabled account {avid}: its users cannot sign in and their tokens are refused");
        }
        AccountCommand::Enable { avid } => {
            manage::set_account_disabled(&store, &avid, false).await?;
            println!("enabled account {avid}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A `--presets` value: names, `all` or `none`.
fn presets_of(raw: &str) -> Result<Vec<String>> {
    intake::domain::mapping::presets::parse_list(raw).map_err(anyhow::Error::msg)
}

pub async fn user(config: &Config, cmd: UserCommand) -> Result<ExitCode> {
    let store = super::open_store(config).await?;
    match cmd {
        UserCommand::Add { username, account, keys, password_stdin, scopes } => {
            let mut public_keys = Vec::new();
            for path in &keys {
                public_keys.extend(intake::sftp::read_authorized_keys(path)?);
            }
            let password = if password_stdin { Some(read_password()?) } else { None };
            if public_keys.is_empty() && password.is_none() {
                bail!("give the user a way to log in: --key FILE and/or --password-stdin");
            }
            let scopes = if scopes.is_empty() { None } else { Some(Scopes::parse(scopes.iter().map(String::as_str))?) };
            let new = manage::NewUser {
                username: &username,
                account: &account,
                public_keys,
                password: password.as_deref(),
                scopes,
            };
            manage::create_user(&store, new).await?;
            println!("added user {username}");
        }
        UserCommand::List => {
            // Disabled users, and users of disabled accounts.
            let mut disabled = std::collections::HashSet::new();
            for a in store.account_overview().await? {
                for u in store.account_users(&a.avid).await?.map(|(_, users)| users).unwrap_or_default() {
                    if a.disabled || u.disabled {
                        disabled.insert(u.user.username);
                    }
                }
            }
            println!("{:<24} {:<24} {:<5} {:<9} {:<34} STATE", "USERNAME", "ACCOUNT", "KEYS", "PASSWORD", "SCOPES");
            for u in store.list_users().await? {
                let password = if u.password_hash.is_some() { "yes" } else { "no" };
                let state = if disabled.contains(&u.username) { "disabled" } else { "enabled" };
                println!(
                    "{:<24} {:<24} {:<5} {:<9} {:<34} {state}",
                    u.username,
                    u.account,
                    u.public_keys.len(),
                    password,
                    u.scopes.names().join(" ")
                );
            }
        }
        UserCommand::Remove { username } => {
            store.remove_user(&username).await?;
            println!("removed user {username}");
        }
        UserCommand::Disable { username } => {
            manage::set_user_disabled(&store, &username, true).await?;
            println!("disabled user {username}: no sign-in, its tokens refused, its console sessions ended");
        }
        UserCommand::Enable { username } => {
            manage::set_user_disabled(&store, &username, false).await?;
            println!("enabled user {username}");
        }
        UserCommand::Passwd { username, password_stdin: _ } => {
            let ended = manage::set_password(&store, &username, &read_password()?).await?;
            println!("password set for user {username}; {ended} console session(s) ended");
        }
    }
    Ok(ExitCode::SUCCESS)
}
