//! `tidal token create | list | revoke | generate`: tokens with roles (README: Tokens).

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde_json::json;
use tidal_proto::v1;
use tidal_server::auth::token::{parse_ttl, Token};

use super::Ctx;
use crate::opts::ClientOpts;
use crate::output::{self, out, Table};

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token on the cluster and print it, the only time it is shown (only its hash is stored).
    #[command(
        after_help = "Examples:\n  tidal token create --role admin --name ops > admin.token\n  \
        tidal token create --role user --tenant team-a --ttl 30d\n  \
        tidal token create --role agent --all-tenants --name gpu-pool\n\
        The token goes to stdout (its id and role to stderr); -o json prints both as one document."
    )]
    Create(CreateArgs),
    /// List every token (revoked and expired ones too): id, name, role, tenant, times. Never a secret.
    List(ListArgs),
    /// Revoke a token by its id (the 16 hex digits after tdl_): it stops working at once.
    Revoke(RevokeArgs),
    /// Print a new token without storing it anywhere, e.g. for `tidal server --bootstrap-token-file`.
    Generate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Membership, queues, tokens, tenants, drains, snapshots: everything.
    Admin,
    /// Submit, read, list, watch and cancel one tenant's tasks.
    User,
    /// Run an agent for one tenant's tasks (or every tenant's).
    Agent,
}

impl RoleArg {
    fn as_str(self) -> &'static str {
        match self {
            RoleArg::Admin => "admin",
            RoleArg::User => "user",
            RoleArg::Agent => "agent",
        }
    }
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("scope").args(["tenant", "all_tenants"])))]
pub struct CreateArgs {
    /// What the token may do.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// The tenant a user or agent token acts for.
    #[arg(long, value_name = "T")]
    pub tenant: Option<String>,
    /// An agent token that runs every tenant's tasks (admin tokens always act for every tenant).
    #[arg(long)]
    pub all_tenants: bool,
    /// A name to tell it by in `tidal token list`.
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Expire after this long: a number and s, m, h or d (e.g. 30d). Default: never.
    #[arg(long, value_name = "TTL", value_parser = parse_ttl_arg)]
    pub ttl: Option<u64>,
    #[command(flatten)]
    pub client: ClientOpts,
}

fn parse_ttl_arg(s: &str) -> Result<u64, String> {
    parse_ttl(s).map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The token's id, as `tidal token list` shows it.
    pub id: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create(a) => {
            let ctx = Ctx::new(&a.client)?;
            let req = v1::CreateTokenRequest {
                role: a.role.as_str().to_string(),
                tenant: a.tenant.clone().unwrap_or_default(),
                all_tenants: a.all_tenants,
                name: a.name.clone().unwrap_or_default(),
                ttl_ms: a.ttl.unwrap_or(0),
            };
            let created = ctx
                .client
                .create_token(req)
                .await
                .context("creating a token")?;
            let info = created.info.unwrap_or_default();
            if ctx.json() {
                let mut doc = token_json(&info);
                doc["token"] = json!(created.token);
                output::print_json(&doc);
            } else {
                out!("{}\n", created.token);
                eprintln!(
                    "token {} ({}, {}): keep it, it is not shown again",
                    info.id,
                    info.role,
                    scope(&info)
                );
            }
        }
        TokenCmd::List(a) => {
            let ctx = Ctx::new(&a.client)?;
            let tokens = ctx.client.list_tokens().await.context("listing tokens")?;
            if ctx.json() {
                output::print_json(
                    &json!({ "tokens": tokens.iter().map(token_json).collect::<Vec<_>>() }),
                );
            } else {
                out!("{}", tokens_table(&tokens));
            }
        }
        TokenCmd::Revoke(a) => {
            let ctx = Ctx::new(&a.client)?;
            let info = ctx
                .client
                .revoke_token(&a.id)
                .await
                .with_context(|| format!("revoking token {}", a.id))?;
            if ctx.json() {
                output::print_json(&token_json(&info));
            } else {
                out!("{}", tokens_table(std::slice::from_ref(&info)));
            }
        }
        TokenCmd::Generate => {
            let token = Token::generate().context("generating a token")?;
            out!("{}\n", token.reveal());
            eprintln!(
                "token {}: stored nowhere; `tidal server --bootstrap-token-file FILE` makes it \
                 the first admin token",
                token.id()
            );
        }
    }
    Ok(())
}

/// The tenant column: `*` for every tenant.
fn scope(t: &v1::TokenInfo) -> String {
    if t.tenant.is_empty() {
        "*".to_string()
    } else {
        t.tenant.clone()
    }
}

pub fn token_json(t: &v1::TokenInfo) -> serde_json::Value {
    json!({
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "tenant": (!t.tenant.is_empty()).then_some(&t.tenant),
        "created_ms": t.created_ms,
        "expires_ms": (t.expires_ms != 0).then_some(t.expires_ms),
        "revoked_ms": (t.revoked_ms != 0).then_some(t.revoked_ms),
        "created_by": t.created_by,
        "active": t.active,
    })
}

pub fn tokens_table(tokens: &[v1::TokenInfo]) -> String {
    let mut t = Table::new(&[
        "ID", "NAME", "ROLE", "TENANT", "CREATED", "EXPIRES", "REVOKED",
    ]);
    for k in tokens {
        t.row(vec![
            k.id.clone(),
            output::dash(&k.name),
            k.role.clone(),
            scope(k),
            output::ms_to_utc(k.created_ms),
            output::ms_to_utc(k.expires_ms),
            output::ms_to_utc(k.revoked_ms),
        ]);
    }
    t.render()
}
