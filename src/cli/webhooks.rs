//! `intake webhooks` (events pending, given up, delivered), `intake webhook
//! test`, and the webhook options of `intake account add|set`.

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use intake::config::Config;
use intake::domain::shown::printable;
use intake::store::{Delivery, Store, WebhookSecret};
use serde_json::{json, Value};
use std::io::BufRead;
use std::process::ExitCode;

#[derive(Args)]
pub struct WebhookArgs {
    /// Where a finished job's summary is POSTed (https:// in production).
    #[arg(long)]
    webhook_url: Option<String>,
    /// Read the webhook's signing secret from standard input (one line).
    #[arg(long)]
    webhook_secret_stdin: bool,
    /// Stop sending webhooks for this account.
    #[arg(long, conflicts_with_all = ["webhook_url", "webhook_secret_stdin"])]
    no_webhook: bool,
}

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Webhook events not delivered yet, and those given up.
    List {
        #[arg(long)]
        account: Option<String>,
        /// Delivered events too.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Send a signed test event to the account's webhook now and show the answer.
    Test { avid: String },
}

pub(super) fn delivery_json(d: &Delivery) -> Value {
    json!({
        "delivery_id": d.delivery_id,
        "account": d.account,
        "job_id": d.job_id,
        "event": d.event,
        "url": d.url,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "created_at": d.created_at,
        "next_attempt_at": d.next_attempt_at,
        "last_attempt_at": d.last_attempt_at,
        "last_error": d.last_error,
        "delivered_at": d.delivered_at,
    })
}

/// Where a finished job's upload is archived.
/// Refuses a webhook URL that is not http(s), before anything is written.
pub fn check_webhook_args(args: &WebhookArgs) -> Result<()> {
    if let Some(url) = &args.webhook_url {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("--webhook-url {url} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--webhook-url must be an http:// or https:// URL");
        }
    }
    Ok(())
}

/// Sets, changes (URL and/or secret) or removes an account's webhook as
/// the options say; without webhook options, leaves it as it is.
pub async fn apply_webhook(store: &Store, avid: &str, args: &WebhookArgs) -> Result<()> {
    if args.no_webhook {
        let had = store.remove_webhook(avid).await?;
        println!("{}", if had { format!("removed the webhook of {avid}") } else { format!("{avid} had no webhook") });
        return Ok(());
    }
    if args.webhook_url.is_none() && !args.webhook_secret_stdin {
        return Ok(());
    }
    let existing = store.get_webhook(avid).await?;
    let url = match (&args.webhook_url, &existing) {
        (Some(url), _) => url.clone(),
        (None, Some(w)) => w.url.clone(),
        (None, None) => bail!("{avid} has no webhook yet: give --webhook-url URL too"),
    };
    let secret = if args.webhook_secret_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("while reading the webhook secret")?;
        let secret = line.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            bail!("the webhook secret read from standard input is empty");
        }
        WebhookSecret::new(secret.to_owned())
    } else {
        match existing {
            Some(w) => w.secret,
            None => bail!("a new webhook needs a signing secret: pipe it into --webhook-secret-stdin"),
        }
    };
    store.set_webhook(avid, &url, &secret).await?;
    println!("the webhook of {avid} is {url}");
    Ok(())
}

pub async fn webhooks(store: &Store, cmd: WebhooksCommand) -> Result<ExitCode> {
    let WebhooksCommand::List { account, all, limit, json } = cmd;
    let deliveries = store.list_deliveries(account.as_deref(), None, all, limit).await?;
    if json {
        let all: Vec<Value> = deliveries.iter().map(delivery_json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<46} {:<16} {:<14} {:<10} {:>8}  {:<20} LAST ERROR",
        "DELIVERY", "ACCOUNT", "EVENT", "STATUS", "ATTEMPTS", "NEXT TRY"
    );
    for d in deliveries {
        let next = if d.status == intake::store::DeliveryStatus::Pending { d.next_attempt_at.as_str() } else { "-" };
        println!(
            "{:<46} {:<16} {:<14} {:<10} {:>8}  {:<20} {}",
            d.delivery_id,
            d.account,
            d.event,
            d.status.as_str(),
            d.attempts,
            next,
            printable(d.last_error.as_deref().unwrap_or("-"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn webhook(config: &Config, store: Store, cmd: WebhookCommand) -> Result<ExitCode> {
    let WebhookCommand::Test { avid } = cmd;
    let Some(webhook) = store.get_webhook(&avid).await? else {
        bail!(
            "{avid} has no webhook; set one with `intake account set {avid} --webhook-url URL --webhook-secret-stdin`"
        )
    };
    let delivery = intake::webhooks::test_delivery(&avid, &webhook.url);
    let sender = intake::webhooks::Sender::new(store, config.webhooks.clone())?;
    match sender.send(&delivery).await {
        Ok(status) => {
            println!("delivered {} to {}: HTTP {status}", delivery.delivery_id, printable(&webhook.url));
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            println!(
                "not delivered {} to {}: {}",
                delivery.delivery_id,
                printable(&webhook.url),
                printable(&why.to_string())
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
