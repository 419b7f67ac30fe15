//! Unit tests of the access state: tokens, tenants, who submitted what, usage, and the version gate.

use super::*;
use crate::command::{Command, Envelope, Submitted};
use crate::model::{TaskState, TaskStateKind};
use crate::state::tests::{agent, task, Log};
use crate::FORMAT_VERSION_MAX;

fn record(role: Role) -> TokenRecord {
    TokenRecord {
        hash: [7; 32],
        name: format!("{} token", role.as_str()),
        role,
        tenant: None,
        created_ms: 0,
        expires_ms: None,
        created_by: "token:boot".into(),
        revoked_ms: None,
    }
}

fn create(log: &mut Log, id: &str, record: TokenRecord) -> Response {
    log.apply(Command::CreateToken {
        id: id.into(),
        record,
        first_only: false,
    })
}

fn user(name: &str) -> Principal {
    Principal {
        id: format!("token:{name}"),
        role: Role::User,
    }
}

fn submit_as(log: &mut Log, specs: Vec<TaskSpec>, by: Vec<Principal>) -> Response {
    log.apply(Command::SubmitAs {
        specs,
        place: Vec::new(),
        by,
    })
}

fn submitted(r: &Response) -> Vec<Result<Submitted, Rejection>> {
    match r {
        Response::SubmittedPlaced { submitted, .. } => submitted.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_token_is_created_once_under_its_id_at_the_entrys_time() {
    let mut log = Log::new();
    let mut r = record(Role::Admin);
    r.created_ms = 5;
    r.revoked_ms = Some(9);
    assert_eq!(create(&mut log, "00aa", r), Response::Ok);
    let t = log.state.access().token("00aa").unwrap();
    assert_eq!((t.created_ms, t.revoked_ms), (1001, None));
    assert_eq!(log.state.access().tokens_created(), 1);
    assert!(log.state.access().token_active("00aa", 1001));
    assert!(!log.state.access().token_active("00bb", 1001));

    // Ids are never reused; an empty id, an empty tenant or a token
    // that is expired already are refused.
    for (id, rec) in [
        ("00aa", record(Role::User)),
        ("", record(Role::User)),
        (
            "00bb",
            TokenRecord {
                tenant: Some(String::new()),
                ..record(Role::User)
            },
        ),
        (
            "00cc",
            TokenRecord {
                expires_ms: Some(1000),
                ..record(Role::User)
            },
        ),
    ] {
        assert!(
            matches!(
                create(&mut log, id, rec),
                Response::Rejected(Rejection::Invalid(_))
            ),
            "{id}"
        );
    }
    assert_eq!(log.state.access().tokens_created(), 1);
}

#[test]
fn the_first_only_token_is_refused_once_any_token_was_created() {
    let mut log = Log::new();
    let boot = |id: &str| Command::CreateToken {
        id: id.into(),
        record: record(Role::Admin),
        first_only: true,
    };
    assert_eq!(log.apply(boot("b1")), Response::Ok);
    assert!(matches!(
        log.apply(boot("b2")),
        Response::Rejected(Rejection::Invalid(_))
    ));
    // Still refused after every other token is gone (revoked).
    assert_eq!(create(&mut log, "a2", record(Role::Admin)), Response::Ok);
    assert_eq!(
        log.apply(Command::RevokeToken { id: "b1".into() }),
        Response::Ok
    );
    assert!(matches!(
        log.apply(boot("b3")),
        Response::Rejected(Rejection::Invalid(_))
    ));
}

#[test]
fn the_last_active_admin_token_cannot_be_revoked() {
    let mut log = Log::new();
    let revoke = |id: &str| Command::RevokeToken { id: id.into() };
    assert_eq!(create(&mut log, "a1", record(Role::Admin)), Response::Ok);
    assert_eq!(create(&mut log, "u1", record(Role::User)), Response::Ok);
    assert_eq!(
        log.apply(revoke("a1")),
        Response::Rejected(Rejection::LastAdmin("a1".into()))
    );
    // An admin token that expires soon counts while it is active.
    let short = TokenRecord {
        expires_ms: Some(1006),
        ..record(Role::Admin)
    };
    assert_eq!(create(&mut log, "a2", short), Response::Ok);
    assert_eq!(log.apply(revoke("a1")), Response::Ok);
    let a1 = log.state.access().token("a1").unwrap();
    assert_eq!(a1.revoked_ms, Some(1005));
    assert!(!log.state.access().token_active("a1", 1005));
    // At 1006 a2 has expired: revoking it (inactive) is allowed, and
    // revoking twice changes nothing.
    log.apply(Command::Noop);
    assert!(!log.state.access().token_active("a2", 1006));
    assert_eq!(log.apply(revoke("a2")), Response::Ok);
    assert_eq!(log.apply(revoke("a2")), Response::Ok);
    assert_eq!(
        log.state.access().token("a2").unwrap().revoked_ms,
        Some(1007)
    );
    assert_eq!(log.apply(revoke("u1")), Response::Ok);
    assert_eq!(
        log.apply(revoke("nope")),
        Response::Rejected(Rejection::TokenNotFound("nope".into()))
    );
}

#[test]
fn tenants_are_set_replaced_and_removed() {
    let mut log = Log::new();
    let limits = TenantLimits {
        max_pending: Some(10),
        max_running_slots: Some(4),
        max_gpus: None,
        submit_rate: Some(SubmitRate {
            per_s: 100,
            burst: 200,
        }),
        weight: 0,
    };
    let set = |name: &str, limits: TenantLimits| Command::SetTenant {
        name: name.into(),
        limits,
    };
    assert_eq!(log.apply(set("acme", limits.clone())), Response::Ok);
    let got = log.state.access().tenant("acme").unwrap();
    assert_eq!((got.max_pending, got.weight), (Some(10), 1));
    assert_eq!(
        log.apply(set(
            "acme",
            TenantLimits {
                weight: 5,
                ..TenantLimits::default()
            }
        )),
        Response::Ok
    );
    assert_eq!(log.state.access().tenant("acme").unwrap().max_pending, None);
    for bad in [
        set("", TenantLimits::default()),
        set(
            "x",
            TenantLimits {
                weight: MAX_TENANT_WEIGHT + 1,
                ..TenantLimits::default()
            },
        ),
        set(
            "x",
            TenantLimits {
                submit_rate: Some(SubmitRate { per_s: 0, burst: 1 }),
                ..TenantLimits::default()
            },
        ),
    ] {
        assert!(matches!(
            log.apply(bad),
            Response::Rejected(Rejection::Invalid(_))
        ));
    }
    assert_eq!(
        log.apply(Command::RemoveTenant {
            name: "acme".into()
        }),
        Response::Ok
    );
    assert_eq!(
        log.apply(Command::RemoveTenant {
            name: "acme".into()
        }),
        Response::Rejected(Rejection::TenantNotFound("acme".into()))
    );
    assert_eq!(log.state.access().tenants().count(), 0);
}

#[test]
fn submit_as_records_the_first_submitter_until_the_task_expires() {
    let mut log = Log::new();
    let keyed = |k: &str| TaskSpec {
        idempotency_key: Some(k.into()),
        tenant: "acme".into(),
        ..task("t2i")
    };
    // One principal per spec.
    assert!(matches!(
        submit_as(&mut log, vec![keyed("k1")], vec![]),
        Response::Rejected(Rejection::Invalid(_))
    ));
    let r = submit_as(
        &mut log,
        vec![keyed("k1"), task("t2i")],
        vec![user("alice"), user("bob")],
    );
    let ids: Vec<TaskId> = submitted(&r).into_iter().map(|s| s.unwrap().id).collect();
    assert_eq!(
        log.state.access().submitted_by(ids[0]),
        Some(&user("alice"))
    );
    assert_eq!(log.state.access().submitted_by(ids[1]), Some(&user("bob")));
    // The same key again: the task and its submitter stay.
    let r = submit_as(&mut log, vec![keyed("k1")], vec![user("carol")]);
    assert_eq!(
        submitted(&r),
        vec![Ok(Submitted {
            id: ids[0],
            existed: true
        })]
    );
    assert_eq!(
        log.state.access().submitted_by(ids[0]),
        Some(&user("alice"))
    );
    // A plain Submit records nobody.
    let plain = log.submit(task("t2i")).unwrap().id;
    assert_eq!(log.state.access().submitted_by(plain), None);

    // Placed pairs are granted as with SubmitPlaced.
    log.register(agent("a1", 2));
    let r = log.apply(Command::SubmitAs {
        specs: vec![task("t2i")],
        place: vec![(0, "a1".into())],
        by: vec![user("dave")],
    });
    let Response::SubmittedPlaced { granted, .. } = &r else {
        panic!("{r:?}")
    };
    assert_eq!(granted.len(), 1);

    // Expire removes the entry with the task.
    log.apply(Command::Cancel { task: ids[1] });
    let before_ms = 1000 + log.index;
    let r = log.apply(Command::Expire {
        before_ms,
        tasks: vec![ids[1]],
    });
    assert!(
        matches!(&r, Response::Expired { removed, .. } if removed == &vec![ids[1]]),
        "{r:?}"
    );
    assert_eq!(log.state.access().submitted_by(ids[1]), None);
}

#[test]
fn an_agent_id_belongs_to_its_token_while_that_token_is_active() {
    let mut log = Log::new();
    let as_token = |id: &str, token: &str| Command::RegisterAgentAs {
        spec: agent(id, 2),
        token: token.into(),
    };
    assert_eq!(
        log.apply(as_token("a1", "t1")),
        Response::Rejected(Rejection::TokenNotFound("t1".into()))
    );
    assert_eq!(create(&mut log, "admin", record(Role::Admin)), Response::Ok);
    assert_eq!(create(&mut log, "t1", record(Role::Agent)), Response::Ok);
    assert_eq!(create(&mut log, "t2", record(Role::Agent)), Response::Ok);
    assert_eq!(log.apply(as_token("a1", "t1")), Response::Ok);
    assert_eq!(log.state.access().agent_token("a1"), Some(&"t1".into()));
    // Again with the same token: a re-registration.
    assert_eq!(log.apply(as_token("a1", "t1")), Response::Ok);
    assert_eq!(
        log.apply(as_token("a1", "t2")),
        Response::Rejected(Rejection::AgentOwned {
            agent: "a1".into(),
            token: "t1".into()
        })
    );
    // A plain RegisterAgent leaves the owner as it is.
    assert_eq!(log.register(agent("a1", 2)), Response::Ok);
    assert_eq!(log.state.access().agent_token("a1"), Some(&"t1".into()));
    // Once t1 is revoked, t1 itself may not register, and t2 may take a1.
    assert_eq!(
        log.apply(Command::RevokeToken { id: "t1".into() }),
        Response::Ok
    );
    assert_eq!(
        log.apply(as_token("a1", "t1")),
        Response::Rejected(Rejection::TokenInactive("t1".into()))
    );
    assert_eq!(log.apply(as_token("a1", "t2")), Response::Ok);
    assert_eq!(log.state.access().agent_token("a1"), Some(&"t2".into()));
    // Deregistering the agent frees its id.
    assert!(matches!(
        log.apply(Command::DeregisterAgent { agent: "a1".into() }),
        Response::AgentDown { .. }
    ));
    assert_eq!(log.state.access().agent_token("a1"), None);
    // A refused registration records no owner.
    assert!(matches!(
        log.apply(Command::RegisterAgentAs {
            spec: agent("a2", 0),
            token: "t2".into()
        }),
        Response::Rejected(Rejection::Invalid(_))
    ));
    assert_eq!(log.state.access().agent_token("a2"), None);
}

#[test]
fn usage_follows_each_tenants_tasks() {
    let mut log = Log::new();
    log.register(agent("a1", 8));
    let of = |tenant: &str, slots: u32| TaskSpec {
        tenant: tenant.into(),
        slots,
        ..task("t2i")
    };
    let a = log.submit(of("acme", 2)).unwrap().id;
    let b = log.submit(of("acme", 3)).unwrap().id;
    let c = log.submit(of("", 1)).unwrap().id;
    let usage = |log: &Log, t: &str| log.state.access().usage(t);
    assert_eq!(usage(&log, "acme").pending, 2);
    assert_eq!(usage(&log, DEFAULT_TENANT).pending, 1);
    let g = log.assign(a, "a1").unwrap();
    assert_eq!(
        usage(&log, "acme"),
        Usage {
            pending: 1,
            running_slots: 2,
            running_gpus: 0,
            running_gpu_milli: 0,
        }
    );
    log.complete(a, g.token, true).unwrap();
    log.apply(Command::Cancel { task: b });
    assert_eq!(usage(&log, "acme"), Usage::default());
    assert_eq!(log.state.access().usages().count(), 1);
    log.assign(c, "a1").unwrap();
    log.apply(Command::AgentDown { agent: "a1".into() });
    assert_eq!(usage(&log, DEFAULT_TENANT).pending, 1);
    assert_eq!(
        log.state.task(c).unwrap().state.kind(),
        TaskStateKind::Pending
    );
}

#[test]
fn the_new_commands_need_cluster_format_version_3() {
    let commands = [
        Command::CreateToken {
            id: "t".into(),
            record: record(Role::Admin),
            first_only: true,
        },
        Command::RevokeToken { id: "t".into() },
        Command::SetTenant {
            name: "acme".into(),
            limits: TenantLimits::default(),
        },
        Command::RemoveTenant {
            name: "acme".into(),
        },
        Command::SubmitAs {
            specs: vec![task("t2i")],
            place: vec![],
            by: vec![user("u")],
        },
        Command::RegisterAgentAs {
            spec: agent("a1", 1),
            token: "t".into(),
        },
    ];
    const { assert!(FORMAT_VERSION_MAX >= ACCESS_VERSION) };
    let config = bincode::config::standard();
    let mut state = State::new();
    let raise = |v| Envelope::new(0, Command::SetClusterVersion { version: v });
    state
        .apply_envelope(raise(2), 1, FORMAT_VERSION_MAX)
        .unwrap();
    for (i, command) in commands.iter().enumerate() {
        assert_eq!(command.required_version(), 3, "{command:?}");
        // Appended after SetClusterVersion (variant 20): the encodings of
        // the variants before them are unchanged.
        let bytes = bincode::serde::encode_to_vec(command, config).unwrap();
        assert_eq!(usize::from(bytes[0]), 21 + i, "{command:?}");
        // Refused alike on every replica below version 3; a node of
        // version 2 cannot apply the entry at all.
        let env = Envelope::new(5, command.clone());
        assert_eq!(env.version, 3);
        assert_eq!(
            state.apply_envelope(env.clone(), 2, FORMAT_VERSION_MAX),
            Ok(Response::Rejected(Rejection::NeedsClusterVersion {
                needed: 3,
                current: 2
            }))
        );
        assert_eq!(state.apply_envelope(env, 2, 2).unwrap_err().needed, 3);
    }
    state
        .apply_envelope(raise(3), 3, FORMAT_VERSION_MAX)
        .unwrap();
    let env = Envelope::new(5, commands[0].clone());
    assert_eq!(
        state.apply_envelope(env, 4, FORMAT_VERSION_MAX),
        Ok(Response::Ok)
    );
}

#[test]
fn the_digest_covers_access_from_version_3_and_the_state_encoding_never() {
    let config = bincode::config::standard();
    let mut log = Log::new();
    log.submit(task("t2i")).unwrap();
    let plain = log.state.clone();
    assert_eq!(create(&mut log, "a1", record(Role::Admin)), Response::Ok);
    // The state's own encoding leaves the access state out.
    assert_eq!(
        bincode::serde::encode_to_vec(&log.state, config).unwrap(),
        bincode::serde::encode_to_vec(&plain, config).unwrap()
    );
    // Below version 3 the digest is the one of builds before it.
    for v in [1, 2] {
        let (mut a, mut b) = (log.state.clone(), plain.clone());
        a.restore_cluster_version(v);
        b.restore_cluster_version(v);
        assert_eq!(a.digest(), b.digest(), "version {v}");
    }
    let (mut a, mut b) = (log.state.clone(), plain.clone());
    a.restore_cluster_version(3);
    b.restore_cluster_version(3);
    assert_ne!(a.digest(), b.digest());
    // Restored from its parts, a state is equal and has the same digest;
    // usage comes from the tasks, not the access section.
    let bytes = bincode::serde::encode_to_vec(&a, config).unwrap();
    let (mut back, _): (State, _) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(back.access().usage(DEFAULT_TENANT).pending, 1);
    back.restore_cluster_version(3);
    let access = bincode::serde::encode_to_vec(a.access(), config).unwrap();
    let (access, _): (Access, _) = bincode::serde::decode_from_slice(&access, config).unwrap();
    assert_eq!(access.usage(DEFAULT_TENANT), Usage::default());
    back.restore_access(access);
    assert_eq!(back, a);
    assert_eq!(back.digest(), a.digest());
    back.check_invariants().unwrap();
}

#[test]
fn tasks_in_every_state_count_where_they_should() {
    let mut log = Log::new();
    log.register(agent("a1", 4));
    let id = log.submit(task("t2i")).unwrap().id;
    let g = log.assign(id, "a1").unwrap();
    log.apply(Command::Started {
        task: id,
        token: g.token,
    });
    assert!(matches!(
        log.state.task(id).unwrap().state,
        TaskState::Running { .. }
    ));
    assert_eq!(log.state.access().usage(DEFAULT_TENANT).running_slots, 1);
    log.apply(Command::Stopped(vec![(id, g.token)]));
    assert_eq!(log.state.access().usage(DEFAULT_TENANT).pending, 1);
    log.apply(Command::Forward(vec![(id, "dc2".into())]));
    assert_eq!(log.state.access().usage(DEFAULT_TENANT), Usage::default());
}

#[test]
fn an_agent_of_a_tenant_bound_token_is_assigned_only_that_tenants_tasks() {
    let mut log = Log::new();
    let bound = |tenant: Option<&str>| TokenRecord {
        tenant: tenant.map(str::to_string),
        ..record(Role::Agent)
    };
    assert_eq!(create(&mut log, "ta", bound(Some("acme"))), Response::Ok);
    assert_eq!(create(&mut log, "tall", bound(None)), Response::Ok);
    for (id, token) in [("a", "ta"), ("all", "tall")] {
        assert_eq!(
            log.apply(Command::RegisterAgentAs {
                spec: agent(id, 4),
                token: token.into(),
            }),
            Response::Ok
        );
    }
    assert_eq!(log.state.access().agent_tenant("a"), Some("acme"));
    assert_eq!(log.state.access().agent_tenant("all"), None);
    assert_eq!(log.state.access().agent_tenant("unknown"), None);
    let of = |tenant: &str| TaskSpec {
        tenant: tenant.into(),
        ..task("t2i")
    };
    let acme = log.submit(of("acme")).unwrap().id;
    let globex = log.submit(of("globex")).unwrap().id;
    let default = log.submit(of("")).unwrap().id;
    assert!(matches!(
        log.assign(globex, "a"),
        Err(Rejection::Ineligible { reason, .. }) if reason.contains("serves only tenant \"acme\"")
    ));
    assert!(log.assign(default, "a").is_err());
    assert_eq!(log.state.task(globex).unwrap().state, TaskState::Pending);
    let g = log.assign(acme, "a").unwrap();
    assert!(log.assign(globex, "all").is_ok());
    assert!(log.assign(default, "all").is_ok());

    // A plain re-registration keeps the binding; so does a revoked token.
    assert_eq!(log.register(agent("a", 4)), Response::Ok);
    assert_eq!(
        log.apply(Command::RevokeToken { id: "ta".into() }),
        Response::Ok
    );
    assert_eq!(log.state.access().agent_tenant("a"), Some("acme"));
    // A regrant re-checks the same predicate: acme's task stays with its agent.
    match log.apply(Command::Regrant {
        agent: "a".into(),
        tasks: vec![(acme, g.token)],
    }) {
        Response::Regranted { granted, .. } => assert_eq!(granted.len(), 1),
        other => panic!("{other:?}"),
    }
}
