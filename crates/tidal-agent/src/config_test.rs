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
