//! Tests of the server settings: merging the layers, defaults, validation.

use super::*;

fn base() -> RawConfig {
    RawConfig {
        id: Some(1),
        dc: Some("dc-a".into()),
        listen: Some("127.0.0.1:7001".into()),
        data: Some("/tmp/tidal-config-test".into()),
        ..RawConfig::default()
    }
}

fn err(raw: RawConfig) -> String {
    raw.validate().unwrap_err().to_string()
}

#[test]
fn peers_and_forwarding_from_toml() {
    let file: RawConfig = toml::from_str(
        r#"
        [[peers]]
        dc = "dc-b"
        endpoints = ["127.0.0.1:7101", "127.0.0.1:7102"]
        [[peers]]
        dc = "dc-c"
        endpoints = ["127.0.0.1:7201"]
        [forwarding]
        forward_after_ms = 5000
        outbox_limit = 100
        [forwarding.queues.local]
        allow = false
        [forwarding.queues.vip]
        forward_after_ms = 1000
        "#,
    )
    .unwrap();
    let c = base().merge(file).unwrap().validate().unwrap();
    let names: Vec<&str> = c.peers.iter().map(|p| p.dc.as_str()).collect();
    assert_eq!(names, ["dc-b", "dc-c"], "preference order is kept");
    assert_eq!(c.peers[0].endpoints.len(), 2);
    let f = &c.forwarding;
    assert_eq!(f.outbox_limit, 100);
    assert!(!f.policy("local").allow);
    assert_eq!(f.policy("vip").forward_after_ms, 1000);
    assert!(f.policy("vip").allow);
    assert_eq!(f.policy("other").forward_after_ms, 5000);
}

#[test]
fn defaults_without_peers() {
    let c = base().validate().unwrap();
    assert!(c.peers.is_empty());
    assert_eq!(c.forwarding.outbox_limit, 10_000);
    assert_eq!(c.forwarding.policy("default").forward_after_ms, 30_000);
}

#[test]
fn election_timeouts_default_and_are_checked_against_the_heartbeat() {
    let c = base().validate().unwrap();
    assert_eq!(c.election_timeout, (150, 300));
    assert_eq!(c.raft_heartbeat_ms, 50);
    let with = |hb, min, max| RawConfig {
        raft_heartbeat_ms: Some(hb),
        election_timeout_min_ms: Some(min),
        election_timeout_max_ms: Some(max),
        ..base()
    };
    assert!(with(25, 80, 140).validate().is_ok());
    assert!(with(40, 80, 140).validate().is_ok());
    for (hb, min, max) in [(41, 80, 140), (0, 80, 140), (25, 140, 140), (25, 150, 100)] {
        let e = err(with(hb, min, max));
        assert!(e.contains("2 x raft_heartbeat_ms"), "{hb} {min} {max}: {e}");
    }
}

#[test]
fn bad_peers_are_refused_with_a_reason() {
    let with = |p: &str| RawConfig {
        peers: Some(p.split(' ').map(|p| p.parse().unwrap()).collect()),
        ..base()
    };
    assert!(err(with("dc-a=127.0.0.1:7101")).contains("this DC itself"));
    assert!(err(with("dc-b=127.0.0.1:1 dc-b=127.0.0.1:2")).contains("listed twice"));
    assert!(err(with("dc-b=")).contains("no endpoints"));
    assert!(err(with("dc-b=localhost:7101")).contains("not HOST:PORT"));
    assert!(err(with("bad!name=127.0.0.1:1")).contains("peer dc"));
    assert!("dc-b".parse::<RawPeer>().is_err());
    let unknown = toml::from_str::<RawConfig>("[forwarding]\nforward_after = 1\n");
    assert!(unknown.is_err(), "unknown fields are refused");
}

/// A configuration with every setting given, none at its default.
fn everything() -> RawConfig {
    let file: RawConfig = toml::from_str(
        r#"
        [[peers]]
        dc = "dc-b"
        endpoints = ["127.0.0.1:7101", "127.0.0.1:7102"]
        [forwarding]
        forward_after_ms = 5000
        outbox_limit = 100
        [forwarding.queues.local]
        allow = false
        [placement]
        warm_weight = 0.25
        gpu_weights = { H100 = 2.0, A40 = 0.4 }
        "#,
    )
    .unwrap();
    RawConfig {
        advertise: Some("10.0.0.1:7001".into()),
        peer_listen: Some("127.0.0.1:7011".into()),
        peer_advertise: Some("10.0.0.1:7011".into()),
        metrics_listen: Some("127.0.0.1:9101".into()),
        init: Some(true),
        agent_ttl_ms: Some(9_000),
        heartbeat_interval_ms: Some(900),
        retain_finished_ms: Some(60_000),
        election_timeout_min_ms: Some(200),
        election_timeout_max_ms: Some(400),
        raft_heartbeat_ms: Some(60),
        shutdown_timeout_ms: Some(3_000),
        snapshot_every: Some(500),
        keep_log_entries: Some(50),
        max_payload_bytes: Some(4096),
        max_batch: Some(10),
        flush_delay_us: Some(250),
        max_format_version: Some(tidal_core::FORMAT_VERSION_MIN),
        source_ip: Some("127.0.0.2".into()),
        tls_dir: Some("/etc/tidal/tls".into()),
        insecure: Some(true),
        auth: Some(AuthMode::Tokens),
        bootstrap_token_file: Some("/etc/tidal/admin.token".into()),
        ..base().merge(file).unwrap()
    }
}

#[test]
fn every_flag_has_its_variable_and_its_field() {
    use clap::Args;
    let cmd = RawConfig::augment_args(clap::Command::new("server"));
    // Every field of a full configuration, `[forwarding]`'s among them.
    let doc = toml::Table::try_from(everything()).unwrap();
    let tables = ["forwarding", "placement"];
    let mut fields: Vec<String> = doc
        .keys()
        .filter(|k| !tables.contains(&k.as_str()))
        .cloned()
        .collect();
    let toml::Value::Table(fwd) = &doc["forwarding"] else {
        panic!("no [forwarding] table")
    };
    fields.extend(fwd.keys().filter(|k| *k != "queues").cloned());
    let toml::Value::Table(placement) = &doc["placement"] else {
        panic!("no [placement] table")
    };
    fields.extend(placement.keys().filter(|k| *k != "gpu_weights").cloned());
    fields.sort();
    let mut names = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let long = arg.get_long().unwrap_or_else(|| panic!("{id} has no flag"));
        // `--peer` is given once per peer; the field and variable hold the list.
        let expected_long = if id == "peers" {
            "peer".to_string()
        } else {
            id.replace('_', "-")
        };
        assert_eq!(long, expected_long, "the flag of {id}");
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("--{long} has no variable"));
        assert_eq!(
            env.to_str(),
            Some(format!("TIDAL_{}", id.to_uppercase()).as_str())
        );
        // `--restore` acts once on an empty data directory: no file field.
        if id != "restore" {
            names.push(id.to_string());
        }
    }
    names.sort();
    assert_eq!(
        names, fields,
        "flags and TOML fields name the same settings"
    );
    // Each field alone is read back from a file.
    for key in doc.keys() {
        let one: toml::Table = [(key.clone(), doc[key].clone())].into_iter().collect();
        toml::to_string(&one)
            .ok()
            .and_then(|t| toml::from_str::<RawConfig>(&t).ok())
            .unwrap_or_else(|| panic!("field {key} does not read back"));
    }
}

#[test]
fn printed_settings_read_back_to_the_same_configuration() {
    let plaintext = RawConfig {
        tls_dir: None,
        ..everything()
    };
    let tls = RawConfig {
        insecure: Some(false),
        ..everything()
    };
    for raw in [base(), plaintext, tls] {
        let config = raw.validate().unwrap();
        let printed = RawConfig::from_config(&config).to_toml().unwrap();
        let again: RawConfig = toml::from_str(&printed).unwrap();
        assert_eq!(again.validate().unwrap(), config, "{printed}");
    }
}

#[test]
fn the_command_line_overrides_the_file_field_by_field() {
    let file = everything();
    let over = RawConfig {
        dc: Some("dc-z".into()),
        restore: Some("/backup".into()),
        forwarding: RawForwarding {
            outbox_limit: Some(7),
            ..RawForwarding::default()
        },
        peers: Some(vec!["dc-c=127.0.0.1:7201".parse().unwrap()]),
        ..RawConfig::default()
    };
    let merged = file.clone().merge(over).unwrap();
    assert_eq!(merged.dc.as_deref(), Some("dc-z"));
    assert_eq!(merged.restore.as_deref(), Some(Path::new("/backup")));
    assert_eq!(merged.forwarding.outbox_limit, Some(7));
    assert_eq!(merged.forwarding.forward_after_ms, Some(5000));
    assert_eq!(merged.forwarding.queues, file.forwarding.queues);
    let peers: Vec<&str> = merged
        .peers
        .iter()
        .flatten()
        .map(|p| p.dc.as_str())
        .collect();
    assert_eq!(peers, ["dc-c"], "a list is replaced, not merged");
    let untouched = RawConfig {
        dc: file.dc.clone(),
        restore: None,
        forwarding: file.forwarding.clone(),
        peers: file.peers.clone(),
        ..merged
    };
    assert_eq!(untouched, file);
    assert_eq!(file.clone().merge(RawConfig::default()).unwrap(), file);
}

#[test]
fn an_advertised_port_0_is_refused_unless_it_is_the_listen_address() {
    let with = |listen: &str, advertise: &str| RawConfig {
        listen: Some(listen.into()),
        advertise: Some(advertise.into()),
        ..base()
    };
    // Port 0 of --listen: the server advertises the port it binds.
    let c = with("127.0.0.1:0", "127.0.0.1:0").validate().unwrap();
    assert_eq!(c.advertise, "127.0.0.1:0");
    assert!(with("127.0.0.1:0", "127.0.0.1:7001").validate().is_ok());
    // Any other advertised port 0 would be written into the membership.
    for (listen, advertise) in [
        ("127.0.0.1:0", "127.0.0.2:0"),
        ("0.0.0.0:0", "node1.example:0"),
        ("127.0.0.1:7001", "127.0.0.1:0"),
    ] {
        let e = err(with(listen, advertise));
        assert!(e.contains("--advertise") && e.contains("port 0"), "{e}");
    }
}

#[test]
fn the_peer_listener_is_optional_and_advertises_itself_by_default() {
    let c = base().validate().unwrap();
    assert_eq!((c.peer_listen, c.peer_advertise), (None, None));
    let with = |listen: &str, advertise: Option<&str>| RawConfig {
        peer_listen: Some(listen.into()),
        peer_advertise: advertise.map(Into::into),
        ..base()
    };
    let c = with("127.0.0.1:7011", None).validate().unwrap();
    assert_eq!(c.peer_listen, Some("127.0.0.1:7011".parse().unwrap()));
    assert_eq!(c.peer_advertise.as_deref(), Some("127.0.0.1:7011"));
    let c = RawConfig {
        insecure: Some(true),
        ..with("0.0.0.0:7011", Some("node1.example:7011"))
    }
    .validate()
    .unwrap();
    assert_eq!(c.peer_advertise.as_deref(), Some("node1.example:7011"));
    // Port 0: the server advertises the port it binds.
    let c = with("127.0.0.1:0", None).validate().unwrap();
    assert_eq!(c.peer_advertise.as_deref(), Some("127.0.0.1:0"));

    let e = err(RawConfig {
        peer_advertise: Some("127.0.0.1:7011".into()),
        ..base()
    });
    assert!(e.contains("needs --peer-listen"), "{e}");
    let e = err(with("localhost:7011", None));
    assert!(
        e.contains("--peer-listen") && e.contains("numeric host"),
        "{e}"
    );
    let e = err(with("127.0.0.1:7001", None));
    assert!(e.contains("is --listen itself"), "{e}");
    for (listen, advertise) in [("127.0.0.1:0", "127.0.0.2:0"), ("127.0.0.1:7011", "x:0")] {
        let e = err(with(listen, Some(advertise)));
        assert!(
            e.contains("--peer-advertise") && e.contains("port 0"),
            "{e}"
        );
    }
}

#[test]
fn an_advertised_address_with_the_member_separator_is_refused() {
    let e = err(RawConfig {
        advertise: Some("10.0.0.1:7001|10.0.0.1:7101".into()),
        ..base()
    });
    assert!(e.contains("--advertise") && e.contains("'|'"), "{e}");
    let e = err(RawConfig {
        peer_listen: Some("127.0.0.1:7011".into()),
        peer_advertise: Some("10.0.0.1:7011|x:1".into()),
        ..base()
    });
    assert!(e.contains("--peer-advertise") && e.contains("'|'"), "{e}");
}

#[test]
fn the_membership_names_the_peer_address_after_the_client_address() {
    let c = base().validate().unwrap();
    assert_eq!(c.member_addr(), c.advertise);
    let c = RawConfig {
        advertise: Some("10.0.0.1:7001".into()),
        peer_listen: Some("0.0.0.0:7101".into()),
        peer_advertise: Some("10.1.0.1:7101".into()),
        insecure: Some(true),
        ..base()
    }
    .validate()
    .unwrap();
    assert_eq!(c.member_addr(), "10.0.0.1:7001|10.1.0.1:7101");
}

#[test]
fn tls_dir_and_insecure_together_are_refused() {
    let both = RawConfig {
        tls_dir: Some("/etc/tidal/tls".into()),
        insecure: Some(true),
        ..base()
    };
    assert_eq!(
        err(both.clone()),
        "both --tls-dir /etc/tidal/tls (or TIDAL_TLS_DIR) and --insecure (or TIDAL_INSECURE) \
         are set: choose TLS or plaintext"
    );
    // The file's `insecure = true` is overridden by `--insecure=false`.
    let over = RawConfig {
        insecure: Some(false),
        ..RawConfig::default()
    };
    let config = both.merge(over).unwrap().validate().unwrap();
    assert_eq!(
        (config.tls_dir.as_deref(), config.insecure),
        (Some(Path::new("/etc/tidal/tls")), false)
    );
    for insecure in [None, Some(false), Some(true)] {
        let config = RawConfig { insecure, ..base() }.validate().unwrap();
        assert_eq!(config.insecure, insecure == Some(true));
    }
}

#[test]
fn plaintext_is_served_on_loopback_addresses_only_unless_insecure() {
    let with = |listen: &str, peer_listen: Option<&str>, insecure: Option<bool>| RawConfig {
        listen: Some(listen.into()),
        peer_listen: peer_listen.map(Into::into),
        insecure,
        ..base()
    };
    // The local development mode: loopback needs neither flag.
    for (listen, peer) in [
        ("127.0.0.1:7001", None),
        ("127.3.2.1:7001", Some("127.0.0.1:7101")),
        ("[::1]:7001", Some("[::1]:7101")),
        ("[::ffff:127.0.0.1]:7001", None),
    ] {
        for insecure in [None, Some(true)] {
            with(listen, peer, insecure).validate().unwrap();
        }
    }
    for (listen, peer, open) in [
        ("0.0.0.0:7001", None, "0.0.0.0:7001"),
        ("[::]:7001", None, "[::]:7001"),
        ("10.0.0.5:7001", None, "10.0.0.5:7001"),
        ("10.0.0.5:7001", Some("127.0.0.1:7101"), "10.0.0.5:7001"),
        ("127.0.0.1:7001", Some("10.0.0.5:7101"), "10.0.0.5:7101"),
        ("[::ffff:10.0.0.5]:7001", None, "[::ffff:10.0.0.5]:7001"),
    ] {
        for insecure in [None, Some(false)] {
            let e = with(listen, peer, insecure).validate().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "refusing to serve plaintext on {open} (not a loopback address): give \
                     --tls-dir DIR (see `tidal cert`) or --insecure"
                )
            );
            assert!(e.downcast_ref::<Refused>().is_some(), "{e}");
        }
    }
    // --insecure on such an address: with a peer listener of its own only.
    for listen in ["0.0.0.0:7001", "10.0.0.5:7001"] {
        let e = with(listen, None, Some(true)).validate().unwrap_err();
        assert!(e.downcast_ref::<Refused>().is_some(), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "--insecure on {listen} (not a loopback address) needs --peer-listen HOST:PORT: \
                 without TLS the peer plane is checked against the membership only on a \
                 listener of its own (or give --tls-dir DIR)"
            )
        );
        for peer in ["10.0.0.5:7101", "127.0.0.1:7101"] {
            let c = with(listen, Some(peer), Some(true)).validate().unwrap();
            assert!(c.insecure);
        }
    }
    // With TLS any address goes, with or without a peer listener.
    for (listen, peer) in [
        ("0.0.0.0:7001", None),
        ("10.0.0.5:7001", Some("10.0.0.5:7101")),
    ] {
        let c = RawConfig {
            tls_dir: Some("/etc/tidal/tls".into()),
            ..with(listen, peer, None)
        }
        .validate()
        .unwrap();
        assert_eq!(c.tls_dir.as_deref(), Some(Path::new("/etc/tidal/tls")));
    }
}

#[test]
fn plaintext_names_and_dials_loopback_addresses_only_unless_insecure() {
    let with =
        |advertise: Option<&str>, peer_advertise: Option<&str>, peer: Option<&str>| RawConfig {
            advertise: advertise.map(Into::into),
            peer_listen: peer_advertise.map(|_| "127.0.0.1:7101".into()),
            peer_advertise: peer_advertise.map(Into::into),
            peers: peer.map(|p| vec![p.parse().unwrap()]),
            ..base()
        };
    for (advertise, peer_advertise, peer) in [
        (Some("127.0.0.1:7001"), None, None),
        (Some("localhost:7001"), Some("127.0.0.1:7101"), None),
        (None, None, Some("dc-b=127.0.0.1:7201")),
    ] {
        with(advertise, peer_advertise, peer).validate().unwrap();
    }
    for (advertise, peer_advertise, peer, refused) in [
        (
            Some("node1.example:7001"),
            None,
            None,
            "node1.example:7001 (--advertise;",
        ),
        (
            None,
            Some("10.0.0.5:7101"),
            None,
            "10.0.0.5:7101 (--peer-advertise;",
        ),
        (
            None,
            None,
            Some("dc-b=10.0.0.9:7001"),
            "10.0.0.9:7001 (--peer;",
        ),
    ] {
        let raw = with(advertise, peer_advertise, peer);
        let e = raw.clone().validate().unwrap_err();
        assert!(e.downcast_ref::<Refused>().is_some(), "{e}");
        assert!(
            e.to_string().starts_with(&format!(
                "refusing plaintext to {refused} not a loopback address)"
            )),
            "{e}"
        );
        let insecure = RawConfig {
            insecure: Some(true),
            ..raw.clone()
        };
        insecure.validate().unwrap();
        let tls = RawConfig {
            tls_dir: Some("/etc/tidal/tls".into()),
            ..raw
        };
        tls.validate().unwrap();
    }
}

#[test]
fn a_config_file_says_insecure_and_auth_as_the_flags_do() {
    let file: RawConfig = toml::from_str(
        r#"
        id = 1
        dc = "dc-a"
        listen = "10.0.0.5:7001"
        data = "/var/lib/tidal"
        "#,
    )
    .unwrap();
    let e = file.clone().validate().unwrap_err();
    assert!(
        e.to_string()
            .starts_with("refusing to serve plaintext on 10.0.0.5:7001"),
        "{e}"
    );
    let insecure: RawConfig = toml::from_str(
        r#"
        insecure = true
        peer_listen = "10.0.0.5:7101"
        auth = "none"
        "#,
    )
    .unwrap();
    let c = file.clone().merge(insecure).unwrap().validate().unwrap();
    assert!(c.insecure);
    assert_eq!(c.auth, AuthMode::None);
    // --insecure=false on the command line over the file's insecure = true.
    let over = RawConfig {
        insecure: Some(false),
        ..RawConfig::default()
    };
    let insecure: RawConfig =
        toml::from_str("insecure = true\npeer_listen = \"10.0.0.5:7101\"").unwrap();
    let e = file
        .merge(insecure)
        .unwrap()
        .merge(over)
        .unwrap()
        .validate();
    assert!(e.unwrap_err().downcast_ref::<Refused>().is_some());
}

#[test]
fn tokens_are_the_default_and_none_is_kept_when_printed() {
    assert_eq!(base().validate().unwrap().auth, AuthMode::Tokens);
    for auth in [AuthMode::None, AuthMode::Tokens] {
        let c = RawConfig {
            auth: Some(auth),
            ..base()
        }
        .validate()
        .unwrap();
        let printed = RawConfig::from_config(&c).to_toml().unwrap();
        assert!(
            printed.contains(&format!("auth = \"{}\"", auth.as_str())),
            "{printed}"
        );
    }
}

#[test]
fn placement_weights_are_read_in_thousandths_over_the_built_in_ones() {
    let c = base().validate().unwrap();
    assert_eq!(c.placement, PlacementConfig::default());
    assert_eq!(c.placement.warm_weight_milli, 1000);
    let builtin: Vec<(&str, u32)> = c
        .placement
        .gpu_weights_milli
        .iter()
        .map(|(m, w)| (m.as_str(), *w))
        .collect();
    assert_eq!(builtin, [("A100", 1000), ("A40", 500)]);
    let c = RawConfig {
        tls_dir: None,
        ..everything()
    }
    .validate()
    .unwrap();
    assert_eq!(c.placement.warm_weight_milli, 250);
    let set: Vec<(&str, u32)> = c
        .placement
        .gpu_weights_milli
        .iter()
        .map(|(m, w)| (m.as_str(), *w))
        .collect();
    assert_eq!(set, [("A100", 1000), ("A40", 400), ("H100", 2000)]);
    // A table and whole numbers read as well as inline decimals.
    let file: RawConfig =
        toml::from_str("[placement]\nwarm_weight = 2\n[placement.gpu_weights]\nL4 = 0.125\n")
            .unwrap();
    let c = base().merge(file).unwrap().validate().unwrap();
    assert_eq!(c.placement.warm_weight_milli, 2000);
    assert_eq!(c.placement.gpu_weights_milli["L4"], 125);
    // The flag, as clap parses it.
    assert_eq!("0.5".parse::<Weight>(), Ok(Weight(500)));
    assert_eq!(Weight(1500).to_string(), "1.500");
}

#[test]
fn bad_placement_weights_are_refused_with_a_reason() {
    for (text, why) in [
        (
            "warm_weight = 0",
            "warm_weight 0.000 is out of range: use 0.001..=100",
        ),
        ("warm_weight = 100.5", "out of range"),
        (
            "gpu_weights = { A100 = 0.0 }",
            "gpu_weights.A100 0.000 is out of range",
        ),
        ("gpu_weights = { A100 = 101 }", "out of range"),
        ("gpu_weights = { \"A 100\" = 1.0 }", "GPU model"),
    ] {
        let file: RawConfig = toml::from_str(&format!("[placement]\n{text}\n")).unwrap();
        let e = err(base().merge(file).unwrap());
        assert!(e.contains(why), "{text}: {e}");
    }
    for text in [
        "warm_weight = -1.0",
        "warm_weight = 0.0005",
        "warm_weight = \"x\"",
        "gpu_weights = { A100 = 1.2345 }",
        "warm = 1.0",
    ] {
        let read = toml::from_str::<RawConfig>(&format!("[placement]\n{text}\n"));
        assert!(read.is_err(), "{text} is refused");
    }
    assert!("1e400".parse::<Weight>().is_err());
    assert!("abc".parse::<Weight>().is_err());
}
