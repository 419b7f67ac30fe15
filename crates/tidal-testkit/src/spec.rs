//! The arguments of `tidal server` and `tidal agent`.

use std::path::PathBuf;

/// One `tidal server`.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub id: u64,
    pub dc: String,
    pub listen: String,
    /// What others dial (default: `listen`).
    pub advertise: Option<String>,
    /// `--peer-listen`: a second listener for the other servers.
    pub peer_listen: Option<String>,
    pub data: PathBuf,
    /// `--tls-dir`: its certificate, key and CA.
    pub tls_dir: Option<PathBuf>,
    /// `--init`: the first member of a new cluster.
    pub init: bool,
    /// Flags after the ones above.
    pub args: Vec<String>,
}

impl ServerSpec {
    pub fn new(id: u64, dc: &str, listen: &str, data: PathBuf) -> ServerSpec {
        ServerSpec {
            id,
            dc: dc.to_string(),
            listen: listen.to_string(),
            advertise: None,
            peer_listen: None,
            data,
            tls_dir: None,
            init: false,
            args: Vec::new(),
        }
    }

    /// `server --id N --dc DC --listen ADDR [--advertise ADDR] [--peer-listen ADDR]
    /// --data DIR [--tls-dir DIR] [--init] [--auth none] ARGS...` (`--auth
    /// none` unless ARGS choose)
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "server".into(),
            "--id".into(),
            self.id.to_string(),
            "--dc".into(),
            self.dc.clone(),
            "--listen".into(),
            self.listen.clone(),
        ];
        if let Some(advertise) = &self.advertise {
            a.extend(["--advertise".into(), advertise.clone()]);
        }
        if let Some(peer) = &self.peer_listen {
            a.extend(["--peer-listen".into(), peer.clone()]);
        }
        a.extend(["--data".into(), self.data.display().to_string()]);
        if let Some(tls) = &self.tls_dir {
            a.extend(["--tls-dir".into(), tls.display().to_string()]);
        }
        if self.init {
            a.push("--init".into());
        }
        // The server's default is --auth tokens: a cluster whose flags do
        // not choose runs without tokens.
        if !self
            .args
            .iter()
            .any(|f| f == "--auth" || f.starts_with("--auth="))
        {
            a.extend(["--auth".into(), "none".into()]);
        }
        a.extend(self.args.iter().cloned());
        a
    }
}

/// One `tidal agent`; the command defaults to the built-in demo worker
/// (`tidal example-worker --sleep-ms 50`).
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub id: String,
    pub task_types: Vec<String>,
    pub models: Vec<String>,
    pub slots: u32,
    /// Flags after the ones above.
    pub extra_args: Vec<String>,
    /// The worker command; empty: the demo worker.
    pub command: Vec<String>,
    /// Extra environment variables of the agent process.
    pub env: Vec<(String, String)>,
}

impl AgentSpec {
    pub fn new(id: &str, task_types: &[&str]) -> AgentSpec {
        AgentSpec {
            id: id.to_string(),
            task_types: task_types.iter().map(|s| s.to_string()).collect(),
            models: Vec::new(),
            slots: 1,
            extra_args: Vec::new(),
            command: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> AgentSpec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn models(mut self, models: &[&str]) -> AgentSpec {
        self.models = models.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn slots(mut self, slots: u32) -> AgentSpec {
        self.slots = slots;
        self
    }

    pub fn command(mut self, command: &[&str]) -> AgentSpec {
        self.command = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `agent --id ID --dc DC --task-types T --slots N --endpoints E
    /// [--models M] EXTRA... -- COMMAND...`; `tidal` runs the demo worker
    /// when no command was given.
    pub fn args(&self, dc: &str, endpoints: &[String], tidal: &std::path::Path) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "agent".into(),
            "--id".into(),
            self.id.clone(),
            "--dc".into(),
            dc.to_string(),
            "--task-types".into(),
            self.task_types.join(","),
            "--slots".into(),
            self.slots.to_string(),
            "--endpoints".into(),
            endpoints.join(","),
        ];
        if !self.models.is_empty() {
            a.extend(["--models".into(), self.models.join(",")]);
        }
        a.extend(self.extra_args.iter().cloned());
        a.push("--".into());
        if self.command.is_empty() {
            a.extend([
                tidal.display().to_string(),
                "example-worker".into(),
                "--sleep-ms".into(),
                "50".into(),
            ]);
        } else {
            a.extend(self.command.iter().cloned());
        }
        a
    }
}
