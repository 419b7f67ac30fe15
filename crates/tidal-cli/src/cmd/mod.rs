//! One module per command group; [`dispatch`] runs the parsed command and
//! returns the process exit code.

pub mod agent;
pub mod chaos;
pub mod cluster;
pub mod dc;
pub mod dev;
pub mod example_worker;
pub mod queue;
pub mod server;
pub mod status;
pub mod task;

use std::time::Duration;

use anyhow::Context;
use tidal_client::{Client, ClientOptions};

use crate::cli::{ClientOpts, Command, OutputFormat};
use crate::exit;

pub async fn dispatch(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Server(a) => server::run(a).await.map(|()| exit::OK),
        Command::Agent(a) => agent::run(a).await.map(|()| exit::OK),
        Command::Task(c) => task::run(c).await,
        Command::Cluster(c) => cluster::run(c).await.map(|()| exit::OK),
        Command::Queue(c) => queue::run(c).await.map(|()| exit::OK),
        Command::Status(a) => status::run(a).await.map(|()| exit::OK),
        Command::Dc(c) => dc::run(c).await.map(|()| exit::OK),
        Command::Dev(a) => dev::run(a).await.map(|()| exit::OK),
        Command::Chaos(c) => chaos::run(c).await,
        Command::ExampleWorker(a) => example_worker::run(a).await,
    }
}

/// What a client command works with: a client and how to print.
pub struct Ctx {
    pub client: Client,
    pub output: OutputFormat,
}

impl Ctx {
    pub fn new(opts: &ClientOpts) -> anyhow::Result<Ctx> {
        Ok(Ctx {
            client: client(&opts.endpoints, opts.timeout())?,
            output: opts.output,
        })
    }

    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// A client whose whole retry budget (waiting for a leader included) is `timeout`.
pub fn client(endpoints: &[String], timeout: Duration) -> anyhow::Result<Client> {
    let opts = ClientOptions {
        request_timeout: timeout.min(Duration::from_secs(10)),
        retry_for: timeout,
        connect_timeout: timeout.min(tidal_client::DEFAULT_CONNECT_TIMEOUT),
        ..ClientOptions::default()
    };
    Client::with_options(endpoints.to_vec(), opts).context("bad --endpoints")
}
