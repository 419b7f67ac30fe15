//! Unit tests of `config.rs`.

use super::*;

fn good() -> AgentConfig {
    AgentConfig {
        id: "a1".into(),
        endpoints: vec!["127.0.0.1:7000".into()],
        command: vec!["sh".into(), "-c".into(), "cat".into()],
        ..AgentConfig::default()
    }
}

#[test]
fn validates() {
    assert_eq!(good().validate(), Ok(()));
    assert_eq!(
        AgentConfig {
            id: " ".into(),
            ..good()
        }
        .validate(),
        Err(ConfigError::MissingId)
    );
    assert_eq!(
        AgentConfig {
            command: vec![],
            ..good()
        }
        .validate(),
        Err(ConfigError::MissingCommand)
    );
    assert_eq!(
        AgentConfig {
            endpoints: vec![],
            ..good()
        }
        .validate(),
        Err(ConfigError::MissingEndpoints)
    );
    assert!(matches!(
        AgentConfig {
            endpoints: vec!["nope".into()],
            ..good()
        }
        .validate(),
        Err(ConfigError::BadEndpoint(_))
    ));
    assert_eq!(
        AgentConfig { slots: 0, ..good() }.validate(),
        Err(ConfigError::NoSlots)
    );
}

#[test]
fn plaintext_to_a_server_off_this_machine_needs_insecure() {
    let with = |endpoints: &[&str], tls_dir: Option<&str>, insecure: bool| AgentConfig {
        endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        tls_dir: tls_dir.map(Into::into),
        insecure,
        ..good()
    };
    let remote = ["10.0.0.1:7001", "10.0.0.2:7001"];
    let cases = [
        (
            with(&["127.0.0.1:7001", "localhost:7002"], None, false),
            None,
        ),
        (with(&["[::1]:7001"], None, false), None),
        (with(&remote, None, false), Some("10.0.0.1:7001")),
        (
            with(&["127.0.0.1:7001", "gpu-host:7001"], None, false),
            Some("gpu-host:7001"),
        ),
        (with(&remote, Some("/etc/tidal/tls"), false), None),
        (with(&remote, None, true), None),
    ];
    for (config, refused) in cases {
        let want = match refused {
            None => Ok(()),
            Some(e) => Err(ConfigError::PlaintextRefused(tidal_tls::PlaintextRefused {
                endpoint: e.into(),
            })),
        };
        assert_eq!(config.validate(), want, "{:?}", config.endpoints);
    }
    let e = with(&remote, None, false)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("10.0.0.1:7001") && e.contains("--tls-dir DIR") && e.contains("--insecure"),
        "{e}"
    );
}

#[test]
fn lease_ttl_is_shorter_than_the_servers() {
    let server = Duration::from_secs(10);
    assert_eq!(good().lease_ttl(server), Ok(Duration::from_secs(6)));
    let c = AgentConfig {
        ttl: Some(Duration::from_secs(3)),
        ..good()
    };
    assert_eq!(c.lease_ttl(server), Ok(Duration::from_secs(3)));
    let c = AgentConfig {
        ttl: Some(server),
        ..good()
    };
    let e = c.lease_ttl(server).unwrap_err();
    assert!(
        e.to_string()
            .contains("must be shorter than the server's lease ttl"),
        "{e}"
    );
}

#[test]
fn tls_needs_an_agent_certificate_of_its_dc() {
    use tidal_client::tidal_tls::issue::{issue, new_ca, Request, Validity};
    use tidal_client::tidal_tls::{CertIdentity, Role};
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    new_ca(&ca, "test CA", Validity::days(30)).unwrap();
    let dir = |role: Role, dc: Option<&str>, name: &str| {
        let out = tmp
            .path()
            .join(format!("{role}-{}-{name}", dc.unwrap_or("any")));
        let req = Request {
            identity: CertIdentity::new(role, dc, name).unwrap(),
            hosts: Vec::new(),
            validity: Validity::days(30),
        };
        issue(&ca, &req, &out).unwrap();
        out
    };
    let with = |tls_dir: Option<std::path::PathBuf>| AgentConfig {
        dc: "dc1".into(),
        tls_dir,
        ..good()
    };
    assert!(with(None).tls().unwrap().is_none());
    assert!(with(Some(dir(Role::Agent, Some("dc1"), "gpu-1")))
        .tls()
        .unwrap()
        .is_some());
    for (other, says) in [
        (
            dir(Role::Agent, Some("dc2"), "gpu-1"),
            "agent 'gpu-1' of dc 'dc2'",
        ),
        (dir(Role::Client, None, "alice"), "client 'alice' of any dc"),
        (
            dir(Role::Server, Some("dc1"), "1"),
            "server '1' of dc 'dc1'",
        ),
    ] {
        let e = format!("{:#}", with(Some(other.clone())).tls().unwrap_err());
        assert!(
            e.contains(&format!("--tls-dir {}", other.display()))
                && e.contains(&format!("names {says}, not an agent of dc 'dc1'"))
                && e.contains("tidal cert issue --role agent --dc dc1"),
            "{e}"
        );
    }
    let e = format!(
        "{:#}",
        with(Some(tmp.path().join("nowhere"))).tls().unwrap_err()
    );
    assert!(e.contains("cannot read") && e.contains("ca.pem"), "{e}");
}

#[test]
fn an_empty_warm_models_file_path_is_refused() {
    assert_eq!(
        AgentConfig {
            warm_models_file: Some(PathBuf::new()),
            ..good()
        }
        .validate(),
        Err(ConfigError::EmptyWarmModelsFile)
    );
    assert_eq!(
        AgentConfig {
            warm_models_file: Some("warm.txt".into()),
            ..good()
        }
        .validate(),
        Ok(())
    );
}
