//! The bootstrap token a server starts with: `--bootstrap-token-file`'s, or under `--auth tokens` the one it writes to `DATA/bootstrap.token` on `--init`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::auth::token::Token;
use crate::config::{AuthMode, ServerConfig};

/// The file a server under `--auth tokens` writes its bootstrap token to
/// when `--init` makes a new cluster and no `--bootstrap-token-file` is given.
pub const FILE: &str = "bootstrap.token";

/// Where a server's bootstrap token comes from, and whether it was just made.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// `--bootstrap-token-file`, or none: nothing is written.
    Given(Option<PathBuf>),
    /// `DATA/bootstrap.token`, written at this start (`true`) or found from
    /// an earlier one (`false`).
    DataDir(PathBuf, bool),
}

/// Which bootstrap token file this server uses. `fresh`: its data
/// directory holds no state yet (checked before the store opens it).
///
/// Under `--auth tokens` without `--bootstrap-token-file`, a
/// `DATA/bootstrap.token` left by an earlier start is used again; `--init`
/// on a fresh data directory writes a new one (mode 0600, the token's text
/// and a newline). Applying it is harmless after the first start: a leader
/// makes it the first admin token only while no token was ever created.
pub fn choose(config: &ServerConfig, fresh: bool) -> anyhow::Result<Source> {
    if config.bootstrap_token_file.is_some() || config.auth != AuthMode::Tokens {
        return Ok(Source::Given(config.bootstrap_token_file.clone()));
    }
    let path = config.data_dir.join(FILE);
    if path.exists() {
        return Ok(Source::DataDir(path, false));
    }
    if !(config.init && fresh) {
        return Ok(Source::Given(None));
    }
    write_new(&path)?;
    Ok(Source::DataDir(path, true))
}

/// Writes a new token to `path`, readable by this user only; fails if the
/// file exists.
fn write_new(path: &Path) -> anyhow::Result<()> {
    let token = Token::generate().context("generating a bootstrap token")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(format!("{}\n", token.reveal()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

impl Source {
    /// The file to read the token from, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Given(p) => p.as_deref(),
            Source::DataDir(p, _) => Some(p),
        }
    }

    /// How errors name the file: by its flag when the operator gave it.
    pub fn name(&self) -> String {
        match self {
            Source::Given(p) => format!(
                "--bootstrap-token-file {}",
                p.as_deref().unwrap_or(Path::new("")).display()
            ),
            Source::DataDir(p, _) => format!("bootstrap token file {}", p.display()),
        }
    }

    /// Logs once, at warn, where a just written token is and how to use it.
    pub fn announce(&self) {
        if let Source::DataDir(path, true) = self {
            tracing::warn!(
                file = %path.display(),
                "--auth tokens without --bootstrap-token-file: wrote this new cluster's admin \
                 token to {0} (readable by this user only); use it to create tokens: \
                 TIDAL_TOKEN=$(cat {0}) tidal token create --role admin --name NAME",
                path.display()
            );
        }
    }
}

#[cfg(test)]
#[path = "bootstrap_file_test.rs"]
mod tests;
