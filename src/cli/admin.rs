//! `intake admin`: the web console's operators, a principal apart from
//! SFTP users (they see every account).

use anyhow::{bail, Result};
use clap::Subcommand;
use intake::config::Config;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Add an operator, or set an existing one's password (read from
    /// standard input); an existing operator's sessions end.
    Add {
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

pub async fn admin(config: &Config, cmd: AdminCommand) -> Result<ExitCode> {
    let store = super::open_store(config).await?;
    match cmd {
        AdminCommand::Add { name, password_stdin: _ } => {
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                bail!("an operator's name is 1-64 characters, no spaces");
            }
            let hash = intake::sftp::hash_password(&super::accounts::read_password()?)?;
            store.put_operator(&name, &hash).await?;
            store.delete_sessions_of(intake::store::PrincipalKind::Operator, &name).await?;
            println!("operator {name} can sign in to the web console");
        }
    }
    Ok(ExitCode::SUCCESS)
}
