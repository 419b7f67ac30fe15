//! cluster/compose and cluster/systemd: every `tidal` command line in the
//! compose file and in the units' ExecStart parses with the binary's own
//! flags (`tidal check-args`, which runs nothing), the servers and agents
//! there use TLS, and the compose set-up script makes the certificates and
//! the bootstrap token once. (Docker itself is not run here.)

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cluster_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster")
}

/// `tidal ARGS...` with no `TIDAL_*` variable of the test's environment.
fn tidal(args: &[String]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidal"));
    c.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TIDAL_") {
            c.env_remove(k);
        }
    }
    c.output().expect("run the tidal binary")
}

/// Asserts that `tidal ARGV...` parses (`tidal check-args -- ARGV...`).
fn assert_parses(what: &str, argv: &[String]) {
    let mut args = vec!["check-args".to_string(), "--".to_string()];
    args.extend_from_slice(argv);
    let o = tidal(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: `tidal {}` does not parse:\n{}",
        argv.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn check_args_refuses_what_the_binary_refuses() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = tidal(&args(&["check-args", "--", "server", "--tls-dri", "/x"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-dri"));
    let o = tidal(&args(&[
        "check-args",
        "--",
        "agent",
        "--id",
        "a",
        "--dc",
        "d",
    ]));
    assert_eq!(o.status.code(), Some(2));
    let o = tidal(&args(&["check-args", "--", "status", "--endpoints", "h:1"]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

/// A service's `entrypoint` and `command` lists.
#[derive(Debug, Default, PartialEq)]
struct Service {
    entrypoint: Option<Vec<String>>,
    command: Option<Vec<String>>,
}

/// The services of the compose file, read as it is written: `  name:`
/// under `services:`, and `command:`/`entrypoint:` either as a one-line
/// list of double-quoted strings (JSON) or as a block of `- item` lines.
fn compose_services(text: &str) -> BTreeMap<String, Service> {
    let mut out: BTreeMap<String, Service> = BTreeMap::new();
    let mut in_services = false;
    let mut service: Option<String> = None;
    let mut list: Option<(String, Vec<String>)> = None;
    let flush = |out: &mut BTreeMap<String, Service>,
                 service: &Option<String>,
                 list: &mut Option<(String, Vec<String>)>| {
        if let (Some(name), Some((key, items))) = (service, list.take()) {
            let s = out.entry(name.clone()).or_default();
            match key.as_str() {
                "command" => s.command = Some(items),
                _ => s.entrypoint = Some(items),
            }
        }
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let (Some((_, items)), Some(item)) = (list.as_mut(), trimmed.strip_prefix("- ")) {
            if indent >= 6 {
                items.push(unquote(item));
                continue;
            }
        }
        flush(&mut out, &service, &mut list);
        if indent == 0 {
            in_services = trimmed == "services:";
            service = None;
        } else if in_services && indent == 2 && trimmed.ends_with(':') {
            let name = trimmed.trim_end_matches(':').to_string();
            out.entry(name.clone()).or_default();
            service = Some(name);
        } else if in_services && indent == 4 {
            for key in ["command", "entrypoint"] {
                let Some(rest) = trimmed.strip_prefix(&format!("{key}:")) else {
                    continue;
                };
                let rest = rest.trim();
                if rest.is_empty() {
                    list = Some((key.to_string(), Vec::new()));
                } else {
                    let items: Vec<String> =
                        serde_json::from_str(rest).unwrap_or_else(|e| panic!("{key}: {rest}: {e}"));
                    list = Some((key.to_string(), items));
                    flush(&mut out, &service, &mut list);
                }
            }
        }
    }
    flush(&mut out, &service, &mut list);
    out
}

fn unquote(item: &str) -> String {
    let item = item.trim();
    match item.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
        Some(inner) => inner.to_string(),
        None => item.to_string(),
    }
}

fn compose_file() -> PathBuf {
    cluster_dir().join("compose/docker-compose.yml")
}

/// The services as a YAML parser reads them, when python3 has PyYAML.
fn compose_by_pyyaml() -> Option<serde_json::Value> {
    let script = "import json, sys, yaml\n\
        d = yaml.safe_load(open(sys.argv[1]))\n\
        print(json.dumps({n: {'entrypoint': s.get('entrypoint'), 'command': s.get('command')} \
        for n, s in d['services'].items()}))";
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(compose_file())
        .output()
        .ok()?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        // No PyYAML: nothing to compare with. Any other failure is the file's.
        assert!(err.contains("No module named 'yaml'"), "PyYAML: {err}");
        return None;
    }
    Some(serde_json::from_slice(&o.stdout).expect("json"))
}

/// The `tidal` command line a service runs, without the binary's name: its
/// command after `tidal`, or its command after an entrypoint that ends in
/// `tidal`; None for the set-up script's steps.
fn tidal_argv(s: &Service) -> Option<Vec<String>> {
    let command = s.command.clone().unwrap_or_default();
    match &s.entrypoint {
        Some(e) if e.last().is_some_and(|l| l == "tidal") => Some(command),
        _ if command.first().is_some_and(|c| c == "tidal") => Some(command[1..].to_vec()),
        _ => None,
    }
}

fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let at = argv.iter().position(|a| a == name)?;
    argv.get(at + 1).map(String::as_str)
}

#[test]
fn every_tidal_command_line_of_the_compose_file_parses() {
    let text = std::fs::read_to_string(compose_file()).expect("read the compose file");
    let services = compose_services(&text);
    if let Some(yaml) = compose_by_pyyaml() {
        let ours: serde_json::Value = services
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    serde_json::json!({"entrypoint": s.entrypoint, "command": s.command}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        assert_eq!(ours, yaml, "this test reads the file as YAML does");
    }
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    for name in [
        "node1", "node2", "node3", "agent-1", "agent-2", "secrets", "join", "cli",
    ] {
        assert!(names.contains(&name), "no service {name} in {names:?}");
    }
    let mut servers = 0;
    let mut agents = 0;
    for (name, s) in &services {
        let Some(argv) = tidal_argv(s) else {
            // The set-up script's own steps.
            let command = s.command.clone().unwrap_or_default();
            assert_eq!(command[0], "tidal-compose", "{name}");
            assert!(["secrets", "join"].contains(&command[1].as_str()), "{name}");
            continue;
        };
        assert_parses(name, &argv);
        assert!(!argv.iter().any(|a| a.starts_with("--insecure")), "{name}");
        match argv[0].as_str() {
            "server" => {
                servers += 1;
                let id = flag(&argv, "--id").expect("--id");
                assert_eq!(
                    flag(&argv, "--tls-dir"),
                    Some(format!("/tidal/tls/node-{id}").as_str())
                );
                assert_eq!(flag(&argv, "--auth"), Some("tokens"), "{name}");
                assert_eq!(argv.contains(&"--init".to_string()), id == "1", "{name}");
            }
            "agent" => {
                agents += 1;
                let id = flag(&argv, "--id").expect("--id");
                assert_eq!(
                    flag(&argv, "--tls-dir"),
                    Some(format!("/tidal/tls/{id}").as_str())
                );
                let endpoints = flag(&argv, "--endpoints").expect("--endpoints");
                assert!(endpoints.split(',').all(|e| e.starts_with("https://")));
                let entry = s.entrypoint.as_deref().unwrap_or_default();
                assert_eq!(entry, ["tidal-compose", "with-token", "/tidal/agent.token"]);
                // The worker: the binary's demo worker.
                let at = argv.iter().position(|a| a == "--").expect("--");
                assert_eq!(argv[at + 1..], ["tidal", "example-worker"]);
                assert_parses(name, &argv[at + 2..]);
            }
            _ => {}
        }
    }
    assert_eq!((servers, agents), (3, 2));
}

/// The ExecStart line of a unit (continuation lines joined), split into
/// words, with the specifiers of a started unit filled in.
fn exec_start(unit: &str) -> Vec<String> {
    let mut joined = String::new();
    let mut in_exec = false;
    for line in unit.lines() {
        if let Some(rest) = line.strip_prefix("ExecStart=") {
            in_exec = true;
            joined.push_str(rest);
        } else if in_exec {
            joined.push(' ');
            joined.push_str(line.trim());
        } else {
            continue;
        }
        if joined.ends_with('\\') {
            joined.pop();
        } else {
            break;
        }
    }
    assert!(!joined.is_empty(), "no ExecStart");
    joined
        .replace("%d", "/run/credentials/tidal.service")
        .replace("%i", "node1")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_systemd_units_run_tidal_with_flags_it_has() {
    let dir = cluster_dir().join("systemd");
    let server = exec_start(&std::fs::read_to_string(dir.join("tidal-server@.service")).unwrap());
    assert_eq!(server[0], "/usr/local/bin/tidal");
    assert_eq!(server[1], "server");
    assert_parses("tidal-server@.service", &server[1..]);
    assert_eq!(
        flag(&server, "--tls-dir"),
        Some("/run/credentials/tidal.service")
    );

    let agent = exec_start(&std::fs::read_to_string(dir.join("tidal-agent.service")).unwrap());
    assert_eq!(agent[0], "/usr/local/bin/tidal");
    assert_eq!(agent[1], "agent");
    assert_parses("tidal-agent.service", &agent[1..]);
    assert!(flag(&agent, "--endpoints")
        .expect("--endpoints")
        .split(',')
        .all(|e| e.starts_with("https://")));
    // The token comes from the environment file, not the command line.
    assert!(!agent.iter().any(|a| a.starts_with("--token")));
}

#[test]
fn the_compose_set_up_makes_certificates_and_the_token_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tidal");
    let ca = tmp.path().join("tidal-ca");
    let setup = || {
        let o = Command::new("bash")
            .arg(cluster_dir().join("compose/setup.sh"))
            .arg("secrets")
            .env("DIR", &dir)
            .env("CA_DIR", &ca)
            .env("TIDAL", env!("CARGO_BIN_EXE_tidal"))
            .env_remove("RUST_LOG")
            .output()
            .expect("run setup.sh");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let first = setup();
    assert!(first.contains("created a CA"), "{first}");
    let token = std::fs::read_to_string(dir.join("admin.token")).expect("admin.token");
    let mode = std::fs::metadata(dir.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "admin.token is {mode:o}");
    assert!(!ca.join("ca.key").starts_with(&dir));
    assert!(!dir.join("tls/ca.key").exists());
    for (sub, expect) in [
        ("node-1", "node1"),
        ("node-3", "node3"),
        ("agent-2", "agent-2"),
        ("client", "admin"),
    ] {
        let o = tidal(&[
            "cert".into(),
            "show".into(),
            dir.join("tls").join(sub).display().to_string(),
        ]);
        let shown = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{sub}: {shown}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(shown.contains(expect), "{sub}: {shown}");
    }
    let cert = std::fs::read(dir.join("tls/node-1/cert.pem")).unwrap();

    // Again: nothing new.
    let second = setup();
    assert!(second.trim().is_empty(), "{second}");
    assert_eq!(
        std::fs::read_to_string(dir.join("admin.token")).unwrap(),
        token
    );
    assert_eq!(
        std::fs::read(dir.join("tls/node-1/cert.pem")).unwrap(),
        cert
    );
}

/// A service's `tidal` command line as it runs here: the compose file's
/// addresses and directories moved onto this test's ports and temporary
/// directories (`nodeN:7001` and this node's `0.0.0.0:7001` to the Nth
/// port on 127.0.0.1, `/tidal` and `/var/lib/tidal` under `tmp`), and the
/// worker's `tidal` the binary under test.
fn localised(argv: &[String], own: usize, addrs: &[String], tmp: &Path) -> Vec<String> {
    argv.iter()
        .map(|a| {
            let mut a = a.replace("0.0.0.0:7001", &addrs[own]);
            for (k, addr) in addrs.iter().enumerate() {
                a = a.replace(&format!("node{}:7001", k + 1), addr);
            }
            for dir in ["/var/lib/tidal", "/tidal"] {
                if let Some(rest) = a.strip_prefix(dir) {
                    a = format!("{}{rest}", tmp.join(&dir[1..]).display());
                }
            }
            if a == "tidal" {
                a = env!("CARGO_BIN_EXE_tidal").to_string();
            }
            a
        })
        .collect()
}

/// `tidal ARGS...` as the compose file's `cli` service runs it: the admin
/// token and the client certificate of `dir`, at `endpoints`.
fn admin(dir: &Path, endpoints: &str, args: &[&str]) -> Output {
    let token = std::fs::read_to_string(dir.join("admin.token")).expect("admin.token");
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["--endpoints".into(), endpoints.into()]);
    args.extend([
        "--tls-dir".into(),
        dir.join("tls/client").display().to_string(),
    ]);
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidal"));
    c.args(&args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TIDAL_") {
            c.env_remove(k);
        }
    }
    c.env("TIDAL_TOKEN", token.trim())
        .output()
        .expect("run tidal")
}

/// Polls `f` until it returns Some, for at most `secs` seconds.
fn poll<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn the_compose_services_run_a_dc_whose_agents_run_a_task() {
    use tidal_testkit::proc::Proc;
    use tidal_testkit::Port;

    let text = std::fs::read_to_string(compose_file()).expect("read the compose file");
    let services = compose_services(&text);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tidal");
    std::fs::create_dir_all(tmp.path().join("var/lib/tidal")).unwrap();
    let setup = cluster_dir().join("compose/setup.sh");
    // Held while the test runs: no other test takes them.
    let ports: Vec<Port> = (0..3).map(|_| Port::local().unwrap()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| p.addr().to_string()).collect();
    let endpoints: Vec<String> = addrs.iter().map(|a| format!("https://{a}")).collect();
    let endpoints = endpoints.join(",");
    let script = |step: &str| {
        Command::new("bash")
            .arg(&setup)
            .arg(step)
            .env("DIR", &dir)
            .env("CA_DIR", tmp.path().join("tidal-ca"))
            .env("TIDAL", env!("CARGO_BIN_EXE_tidal"))
            .env("ADDRS", addrs.join(","))
            .env_remove("RUST_LOG")
            .output()
            .expect("run setup.sh")
    };
    let o = script("secrets");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut procs: Vec<Proc> = Vec::new();
    let logs = |procs: &[Proc]| {
        procs
            .iter()
            .map(|p| format!("--- {}\n{}", p.name, p.log_tail(30)))
            .collect::<String>()
    };
    let spawn = |name: &str, exe: &Path, args: Vec<String>| {
        let log = tmp.path().join(format!("{name}.log"));
        let mut p = Proc::new(name, exe, args, &log).env_remove("RUST_LOG");
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("TIDAL_") {
                p = p.env_remove(&k);
            }
        }
        p.start().expect("start");
        p
    };
    for (n, name) in ["node1", "node2", "node3"].into_iter().enumerate() {
        let argv = tidal_argv(&services[name]).expect("a tidal command");
        let argv = localised(&argv, n, &addrs, tmp.path());
        procs.push(spawn(name, Path::new(env!("CARGO_BIN_EXE_tidal")), argv));
    }
    let o = script("join");
    assert!(
        o.status.success(),
        "join: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        logs(&procs)
    );
    let members = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(members.matches("voter").count(), 3, "{members}");
    let mode = std::fs::metadata(dir.join("agent.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "agent.token is {mode:o}");

    for name in ["agent-1", "agent-2"] {
        let s = &services[name];
        let mut argv = s.entrypoint.clone().expect("an entrypoint");
        argv.extend(s.command.clone().expect("a command"));
        // tidal-compose with-token FILE tidal agent ... -- tidal example-worker
        assert_eq!(argv[0], "tidal-compose");
        let mut args = vec![setup.display().to_string()];
        args.extend(localised(&argv[1..], 0, &addrs, tmp.path()));
        procs.push(spawn(name, Path::new("bash"), args));
    }
    let listed = poll(60, || {
        let o = admin(&dir, &endpoints, &["agent", "list", "-o", "json"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        (out.contains("agent-1") && out.contains("agent-2")).then_some(out)
    });
    assert!(
        listed.is_some(),
        "the agents did not register\n{}",
        logs(&procs)
    );

    let o = admin(
        &dir,
        &endpoints,
        &[
            "task",
            "submit",
            "--type",
            "sr",
            "--models",
            "esrgan",
            "--payload",
            "a red fox",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let task = poll(60, || {
        let o = admin(&dir, &endpoints, &["task", "get", &id, "-o", "json"]);
        let t: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        ["succeeded", "failed", "cancelled", "dead"]
            .contains(&t["state"].as_str()?)
            .then_some(t)
    });
    let task = task.unwrap_or_else(|| panic!("task {id} did not end\n{}", logs(&procs)));
    assert_eq!(task["state"], "succeeded", "{task}\n{}", logs(&procs));
    // Only agent-2 runs sr (esrgan).
    assert_eq!(task["agent"], "agent-2", "{task}");
    drop(procs);
    drop(ports);
}
