//! `intake mapping set|show|list|rm`: an account's mapping profiles, from a
//! file or standard input, checked before they are stored.

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use intake::domain::mapping::{check_name, presets, MAX_PROFILE_BYTES};
use intake::domain::shown::printable;
use intake::ingest::mappings::{store_profile, Refused};
use intake::store::Store;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum MappingCommand {
    /// Store (or replace) a profile, read from a file or `-` (standard input).
    Set {
        avid: String,
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Print a profile's text (a preset's too).
    Show { avid: String, name: String },
    /// The account's profiles and enabled presets, in the order they are tried.
    List { avid: String },
    /// Remove a profile.
    Rm { avid: String, name: String },
}

/// Reads at most the profile limit and one byte more, so that a larger
/// input is refused by the parser's size check, not read whole.
fn read_bounded(mut input: impl Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.by_ref().take(MAX_PROFILE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

pub async fn mapping(store: &Store, cmd: MappingCommand) -> Result<ExitCode> {
    let account_exists = |avid: String| async move {
        if store.get_account(&avid).await?.is_none() {
            bail!("no account `{avid}`");
        }
        Ok::<_, anyhow::Error>(())
    };
    match cmd {
        MappingCommand::Set { avid, name, file } => {
            account_exists(avid.clone()).await?;
            let bytes = if file.as_os_str() == "-" {
                read_bounded(std::io::stdin().lock())?
            } else {
                read_bounded(std::fs::File::open(&file).with_context(|| format!("while opening {}", file.display()))?)?
            };
            match store_profile(store, &avid, &name, &bytes).await? {
                Ok(profile) => println!("stored mapping {name} for {avid} (sha256 {})", profile.sha256()),
                Err(Refused::Invalid(why)) => bail!("mapping {name} refused: {why}"),
                Err(e @ Refused::TooMany) => bail!("mapping {name} refused: {e}"),
            }
        }
        MappingCommand::Show { avid, name } => match store.get_mapping(&avid, &name).await? {
            // A profile is the merchant's text: its lines, with nothing a terminal runs.
            Some(m) => {
                for line in m.text.split_inclusive('\n') {
                    let (body, end) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
                    let shown: Vec<_> = body.split('\t').map(printable).collect();
                    print!("{}{end}", shown.join("\t"));
                }
            }
            None => match presets::get(&name) {
                Some(p) => print!("{}", p.text()),
                None => bail!("no mapping `{name}` for {avid}"),
            },
        },
        MappingCommand::List { avid } => {
            account_exists(avid.clone()).await?;
            println!("{:<40} {:<8} {:<25} SHA256", "NAME", "KIND", "UPDATED");
            for m in store.list_mappings(&avid).await? {
                println!("{:<40} {:<8} {:<25} {}", printable(&m.name), "profile", m.updated_at, m.sha256);
            }
            for name in store.get_presets(&avid).await? {
                if let Some(p) = presets::get(&name) {
                    println!("{:<40} {:<8} {:<25} {}", name, "preset", "-", p.sha256());
                }
            }
        }
        MappingCommand::Rm { avid, name } => {
            check_name(&name).map_err(anyhow::Error::msg)?;
            if !store.remove_mapping(&avid, &name).await? {
                bail!("no mapping `{name}` for {avid}");
            }
            println!("removed mapping {name} of {avid}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
