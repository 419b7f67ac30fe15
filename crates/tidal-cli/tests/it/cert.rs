//! `tidal cert ca | issue | show` run as the binary: files, modes, identities, refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn tidal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidal"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the tidal binary")
}

fn ok(args: &[&str]) -> String {
    let o = tidal(args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{args:?}: {out}{err}");
    out.into_owned()
}

fn fails(args: &[&str], code: i32) -> String {
    let o = tidal(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    err
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_ca_issues_server_agent_and_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &str| tmp.path().join(s).to_string_lossy().into_owned();
    let (ca, node, agent, client) = (p("ca"), p("node-1"), p("gpu-1"), p("alice"));

    let out = ok(&[
        "cert", "ca", "--out", &ca, "--name", "test CA", "--days", "30",
    ]);
    assert!(out.contains("ca.key"), "{out}");
    assert_eq!(mode(&tmp.path().join("ca/ca.key")), 0o600);

    let out = ok(&[
        "cert",
        "issue",
        "--ca",
        &ca,
        "--role",
        "server",
        "--dc",
        "dc1",
        "--name",
        "1",
        "--host",
        "node1.example",
        "--out",
        &node,
    ]);
    assert!(out.contains("server '1' of dc 'dc1', valid until"), "{out}");
    assert_eq!(mode(&tmp.path().join("node-1/key.pem")), 0o600);
    ok(&[
        "cert", "issue", "--ca", &ca, "--role", "agent", "--dc", "dc1", "--name", "gpu-1", "--out",
        &agent,
    ]);
    ok(&[
        "cert", "issue", "--ca", &ca, "--role", "client", "--name", "alice", "--days", "2",
        "--out", &client,
    ]);

    let show = ok(&["cert", "show", &node]);
    for line in [
        "identity:   server '1' of dc 'dc1'",
        "uri:        tidal://server/dc1/1",
        "issuer:     CN=test CA",
        "sans:       URI:tidal://server/dc1/1, DNS:node1.example",
        "usage:      TLS server, TLS client",
        "check:      ok",
    ] {
        assert!(show.contains(line), "{line:?} missing from:\n{show}");
    }
    let show = ok(&["cert", "show", &agent]);
    assert!(show.contains("usage:      TLS client\n"), "{show}");
    let show = ok(&["cert", "show", &client]);
    assert!(
        show.contains("identity:   client 'alice' of any dc"),
        "{show}"
    );
    let show = ok(&["cert", "show", &ca]);
    assert!(
        show.contains("identity:   none (a CA certificate)"),
        "{show}"
    );
    assert!(!show.contains("check:"), "{show}");

    // Another CA's ca.pem in the directory: shown, then the check fails.
    let other = p("other");
    ok(&["cert", "ca", "--out", &other]);
    std::fs::copy(
        tmp.path().join("other/ca.pem"),
        tmp.path().join("gpu-1/ca.pem"),
    )
    .unwrap();
    let o = tidal(&["cert", "show", &agent]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("check:      failed"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cert.pem: is not signed by the CA of ca.pem (its issuer is CN=test CA)"),
        "{err}"
    );
}

#[test]
fn bad_requests_are_refused_and_nothing_is_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &str| tmp.path().join(s).to_string_lossy().into_owned();
    let ca = p("ca");
    ok(&["cert", "ca", "--out", &ca]);
    let key = std::fs::read(tmp.path().join("ca/ca.key")).unwrap();
    let err = fails(&["cert", "ca", "--out", &ca], 1);
    assert!(
        err.contains("ca.pem exists; tidal cert does not overwrite files"),
        "{err}"
    );
    assert_eq!(std::fs::read(tmp.path().join("ca/ca.key")).unwrap(), key);

    let out = p("x");
    for (args, says) in [
        (
            &["--role", "server", "--name", "1"][..],
            "a server certificate needs a DC (--dc)",
        ),
        (
            &["--role", "agent", "--name", "a"],
            "an agent certificate needs a DC (--dc)",
        ),
        (
            &["--role", "server", "--dc", "dc1", "--name", "node1"],
            "its node id (1 or more), not \"node1\"",
        ),
    ] {
        let mut all = vec!["cert", "issue", "--ca", &ca, "--out", &out];
        all.extend_from_slice(args);
        let err = fails(&all, 1);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!tmp.path().join("x").exists());
    fails(
        &[
            "cert", "issue", "--ca", &ca, "--role", "admin", "--name", "a", "--out", &out,
        ],
        2,
    );

    ok(&[
        "cert", "issue", "--ca", &ca, "--role", "client", "--name", "c", "--out", &out,
    ]);
    let err = fails(
        &[
            "cert", "issue", "--ca", &ca, "--role", "client", "--name", "d", "--out", &out,
        ],
        1,
    );
    assert!(
        err.contains("exists; tidal cert does not overwrite files"),
        "{err}"
    );
    let err = fails(
        &[
            "cert",
            "issue",
            "--ca",
            &p("nope"),
            "--role",
            "client",
            "--name",
            "d",
            "--out",
            &p("y"),
        ],
        1,
    );
    assert!(
        err.contains("cannot read") && err.contains("nope/ca.pem"),
        "{err}"
    );
    let err = fails(&["cert", "show", &p("nope")], 1);
    assert!(
        err.contains("cannot read") && err.contains("nope/ca.pem"),
        "{err}"
    );
}
