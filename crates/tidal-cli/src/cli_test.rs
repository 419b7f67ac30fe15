//! Every documented command form parses (`try_parse_from`), and mistakes are usage errors.

use clap::error::ErrorKind;
use clap::Parser;
use tidal_proto::v1;

use super::{Cli, Command};
use crate::cmd::agent::AgentCmd;
use crate::cmd::cluster::ClusterCmd;
use crate::cmd::queue::{QueueCmd, StrategyArg};
use crate::cmd::task::{PriorityArg, StateArg, TaskCmd};
use crate::opts::OutputFormat;

fn parse(args: &[&str]) -> Cli {
    let mut v = vec!["tidal"];
    v.extend_from_slice(args);
    match Cli::try_parse_from(&v) {
        Ok(c) => c,
        Err(e) => panic!("{args:?} did not parse: {e}"),
    }
}

fn usage_error(args: &[&str]) -> ErrorKind {
    let mut v = vec!["tidal"];
    v.extend_from_slice(args);
    match Cli::try_parse_from(&v) {
        Ok(c) => panic!("{args:?} parsed but should not: {c:?}"),
        Err(e) => e.kind(),
    }
}

#[test]
fn server_flags_build_the_raw_config() {
    let cli = parse(&[
        "server",
        "--id",
        "1",
        "--dc",
        "dc1",
        "--listen",
        "127.0.0.1:7001",
        "--data",
        "/tmp/n1",
        "--init",
        "--config",
        "n1.toml",
        "--advertise",
        "10.0.0.1:7001",
    ]);
    let Command::Server(a) = cli.command else {
        panic!("not server")
    };
    let raw = &a.settings;
    assert_eq!(raw.id, Some(1));
    assert_eq!(raw.dc.as_deref(), Some("dc1"));
    assert_eq!(raw.listen.as_deref(), Some("127.0.0.1:7001"));
    assert_eq!(raw.advertise.as_deref(), Some("10.0.0.1:7001"));
    assert_eq!(raw.data.as_deref(), Some(std::path::Path::new("/tmp/n1")));
    assert_eq!(raw.init, Some(true));
    assert_eq!(a.config.as_deref(), Some(std::path::Path::new("n1.toml")));

    // Without --init the flag layer leaves `init` to the file.
    let Command::Server(a) = parse(&["server", "--id", "2"]).command else {
        panic!()
    };
    assert_eq!(a.settings.init, None);
    assert_eq!(a.settings.dc, None);
}

#[test]
fn server_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.toml");
    std::fs::write(
        &file,
        "id = 7\ndc = \"file-dc\"\nlisten = \"127.0.0.1:7001\"\ndata = \"/d\"\ninit = true\n\
         [[peers]]\ndc = \"dc-f\"\nendpoints = [\"127.0.0.1:7101\"]\n\
         [forwarding]\nforward_after_ms = 1\noutbox_limit = 5\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let Command::Server(a) = parse(&["server", "--config", f, "--dc", "flag-dc"]).command else {
        panic!()
    };
    let merged = a.merged().unwrap();
    assert_eq!(merged.id, Some(7));
    assert_eq!(merged.dc.as_deref(), Some("flag-dc"));
    assert_eq!(merged.init, Some(true));
    assert_eq!(merged.peers.as_ref().unwrap()[0].dc, "dc-f");

    // A forwarding flag overrides one field of the file's table; --peer
    // replaces the file's list; --init=false overrides the file's true.
    let Command::Server(a) = parse(&[
        "server",
        "--config",
        f,
        "--init=false",
        "--forward-after-ms",
        "9",
        "--peer",
        "dc-x=127.0.0.1:7201,127.0.0.1:7202",
        "--peer",
        "dc-y=127.0.0.1:7301",
        "--print-config",
    ])
    .command
    else {
        panic!()
    };
    assert!(a.print_config);
    let merged = a.merged().unwrap();
    assert_eq!(merged.init, Some(false));
    assert_eq!(merged.forwarding.forward_after_ms, Some(9));
    assert_eq!(merged.forwarding.outbox_limit, Some(5));
    let peers = merged.peers.unwrap();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0].endpoints.len(), 2);
    assert_eq!(peers[1].dc, "dc-y");
}

#[test]
fn cluster_forms() {
    let Command::Cluster(ClusterCmd::AddLearner(a)) = parse(&[
        "cluster",
        "add-learner",
        "--id",
        "2",
        "--addr",
        "127.0.0.1:7002",
    ])
    .command
    else {
        panic!()
    };
    assert_eq!((a.id, a.addr.as_str()), (2, "127.0.0.1:7002"));
    let Command::Cluster(ClusterCmd::Promote(p)) = parse(&["cluster", "promote", "3"]).command
    else {
        panic!()
    };
    assert_eq!(p.id, 3);
    assert!(matches!(
        parse(&["cluster", "members"]).command,
        Command::Cluster(ClusterCmd::Members(_))
    ));
    assert_eq!(
        usage_error(&["cluster", "promote"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        usage_error(&["cluster", "add-learner", "--id", "2"]),
        ErrorKind::MissingRequiredArgument
    );
}

#[test]
fn agent_run_form() {
    let cli = parse(&[
        "agent",
        "--id",
        "gpu-1",
        "--dc",
        "dc1",
        "--task-types",
        "t2i,tts",
        "--pipelines",
        "sd,fast",
        "--models",
        "sdxl,vits",
        "--slots",
        "4",
        "--weight",
        "3",
        "--gpus",
        "A100:81920,A40:46068",
        "--labels",
        "zone=a,rack=r1",
        "--ttl-ms",
        "5000",
        "--",
        "python3",
        "worker.py",
        "--flag",
    ]);
    let Command::Agent(a) = cli.command else {
        panic!()
    };
    assert!(a.action.is_none());
    let c = a.run.to_config().unwrap();
    assert_eq!(c.id, "gpu-1");
    assert_eq!(c.dc, "dc1");
    assert_eq!(c.task_types, ["t2i", "tts"]);
    assert_eq!(c.pipelines, ["sd", "fast"]);
    assert_eq!(c.models, ["sdxl", "vits"]);
    assert_eq!((c.slots, c.weight), (4, 3));
    assert_eq!(
        c.gpus,
        vec![
            v1::Gpu {
                model: "A100".into(),
                memory_mb: 81920
            },
            v1::Gpu {
                model: "A40".into(),
                memory_mb: 46068
            }
        ]
    );
    assert_eq!(c.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(c.labels.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(c.ttl, Some(std::time::Duration::from_millis(5000)));
    assert_eq!(c.command, ["python3", "worker.py", "--flag"]);
    assert!(!c.endpoints.is_empty());
}

#[test]
fn agent_run_needs_a_command_and_good_lists() {
    let base = ["agent", "--id", "a", "--dc", "d", "--task-types", "t2i"];
    assert_eq!(usage_error(&base), ErrorKind::MissingRequiredArgument);
    let mut bad_gpu = base.to_vec();
    bad_gpu.extend(["--gpus", "A100", "--", "x"]);
    assert_eq!(usage_error(&bad_gpu), ErrorKind::ValueValidation);
    let mut bad_label = base.to_vec();
    bad_label.extend(["--labels", "zone", "--", "x"]);
    assert_eq!(usage_error(&bad_label), ErrorKind::ValueValidation);
    let mut dup = base.to_vec();
    dup.extend(["--labels", "a=1,a=2", "--", "x"]);
    let Command::Agent(a) = parse(&dup).command else {
        panic!()
    };
    assert!(format!("{:#}", a.run.to_config().unwrap_err()).contains("given twice"));
}

#[test]
fn agent_list_form() {
    let cli = parse(&[
        "agent",
        "list",
        "--endpoints",
        "127.0.0.1:7001,127.0.0.1:7002",
        "--output",
        "json",
    ]);
    let Command::Agent(a) = cli.command else {
        panic!()
    };
    let Some(AgentCmd::List(l)) = a.action else {
        panic!("not list")
    };
    assert_eq!(l.client.endpoints, ["127.0.0.1:7001", "127.0.0.1:7002"]);
    assert_eq!(l.client.output, OutputFormat::Json);
}

#[test]
fn agent_drain_and_undrain_forms() {
    let Command::Agent(a) = parse(&["agent", "drain", "gpu-7", "--deadline-ms", "600000"]).command
    else {
        panic!()
    };
    let Some(AgentCmd::Drain(d)) = a.action else {
        panic!("not drain")
    };
    assert_eq!((d.id.as_str(), d.deadline_ms), ("gpu-7", Some(600_000)));
    let Command::Agent(a) = parse(&["agent", "drain", "gpu-7"]).command else {
        panic!()
    };
    assert!(matches!(a.action, Some(AgentCmd::Drain(d)) if d.deadline_ms.is_none()));
    let Command::Agent(a) = parse(&["agent", "undrain", "gpu-7"]).command else {
        panic!()
    };
    assert!(matches!(a.action, Some(AgentCmd::Undrain(u)) if u.id == "gpu-7"));
    assert_eq!(
        usage_error(&["agent", "drain"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        usage_error(&["agent", "drain", "a", "--deadline-ms", "-5"]),
        ErrorKind::UnknownArgument
    );
    // The agent's own drain on SIGTERM and its stop grace.
    let Command::Agent(a) = parse(&[
        "agent",
        "--id",
        "a",
        "--dc",
        "d",
        "--task-types",
        "t2i",
        "--drain-timeout-ms",
        "1500",
        "--stop-grace-ms",
        "200",
        "--",
        "x",
    ])
    .command
    else {
        panic!()
    };
    let c = a.run.to_config().unwrap();
    assert_eq!(
        (c.drain_timeout, c.stop_grace),
        (
            std::time::Duration::from_millis(1500),
            std::time::Duration::from_millis(200)
        )
    );
}

#[test]
fn task_submit_form() {
    let cli = parse(&[
        "task",
        "submit",
        "--type",
        "t2i",
        "--pipeline",
        "sd",
        "--models",
        "sdxl,lora-x",
        "--queue",
        "vip",
        "--key",
        "k1",
        "--payload",
        "a red fox",
        "--priority",
        "online",
        "--max-attempts",
        "5",
        "--slots",
        "2",
    ]);
    let Command::Task(TaskCmd::Submit(s)) = cli.command else {
        panic!()
    };
    assert_eq!(s.priority, Some(PriorityArg::Online));
    let specs = s.specs().unwrap();
    assert_eq!(specs.len(), 1);
    let spec = &specs[0];
    assert_eq!(spec.task_type, "t2i");
    assert_eq!(spec.pipeline, "sd");
    assert_eq!(spec.models, ["sdxl", "lora-x"]);
    assert_eq!(spec.queue, "vip");
    assert_eq!(spec.idempotency_key, "k1");
    assert_eq!(spec.payload, b"a red fox");
    assert_eq!(spec.priority, v1::Priority::Online as i32);
    assert_eq!((spec.max_attempts, spec.slots), (5, 2));
}

#[test]
fn task_submit_count_and_payload_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.bin");
    std::fs::write(&f, [0u8, 255, 1]).unwrap();
    let cli = parse(&[
        "task",
        "submit",
        "--type",
        "tts",
        "--payload-file",
        f.to_str().unwrap(),
        "--count",
        "3",
        "--key",
        "b",
    ]);
    let Command::Task(TaskCmd::Submit(s)) = cli.command else {
        panic!()
    };
    let specs = s.specs().unwrap();
    let keys: Vec<&str> = specs.iter().map(|s| s.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["b-1", "b-2", "b-3"]);
    assert!(specs.iter().all(|s| s.payload == [0u8, 255, 1]));
    assert_eq!(specs[0].priority, v1::Priority::Unspecified as i32);

    assert_eq!(
        usage_error(&["task", "submit"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        usage_error(&[
            "task",
            "submit",
            "--type",
            "t",
            "--payload",
            "x",
            "--payload-file",
            "f"
        ]),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        usage_error(&["task", "submit", "--type", "t", "--priority", "urgent"]),
        ErrorKind::InvalidValue
    );
}

#[test]
fn task_read_forms() {
    let Command::Task(TaskCmd::Get(g)) =
        parse(&["task", "get", "t-1", "--stale", "-o", "json"]).command
    else {
        panic!()
    };
    assert_eq!(g.id, "t-1");
    assert!(g.stale);
    assert_eq!(g.client.output, OutputFormat::Json);

    let Command::Task(TaskCmd::List(l)) = parse(&[
        "task", "list", "--state", "running", "--queue", "vip", "--limit", "10",
    ])
    .command
    else {
        panic!()
    };
    assert_eq!(l.state, Some(StateArg::Running));
    assert_eq!(
        v1::TaskState::from(StateArg::Cancelled),
        v1::TaskState::Cancelled
    );
    assert_eq!((l.queue.as_deref(), l.limit), (Some("vip"), Some(10)));

    assert!(
        matches!(parse(&["task", "cancel", "t-9"]).command, Command::Task(TaskCmd::Cancel(c)) if c.id == "t-9")
    );
    assert!(
        matches!(parse(&["task", "watch", "t-9"]).command, Command::Task(TaskCmd::Watch(w)) if w.id == "t-9")
    );
    assert_eq!(
        usage_error(&["task", "get"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        usage_error(&["task", "list", "--state", "done"]),
        ErrorKind::InvalidValue
    );
}

#[test]
fn queue_and_status_forms() {
    let Command::Queue(QueueCmd::Set(s)) = parse(&[
        "queue",
        "set",
        "vip",
        "--weight",
        "8",
        "--strategy",
        "weighted-round-robin",
    ])
    .command
    else {
        panic!()
    };
    assert_eq!(
        (s.name.as_str(), s.weight, s.strategy),
        ("vip", 8, StrategyArg::WeightedRoundRobin)
    );
    assert_eq!(s.strategy.as_str(), "weighted-round-robin");
    let Command::Queue(QueueCmd::Set(s)) =
        parse(&["queue", "set", "normal", "--weight", "2"]).command
    else {
        panic!()
    };
    assert_eq!(s.strategy.as_str(), "least-loaded");
    assert!(matches!(
        parse(&["queue", "list"]).command,
        Command::Queue(QueueCmd::List(_))
    ));
    assert_eq!(
        usage_error(&["queue", "set", "vip"]),
        ErrorKind::MissingRequiredArgument
    );
    assert!(matches!(parse(&["status"]).command, Command::Status(_)));
}

#[test]
fn client_options_defaults_and_timeout() {
    let Command::Status(s) = parse(&["status", "--timeout-ms", "500"]).command else {
        panic!()
    };
    assert_eq!(s.client.timeout(), std::time::Duration::from_millis(500));
    assert_eq!(s.client.output, OutputFormat::Table);
    // The default is TIDAL_ENDPOINTS when set (tests must not depend on the environment).
    if std::env::var_os("TIDAL_ENDPOINTS").is_none() {
        assert_eq!(s.client.endpoints, [crate::opts::DEFAULT_ENDPOINT]);
    }
    assert_eq!(
        usage_error(&["status", "--output", "yaml"]),
        ErrorKind::InvalidValue
    );
}

#[test]
fn client_and_agent_tls_flags() {
    // Tests must not depend on the environment.
    if std::env::var_os("TIDAL_TLS_DIR").is_some() || std::env::var_os("TIDAL_INSECURE").is_some() {
        return;
    }
    let Command::Status(s) = parse(&["status"]).command else {
        panic!()
    };
    assert_eq!((s.client.tls.tls_dir, s.client.tls.insecure), (None, None));
    let Command::Task(TaskCmd::Get(g)) =
        parse(&["task", "get", "t-1", "--tls-dir", "/etc/tidal/tls"]).command
    else {
        panic!()
    };
    assert_eq!(
        g.client.tls.tls_dir,
        Some(std::path::PathBuf::from("/etc/tidal/tls"))
    );
    let Command::Status(s) = parse(&["status", "--insecure"]).command else {
        panic!()
    };
    assert_eq!(s.client.tls.insecure, Some(true));
    let Command::Status(s) = parse(&["status", "--insecure=false", "--tls-dir", "x"]).command
    else {
        panic!()
    };
    assert_eq!(
        s.client.tls.checked().unwrap(),
        Some(std::path::Path::new("x"))
    );
    let Command::Status(s) = parse(&["status", "--insecure", "--tls-dir", "x"]).command else {
        panic!()
    };
    let e = s.client.tls.client_config().unwrap_err().to_string();
    assert_eq!(
        e,
        "both --tls-dir x (or TIDAL_TLS_DIR) and --insecure (or TIDAL_INSECURE) are set: \
         choose TLS or plaintext"
    );
    let Command::Agent(a) = parse(&[
        "agent",
        "--id",
        "a",
        "--dc",
        "d",
        "--task-types",
        "t2i",
        "--tls-dir",
        "/etc/tidal/agent",
        "--insecure",
        "--",
        "true",
    ])
    .command
    else {
        panic!()
    };
    let e = a.run.to_config().unwrap_err().to_string();
    assert!(
        e.starts_with("both --tls-dir /etc/tidal/agent (or TIDAL_TLS_DIR)"),
        "{e}"
    );
    let Command::Agent(a) = parse(&[
        "agent",
        "--id",
        "a",
        "--dc",
        "d",
        "--task-types",
        "t2i",
        "--tls-dir",
        "/etc/tidal/agent",
        "--",
        "true",
    ])
    .command
    else {
        panic!()
    };
    let config = a.run.to_config().unwrap();
    assert_eq!(
        config.tls_dir,
        Some(std::path::PathBuf::from("/etc/tidal/agent"))
    );
    let Command::Agent(a) = parse(&["agent", "list", "--insecure"]).command else {
        panic!()
    };
    let Some(AgentCmd::List(l)) = a.action else {
        panic!()
    };
    assert_eq!(l.client.tls.insecure, Some(true));
}

/// `--insecure` of the server, of `tidal agent` and of the client commands:
/// one shape (`--insecure[=BOOL]`) and one reading of its values, which clap
/// applies to TIDAL_INSECURE too.
#[test]
fn insecure_has_one_shape_for_server_agent_and_client() {
    use clap::CommandFactory;
    if std::env::var_os("TIDAL_TLS_DIR").is_some() || std::env::var_os("TIDAL_INSECURE").is_some() {
        return;
    }
    let insecure =
        |args: Vec<String>| match parse(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .command
        {
            Command::Server(s) => s.settings.insecure,
            Command::Status(s) => s.client.tls.insecure,
            Command::Agent(a) => match a.action {
                Some(AgentCmd::List(l)) => l.client.tls.insecure,
                None => a.run.tls.insecure,
                _ => panic!(),
            },
            _ => panic!(),
        };
    let agent = ["agent", "--id", "a", "--dc", "d", "--task-types", "t2i"];
    let forms: [(&[&str], &[&str]); 4] = [
        (&["server"], &[]),
        (&agent, &["--", "true"]),
        (&["status"], &[]),
        (&["agent", "list"], &[]),
    ];
    let values = [
        ("true", true),
        ("false", false),
        ("1", true),
        ("0", false),
        ("yes", true),
        ("no", false),
        ("on", true),
        ("off", false),
    ];
    for (head, tail) in forms {
        let with = |flag: Option<&str>| -> Vec<String> {
            let mut v: Vec<&str> = head.to_vec();
            v.extend(flag);
            v.extend_from_slice(tail);
            v.into_iter().map(String::from).collect()
        };
        assert_eq!(insecure(with(None)), None, "{head:?}");
        assert_eq!(insecure(with(Some("--insecure"))), Some(true), "{head:?}");
        for (value, want) in values {
            let flag = format!("--insecure={value}");
            assert_eq!(insecure(with(Some(&flag))), Some(want), "{head:?} {flag}");
        }
        let mut bad = with(Some("--insecure=maybe"));
        bad.insert(0, "tidal".into());
        assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
    }
    // The same attributes wherever the flag appears.
    let cli = Cli::command();
    let sub = |path: &[&str]| {
        let mut c = &cli;
        for name in path {
            c = c.find_subcommand(name).unwrap();
        }
        let arg = c
            .get_arguments()
            .find(|a| a.get_id() == "insecure")
            .unwrap();
        (
            arg.get_env().map(|e| e.to_owned()),
            arg.get_num_args(),
            arg.is_require_equals_set(),
            arg.get_value_names().map(|n| n.to_vec()),
            arg.get_default_values().to_vec(),
        )
    };
    let server = sub(&["server"]);
    assert_eq!(
        server.0.as_deref(),
        Some(std::ffi::OsStr::new("TIDAL_INSECURE"))
    );
    for path in [&["agent"][..], &["status"], &["agent", "list"]] {
        assert_eq!(sub(path), server, "{path:?}");
    }
}

#[test]
fn dev_form_and_global_log_format() {
    let cli = parse(&[
        "dev",
        "--dir",
        "/tmp/x",
        "--base-port",
        "8001",
        "--agents",
        "3",
        "--no-demo",
        "--fresh",
    ]);
    assert_eq!(cli.log_format, super::LogFormat::Text);
    let Command::Dev(d) = cli.command else {
        panic!()
    };
    assert_eq!(
        (d.base_port, d.agents, d.no_demo, d.fresh),
        (8001, 3, true, true)
    );
    let Command::Dev(d) = parse(&["dev"]).command else {
        panic!()
    };
    assert_eq!(d.dir, std::path::PathBuf::from(".tidal-dev"));
    assert_eq!(d.dcs, 1);
    assert!(!d.tls && !d.insecure);
    // --tls is the default and still accepted; --insecure opts out of TLS and tokens.
    let Command::Dev(d) = parse(&["dev", "--tls"]).command else {
        panic!()
    };
    assert!(d.tls && !d.insecure);
    let Command::Dev(d) = parse(&["dev", "--insecure"]).command else {
        panic!()
    };
    assert!(d.insecure);
    assert_eq!(
        usage_error(&["dev", "--tls", "--insecure"]),
        ErrorKind::ArgumentConflict
    );
    let Command::Dev(d) = parse(&["dev", "--dcs", "2"]).command else {
        panic!()
    };
    assert_eq!(d.dcs, 2);
    assert_eq!(
        usage_error(&["dev", "--dcs", "3"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        (d.base_port, d.agents, d.no_demo, d.fresh),
        (7001, 2, false, false)
    );
    assert_eq!(
        parse(&["status", "--log-format", "json"]).log_format,
        super::LogFormat::Json
    );
    assert_eq!(
        parse(&["--log-format", "json", "status"]).log_format,
        super::LogFormat::Json
    );
}

#[test]
fn example_worker_is_hidden_but_parses() {
    assert!(matches!(
        parse(&["example-worker"]).command,
        Command::ExampleWorker(_)
    ));
    let mut help = Vec::new();
    <Cli as clap::CommandFactory>::command()
        .write_help(&mut help)
        .unwrap();
    let help = String::from_utf8(help).unwrap();
    assert!(!help.contains("example-worker"), "{help}");
    assert!(help.contains("dev"), "{help}");
}

#[test]
fn clap_definitions_are_consistent() {
    <Cli as clap::CommandFactory>::command().debug_assert();
}

#[test]
fn help_lists_every_exit_code() {
    let help = <Cli as clap::CommandFactory>::command()
        .render_long_help()
        .to_string();
    // Clap may wrap the text: compare with single spaces.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let codes = &help[help.find("Exit codes:").expect("no exit codes in help")..];
    for (code, what) in [
        (crate::exit::OK, "ok"),
        (crate::exit::ERROR, "error"),
        (2, "usage"),
        (crate::exit::UNAVAILABLE, "unavailable"),
        (crate::exit::TASK_NOT_SUCCEEDED, "`task watch`"),
        (crate::exit::STORAGE_FAILED, "`server`"),
        (crate::exit::AGENT_DISPLACED, "`agent`"),
        (crate::exit::NEEDS_VERSION, "`server`"),
    ] {
        assert!(
            codes.contains(&format!(" {code} {what}")),
            "help lacks exit code {code}: {codes}"
        );
    }
}

/// `cmd` and its subcommands with every argument that reads variable `from`
/// reading `to` instead.
fn renamed(mut cmd: clap::Command, from: &str, to: &'static str) -> clap::Command {
    let ids: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| a.get_env().is_some_and(|v| v == from))
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        cmd = cmd.mut_arg(id, |a| a.env(to));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| renamed(s, from, to));
    }
    cmd
}

#[test]
fn an_empty_tls_variable_counts_as_unset_for_clients_agents_and_servers() {
    use clap::{CommandFactory, FromArgMatches};
    // Variables of this process only, so parses in other tests read the real ones.
    let pid = std::process::id();
    let tls_dir: &'static str = Box::leak(format!("TIDAL_TEST_EMPTY_TLS_DIR_{pid}").into());
    let insecure: &'static str = Box::leak(format!("TIDAL_TEST_EMPTY_INSECURE_{pid}").into());
    std::env::set_var(tls_dir, "");
    std::env::set_var(insecure, "");
    let cmd = || {
        renamed(
            renamed(Cli::command(), "TIDAL_TLS_DIR", tls_dir),
            "TIDAL_INSECURE",
            insecure,
        )
    };
    let commands: [&[&str]; 4] = [
        &["tidal", "status"],
        &["tidal", "task", "list"],
        &[
            "tidal",
            "agent",
            "--id",
            "a1",
            "--dc",
            "dc1",
            "--task-types",
            "t2i",
            "--",
            "true",
        ],
        &[
            "tidal",
            "server",
            "--id",
            "1",
            "--dc",
            "dc1",
            "--listen",
            "127.0.0.1:7001",
            "--data",
            "d",
        ],
    ];
    for tls_var in [tls_dir, insecure] {
        let only = if tls_var == tls_dir {
            insecure
        } else {
            tls_dir
        };
        // Each variable alone: clap by itself refuses its empty value.
        let one = || renamed(cmd(), only, "TIDAL_TEST_NEVER_SET");
        for args in commands {
            let e = one().try_get_matches_from(args).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidValue | ErrorKind::ValueValidation
                ),
                "{args:?}: {e}"
            );
        }
    }
    for args in commands {
        let mut matches = super::unset_empty_variables(cmd())
            .try_get_matches_from(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let mut deepest = &matches;
        while let Some((_, sub)) = deepest.subcommand() {
            deepest = sub;
        }
        for id in ["tls_dir", "insecure"] {
            let raw = deepest
                .try_get_raw(id)
                .expect("the command has the argument");
            assert!(raw.is_none(), "{args:?}: {id} is set");
        }
        Cli::from_arg_matches_mut(&mut matches).unwrap();
    }
}

#[test]
fn task_submit_lifecycle_flags() {
    let cli = parse(&[
        "task",
        "submit",
        "--type",
        "train",
        "--deadline-ms",
        "60000",
        "--on-deadline",
        "fail",
        "--max-run-ms",
        "5000",
        "--retry-backoff-ms",
        "200,3000",
        "--preemptible",
        "false",
        "--suspendable",
        "--preempt-notice",
        "file",
        "--preempt-grace-ms",
        "2500",
    ]);
    let Command::Task(TaskCmd::Submit(s)) = cli.command else {
        panic!()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let spec = &s.specs().unwrap()[0];
    // Relative on the command line, absolute on the wire.
    assert!(
        spec.deadline_ms >= now + 59_000 && spec.deadline_ms <= now + 61_000,
        "{} vs {now}",
        spec.deadline_ms
    );
    assert_eq!(spec.on_deadline, v1::OnDeadline::Fail as i32);
    assert_eq!(spec.max_run_ms, 5000);
    assert_eq!(
        (spec.retry_backoff_base_ms, spec.retry_backoff_max_ms),
        (200, 3000)
    );
    assert_eq!(spec.preemptible, Some(false));
    assert!(spec.suspendable);
    assert_eq!(spec.preempt_notice, v1::PreemptNotice::File as i32);
    assert_eq!(spec.preempt_grace_ms, 2500);

    // Left out: the defaults (nothing set on the wire).
    let cli = parse(&[
        "task",
        "submit",
        "--type",
        "t2i",
        "--retry-backoff-ms",
        "200",
    ]);
    let Command::Task(TaskCmd::Submit(s)) = cli.command else {
        panic!()
    };
    let spec = &s.specs().unwrap()[0];
    assert_eq!(
        (spec.deadline_ms, spec.max_run_ms, spec.preemptible),
        (0, 0, None)
    );
    assert_eq!(
        (spec.retry_backoff_base_ms, spec.retry_backoff_max_ms),
        (200, 0)
    );

    for bad in [
        &["--on-deadline", "never"][..],
        &["--on-deadline", "fail"],
        &["--retry-backoff-ms", "500,100"],
        &["--retry-backoff-ms", "0"],
        &["--retry-backoff-ms", "fast"],
        &["--max-run-ms", "0"],
        &["--preempt-grace-ms", "600001"],
        &["--preempt-grace-ms", "0"],
        &["--preemptible", "maybe"],
        &["--preempt-notice", "email"],
    ] {
        let mut args = vec!["task", "submit", "--type", "t2i"];
        args.extend_from_slice(bad);
        assert!(
            Cli::try_parse_from(std::iter::once("tidal").chain(args.iter().copied())).is_err(),
            "{bad:?} parsed"
        );
    }
}

#[test]
fn task_list_dead_replay_and_queue_headroom() {
    let cli = parse(&["task", "list", "--dead", "--queue", "q"]);
    let Command::Task(TaskCmd::List(l)) = cli.command else {
        panic!()
    };
    assert!(l.dead);
    let cli = parse(&["task", "replay", "t1", "t2"]);
    let Command::Task(TaskCmd::Replay(r)) = cli.command else {
        panic!()
    };
    assert_eq!(r.ids, ["t1", "t2"]);
    let cli = parse(&["task", "replay", "--dead", "--queue", "q", "--since", "2h"]);
    let Command::Task(TaskCmd::Replay(r)) = cli.command else {
        panic!()
    };
    assert_eq!(
        (r.dead, r.queue.as_deref(), r.since),
        (true, Some("q"), Some(7_200_000))
    );
    let cli = parse(&[
        "task", "replay", "--dead", "--queue", "q", "--since", "1500",
    ]);
    let Command::Task(TaskCmd::Replay(r)) = cli.command else {
        panic!()
    };
    assert_eq!(r.since, Some(1500));
    for bad in [
        &["task", "replay"][..],
        &["task", "replay", "t1", "--dead", "--queue", "q"],
        &["task", "replay", "--dead"],
        &["task", "replay", "--queue", "q"],
        &[
            "task", "replay", "--dead", "--queue", "q", "--since", "soon",
        ],
        &["queue", "headroom", "offline", "--slots", "1"],
    ] {
        assert!(
            Cli::try_parse_from(std::iter::once("tidal").chain(bad.iter().copied())).is_err(),
            "{bad:?} parsed"
        );
    }
    let cli = parse(&["queue", "headroom", "online", "--slots", "4", "--gpus", "2"]);
    let Command::Queue(QueueCmd::Headroom(h)) = cli.command else {
        panic!()
    };
    assert_eq!((h.slots, h.gpus), (4, 2));
}

#[test]
fn task_submit_placement_flags() {
    let Command::Task(TaskCmd::Submit(s)) = parse(&[
        "task",
        "submit",
        "--type",
        "t2i",
        "--constraint",
        "zone=a",
        "--constraint",
        "gpu in (A100, H100)",
        "--constraint",
        "!spot",
        "--tag",
        "web,front",
        "--affinity",
        "tag=db",
        "--anti-affinity",
        "tag=web@agent",
        "--max-per",
        "tag=web:2",
        "--scope",
        "zone",
        "--gpu-shape",
        "2xH100|1xA100|1xany:40960",
        "--hash-key",
        "user-42",
    ])
    .command
    else {
        panic!()
    };
    let spec = &s.specs().unwrap()[0];
    assert_eq!(spec.constraints, ["zone=a", "gpu in (A100, H100)", "!spot"]);
    assert_eq!(spec.tags, ["web", "front"]);
    let rule = |kind: v1::TagRuleKind, tag: &str, max: u32, scope: &str| v1::TagRule {
        kind: kind as i32,
        tag: tag.into(),
        max,
        scope: scope.into(),
    };
    assert_eq!(
        spec.tag_rules,
        [
            rule(v1::TagRuleKind::Affinity, "db", 0, "zone"),
            rule(v1::TagRuleKind::AntiAffinity, "web", 0, ""),
            rule(v1::TagRuleKind::MaxPer, "web", 2, "zone"),
        ]
    );
    let shape = |count: u32, model: &str, memory_mb: u64| v1::GpuShape {
        count,
        model: model.into(),
        memory_mb,
    };
    assert_eq!(
        spec.gpu_shapes,
        [
            shape(2, "H100", 0),
            shape(1, "A100", 0),
            shape(1, "", 40960)
        ]
    );
    assert_eq!((spec.gpus, spec.gpu_model.as_str()), (0, ""));
    assert_eq!(spec.hash_key, "user-42");

    let Command::Task(TaskCmd::Submit(s)) = parse(&[
        "task",
        "submit",
        "--type",
        "t2i",
        "--gpus",
        "2",
        "--gpu-model",
        "A100",
    ])
    .command
    else {
        panic!()
    };
    let spec = &s.specs().unwrap()[0];
    assert_eq!((spec.gpus, spec.gpu_model.as_str()), (2, "A100"));
    assert!(spec.gpu_shapes.is_empty() && spec.tag_rules.is_empty());
}

#[test]
fn bad_placement_flags_are_usage_errors() {
    let submit = |extra: &[&str]| {
        let mut v = vec!["task", "submit", "--type", "t2i"];
        v.extend_from_slice(extra);
        usage_error(&v)
    };
    for bad in [
        &["--constraint", "zone in a,b"][..],
        &["--constraint", "=a"],
        &["--affinity", "db"],
        &["--max-per", "tag=web"],
        &["--max-per", "tag=web:0"],
        &["--anti-affinity", "tag=web@"],
        &["--scope", "bad key"],
        &["--gpu-shape", "A100"],
        &["--gpu-shape", "0xA100"],
        &["--gpu-shape", "1xA100|"],
        &["--gpu-shape", "1x"],
    ] {
        assert_eq!(submit(bad), ErrorKind::ValueValidation, "{bad:?}");
    }
    // --gpu-shape replaces --gpus and --gpu-model; a model needs a count.
    assert_eq!(
        submit(&["--gpu-shape", "1xA100", "--gpus", "1"]),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        submit(&["--gpu-model", "A100"]),
        ErrorKind::MissingRequiredArgument
    );
    let nine = ["1xA100"; 9].join("|");
    assert_eq!(submit(&["--gpu-shape", &nine]), ErrorKind::ValueValidation);
    // --scope alone scopes nothing.
    let Command::Task(TaskCmd::Submit(s)) =
        parse(&["task", "submit", "--type", "t2i", "--scope", "zone"]).command
    else {
        panic!()
    };
    let e = format!("{:#}", s.specs().unwrap_err());
    assert!(e.contains("--scope") && e.contains("--max-per"), "{e}");
}

#[test]
fn queue_strategies_and_spread() {
    for (name, want) in [
        ("bin-pack", StrategyArg::BinPack),
        ("consistent-hash", StrategyArg::ConsistentHash),
        ("least-loaded", StrategyArg::LeastLoaded),
    ] {
        let Command::Queue(QueueCmd::Set(s)) =
            parse(&["queue", "set", "q", "--weight", "1", "--strategy", name]).command
        else {
            panic!()
        };
        assert_eq!((s.strategy, s.strategy.as_str()), (want, name));
    }
    let Command::Queue(QueueCmd::Set(s)) = parse(&[
        "queue",
        "set",
        "q",
        "--weight",
        "1",
        "--strategy",
        "spread",
        "--spread",
        "zone",
    ])
    .command
    else {
        panic!()
    };
    assert_eq!(
        (s.strategy, s.spread.as_deref()),
        (StrategyArg::Spread, Some("zone"))
    );
    assert_eq!(
        usage_error(&["queue", "set", "q", "--weight", "1", "--strategy", "spread"]),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        usage_error(&["queue", "set", "q", "--weight", "1", "--spread", "zone"]),
        ErrorKind::MissingRequiredArgument
    );
}

#[test]
fn explain_agent_get_and_warm_models_file_forms() {
    let Command::Task(TaskCmd::Explain(e)) =
        parse(&["task", "explain", "t0000000042", "-o", "json"]).command
    else {
        panic!()
    };
    assert_eq!(e.id, "t0000000042");
    assert_eq!(e.client.output, OutputFormat::Json);
    let Command::Agent(a) = parse(&["agent", "get", "gpu-7"]).command else {
        panic!()
    };
    assert!(matches!(a.action, Some(AgentCmd::Get(g)) if g.id == "gpu-7"));
    let Command::Agent(a) = parse(&[
        "agent",
        "--id",
        "gpu-7",
        "--dc",
        "dc1",
        "--task-types",
        "t2i",
        "--endpoints",
        "127.0.0.1:7001",
        "--warm-models-file",
        "/run/warm",
        "--",
        "true",
    ])
    .command
    else {
        panic!()
    };
    let c = a.run.to_config().unwrap();
    assert_eq!(
        c.warm_models_file.as_deref(),
        Some(std::path::Path::new("/run/warm"))
    );
}
