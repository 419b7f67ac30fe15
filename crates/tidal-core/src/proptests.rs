//! Property tests: random command sequences keep the invariants, replicas stay equal, plan and apply agree.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;

use crate::access::{tenant_of, Principal, Role, SubmitRate, TenantLimits, TokenRecord};
use crate::command::{ApplyCtx, Command, Completion, Finished, Rejection, Response};
use crate::dispatch::{place_new, plan, DispatchCursor, InFlight};
use crate::forwarding::Verdict;
use crate::lifecycle::{plan_preemption, Headroom, OnDeadline, TaskOptions, MAX_CHECKPOINT_BYTES};
use crate::model::Strategy as QueueStrategy;
use crate::model::{AgentId, AgentSpec, Gpu, Outcome, Priority, TaskId, TaskSpec, TaskState};
use crate::state::State;

const AGENTS: u8 = 4;
const QUEUES: [&str; 3] = ["default", "q1", "q2"];
const TYPES: [&str; 3] = ["t0", "t1", "t2"];
/// "" counts as the default tenant.
const TENANTS: [&str; 3] = ["", "acme", "beta"];
const TOKENS: u8 = 5;

/// How a command picks the token it presents.
#[derive(Clone, Debug)]
enum Tok {
    /// The task's current (or last) token.
    Current,
    /// An older token: current minus this much.
    Older(u8),
    Any(u64),
}

#[derive(Clone, Debug)]
struct Item {
    queue: u8,
    ty: u8,
    slots: u8,
    gpus: u8,
    key: Option<u8>,
    prio: u8,
    max_attempts: u8,
    tenant: u8,
}

#[derive(Clone, Debug)]
enum Op {
    Submit(Vec<Item>),
    /// Submit with placements planned over the agents in the mask, plus
    /// arbitrary (index, agent) pairs, valid or not.
    SubmitPlaced {
        items: Vec<Item>,
        connected: u8,
        extra: Vec<(u8, u8)>,
    },
    Register {
        agent: u8,
        types: u8,
        weight: u8,
    },
    Down(u8),
    Deregister(u8),
    Cancel(u16),
    /// Plan a round over the agents in the mask and apply it as one Assign.
    Plan {
        max: u8,
        connected: u8,
    },
    /// Arbitrary pairs, valid or not.
    Assign(Vec<(u16, u8)>),
    /// Tasks picked among the live (Assigned/Running) ones when `live`.
    Started {
        task: u16,
        live: bool,
        tok: Tok,
    },
    Complete {
        live: bool,
        list: Vec<(u16, Tok, bool)>,
    },
    SetQueue {
        queue: u8,
        weight: u16,
        wrr: bool,
    },
    Noop,
    /// Forward a task to the peer "dc-x".
    Forward(u16),
    /// Ingest, as if from "dc-x", `take` records of our own outbox to it,
    /// starting `skip` records in (duplicates and gaps included).
    Ingest {
        skip: u8,
        take: u8,
    },
    /// Acknowledge the first `take` records of the outbox to "dc-x".
    Ack {
        take: u8,
        accept: bool,
    },
    /// Drain an agent (unknown ones too), with a deadline or none.
    Drain {
        agent: u8,
        deadline: Option<u8>,
    },
    Undrain(u8),
    /// An agent's report that it stopped a task on the leader's order.
    /// Retention: the tasks finished at least `age` entries ago (up to
    /// `take` of them), plus arbitrary ids, finished or not.
    Expire {
        age: u8,
        take: u8,
        extra: Vec<u16>,
    },
    Stop {
        task: u16,
        live: bool,
        tok: Tok,
    },
    /// A token of role `role % 3`, expiring `expires` entries from now.
    CreateToken {
        token: u8,
        role: u8,
        first_only: bool,
        expires: Option<u8>,
    },
    RevokeToken(u8),
    SetTenant {
        tenant: u8,
        max_pending: Option<u8>,
        max_running_slots: Option<u8>,
        max_gpus: Option<u8>,
        weight: u16,
    },
    RemoveTenant(u8),
    /// `SubmitPlaced` as a principal per item.
    SubmitAs {
        items: Vec<Item>,
        connected: u8,
        extra: Vec<(u8, u8)>,
    },
    RegisterAs {
        agent: u8,
        types: u8,
        token: u8,
    },
    /// `SubmitWith`: per item, a deadline `d` entries from now (or none),
    /// whether it fails when missed, and a backoff base of `b` x 500 ms.
    SubmitWith {
        items: Vec<Item>,
        connected: u8,
        opts: Vec<(Option<u8>, bool, u8)>,
    },
    /// Completions that may have timed out.
    Finished {
        live: bool,
        list: Vec<(u16, Tok, bool, bool)>,
    },
    /// Every task in backoff (due or not) and arbitrary ids.
    Wake(Vec<u16>),
    /// Every task past its deadline and arbitrary ids.
    DeadlineMissed(Vec<u16>),
    Replay(Vec<u16>),
    Checkpoint {
        task: u16,
        live: bool,
        tok: Tok,
        big: bool,
    },
    /// A preemption for an online Pending task (any task if none) on an
    /// agent, of the tasks it holds picked by the mask, with tokens.
    Preempt {
        task: u16,
        agent: u8,
        mask: u8,
        tok: Tok,
    },
    /// A preemption naming arbitrary tasks and tokens.
    PreemptAny {
        task: u16,
        agent: u8,
        victims: Vec<(u16, Tok)>,
    },
    /// Every suspended task and arbitrary ids.
    Resume(Vec<u16>),
    SetHeadroom {
        class: u8,
        slots: u8,
        gpus: u8,
    },
    /// The first preemption the planner finds over the agents in the mask
    /// (a no-op if none).
    PlanPreempt {
        connected: u8,
    },
    /// `SubmitWithPlacement` of items with random asks, eagerly placed over
    /// the agents in the mask (`placement.rs`).
    SubmitAsking {
        items: Vec<(Item, placement::AskSel)>,
        connected: u8,
    },
}

#[path = "proptests/placement.rs"]
mod placement;

const PEER: &str = "dc-x";

fn tok() -> impl Strategy<Value = Tok> {
    prop_oneof![
        3 => Just(Tok::Current),
        1 => (1u8..5).prop_map(Tok::Older),
        1 => (0u64..200).prop_map(Tok::Any),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    (
        0u8..3,
        0u8..3,
        0u8..4,
        0u8..3,
        proptest::option::weighted(0.3, 0u8..6),
        0u8..3,
        0u8..4,
        0u8..3,
    )
        .prop_map(
            |(queue, ty, slots, gpus, key, prio, max_attempts, tenant)| Item {
                queue,
                ty,
                slots,
                gpus,
                key,
                prio,
                max_attempts,
                tenant,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => vec(item(), 1..5).prop_map(Op::Submit),
        3 => (vec(item(), 1..5), any::<u8>(), vec((0u8..6, 0..AGENTS + 1), 0..3))
            .prop_map(|(items, connected, extra)| Op::SubmitPlaced { items, connected, extra }),
        3 => (0..AGENTS, 0u8..8, 0u8..4).prop_map(|(agent, types, weight)| Op::Register { agent, types, weight }),
        1 => (0..AGENTS).prop_map(Op::Down),
        1 => (0..AGENTS + 1).prop_map(Op::Deregister),
        1 => any::<u16>().prop_map(Op::Cancel),
        6 => (0u8..8, any::<u8>()).prop_map(|(max, connected)| Op::Plan { max, connected }),
        2 => vec((any::<u16>(), 0..AGENTS + 1), 1..4).prop_map(Op::Assign),
        3 => (any::<u16>(), any::<bool>(), tok()).prop_map(|(task, live, tok)| Op::Started { task, live, tok }),
        4 => (any::<bool>(), vec((any::<u16>(), tok(), any::<bool>()), 1..4))
            .prop_map(|(live, list)| Op::Complete { live, list }),
        1 => (0u8..3, 0u16..1100, any::<bool>()).prop_map(|(queue, weight, wrr)| Op::SetQueue { queue, weight, wrr }),
        1 => Just(Op::Noop),
        2 => any::<u16>().prop_map(Op::Forward),
        2 => (0u8..4, 0u8..6).prop_map(|(skip, take)| Op::Ingest { skip, take }),
        2 => (0u8..6, any::<bool>()).prop_map(|(take, accept)| Op::Ack { take, accept }),
        1 => (0..AGENTS + 1, proptest::option::of(any::<u8>()))
            .prop_map(|(agent, deadline)| Op::Drain { agent, deadline }),
        1 => (0..AGENTS + 1).prop_map(Op::Undrain),
        2 => (any::<u16>(), any::<bool>(), tok()).prop_map(|(task, live, tok)| Op::Stop { task, live, tok }),
        2 => (0u8..20, 0u8..6, vec(any::<u16>(), 0..2))
            .prop_map(|(age, take, extra)| Op::Expire { age, take, extra }),
        2 => (0..TOKENS, 0u8..3, proptest::bool::weighted(0.2), proptest::option::weighted(0.3, 0u8..10))
            .prop_map(|(token, role, first_only, expires)| Op::CreateToken { token, role, first_only, expires }),
        1 => (0..TOKENS).prop_map(Op::RevokeToken),
        1 => set_tenant(),
        1 => (0u8..3).prop_map(Op::RemoveTenant),
        3 => (vec(item(), 1..5), any::<u8>(), vec((0u8..6, 0..AGENTS + 1), 0..3))
            .prop_map(|(items, connected, extra)| Op::SubmitAs { items, connected, extra }),
        2 => (0..AGENTS, 0u8..8, 0..TOKENS).prop_map(|(agent, types, token)| Op::RegisterAs { agent, types, token }),
        2 => (vec(item(), 1..4), any::<u8>(), vec((proptest::option::of(0u8..4), any::<bool>(), 0u8..16), 0..4))
            .prop_map(|(items, connected, opts)| Op::SubmitWith { items, connected, opts }),
        3 => (any::<bool>(), vec((any::<u16>(), tok(), any::<bool>(), any::<bool>()), 1..3))
            .prop_map(|(live, list)| Op::Finished { live, list }),
        2 => vec(any::<u16>(), 0..2).prop_map(Op::Wake),
        1 => vec(any::<u16>(), 0..2).prop_map(Op::DeadlineMissed),
        1 => vec(any::<u16>(), 1..3).prop_map(Op::Replay),
        1 => (any::<u16>(), any::<bool>(), tok(), any::<bool>()).prop_map(|(task, live, tok, big)| Op::Checkpoint { task, live, tok, big }),
        3 => (any::<u16>(), 0..AGENTS, any::<u8>(), tok()).prop_map(|(task, agent, mask, tok)| Op::Preempt { task, agent, mask, tok }),
        1 => (any::<u16>(), 0..AGENTS + 1, vec((any::<u16>(), tok()), 0..3)).prop_map(|(task, agent, victims)| Op::PreemptAny { task, agent, victims }),
        2 => vec(any::<u16>(), 0..2).prop_map(Op::Resume),
        1 => (0u8..3, 0u8..4, 0u8..3).prop_map(|(class, slots, gpus)| Op::SetHeadroom { class, slots, gpus }),
        2 => any::<u8>().prop_map(|connected| Op::PlanPreempt { connected }),
        4 => placement::submit_asking(),
    ]
}

/// Limits small enough to bind, often none.
fn set_tenant() -> impl Strategy<Value = Op> {
    let limit = || proptest::option::weighted(0.6, 0u8..6);
    (0u8..3, limit(), limit(), limit(), 0u16..1100).prop_map(
        |(tenant, max_pending, max_running_slots, max_gpus, weight)| Op::SetTenant {
            tenant,
            max_pending,
            max_running_slots,
            max_gpus,
            weight,
        },
    )
}

/// Preemption under load: agents that run every type, lower-class work
/// (some of it suspendable or opted out) started on them, online work
/// arriving, and preemptions, stops, resumes, ends and losses interleaved.
fn preempt_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..AGENTS, 1u8..4).prop_map(|(agent, weight)| Op::Register { agent, types: 7, weight }),
        4 => (vec(item(), 1..4), any::<u8>(), vec((proptest::option::of(0u8..4), any::<bool>(), 0u8..16), 1..4))
            .prop_map(|(items, connected, opts)| Op::SubmitWith { items, connected, opts }),
        4 => (0u8..8, any::<u8>()).prop_map(|(max, connected)| Op::Plan { max, connected }),
        4 => (any::<u16>(), Just(true), Just(Tok::Current)).prop_map(|(task, live, tok)| Op::Started { task, live, tok }),
        6 => prop_oneof![3 => Just(0xffu8), 1 => any::<u8>()].prop_map(|connected| Op::PlanPreempt { connected }),
        8 => (any::<u16>(), 0..AGENTS, 0u8..0x7f, prop_oneof![6 => Just(Tok::Current), 1 => tok()])
            .prop_map(|(task, agent, mask, tok)| Op::Preempt { task, agent, mask, tok }),
        1 => (any::<u16>(), 0..AGENTS, any::<u8>(), tok()).prop_map(|(task, agent, mask, tok)| Op::Preempt { task, agent, mask, tok }),
        1 => (any::<u16>(), 0..AGENTS + 1, vec((any::<u16>(), tok()), 0..3)).prop_map(|(task, agent, victims)| Op::PreemptAny { task, agent, victims }),
        4 => vec(any::<u16>(), 0..2).prop_map(Op::Resume),
        3 => (any::<u16>(), Just(true), prop_oneof![4 => Just(Tok::Current), 1 => tok()]).prop_map(|(task, live, tok)| Op::Stop { task, live, tok }),
        3 => (Just(true), vec((any::<u16>(), tok(), any::<bool>(), any::<bool>()), 1..3))
            .prop_map(|(live, list)| Op::Finished { live, list }),
        1 => any::<u16>().prop_map(Op::Cancel),
        1 => (0..AGENTS).prop_map(Op::Down),
        1 => (0..AGENTS + 1, proptest::option::of(0u8..3))
            .prop_map(|(agent, deadline)| Op::Drain { agent, deadline }),
        1 => (0..AGENTS + 1).prop_map(Op::Undrain),
        1 => vec(any::<u16>(), 0..2).prop_map(Op::Wake),
    ]
}

/// The commands that move tenants' usage, from 3 tenants, with tenants'
/// limits set often.
fn quota_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => vec(item(), 1..5).prop_map(Op::Submit),
        3 => (vec(item(), 1..5), any::<u8>(), vec((0u8..6, 0..AGENTS + 1), 0..3))
            .prop_map(|(items, connected, extra)| Op::SubmitPlaced { items, connected, extra }),
        3 => (vec(item(), 1..5), any::<u8>(), vec((0u8..6, 0..AGENTS + 1), 0..3))
            .prop_map(|(items, connected, extra)| Op::SubmitAs { items, connected, extra }),
        2 => (0..AGENTS, 0u8..8, 0u8..4).prop_map(|(agent, types, weight)| Op::Register { agent, types, weight }),
        1 => (0..AGENTS).prop_map(Op::Down),
        6 => (0u8..8, any::<u8>()).prop_map(|(max, connected)| Op::Plan { max, connected }),
        3 => vec((any::<u16>(), 0..AGENTS + 1), 1..4).prop_map(Op::Assign),
        2 => (any::<u16>(), any::<bool>(), tok()).prop_map(|(task, live, tok)| Op::Started { task, live, tok }),
        3 => (any::<bool>(), vec((any::<u16>(), tok(), any::<bool>()), 1..4))
            .prop_map(|(live, list)| Op::Complete { live, list }),
        1 => (any::<u16>(), any::<bool>(), tok()).prop_map(|(task, live, tok)| Op::Stop { task, live, tok }),
        1 => any::<u16>().prop_map(Op::Cancel),
        3 => set_tenant(),
        2 => (vec(item(), 1..4), any::<u8>(), vec((proptest::option::of(0u8..4), any::<bool>(), 0u8..16), 0..4))
            .prop_map(|(items, connected, opts)| Op::SubmitWith { items, connected, opts }),
        3 => (any::<bool>(), vec((any::<u16>(), tok(), any::<bool>(), any::<bool>()), 1..3))
            .prop_map(|(live, list)| Op::Finished { live, list }),
        2 => vec(any::<u16>(), 0..2).prop_map(Op::Wake),
        1 => vec(any::<u16>(), 0..2).prop_map(Op::DeadlineMissed),
        1 => vec(any::<u16>(), 1..3).prop_map(Op::Replay),
        1 => (any::<u16>(), any::<bool>(), tok(), any::<bool>()).prop_map(|(task, live, tok, big)| Op::Checkpoint { task, live, tok, big }),
        3 => (any::<u16>(), 0..AGENTS, any::<u8>(), tok()).prop_map(|(task, agent, mask, tok)| Op::Preempt { task, agent, mask, tok }),
        1 => (any::<u16>(), 0..AGENTS + 1, vec((any::<u16>(), tok()), 0..3)).prop_map(|(task, agent, victims)| Op::PreemptAny { task, agent, victims }),
        2 => vec(any::<u16>(), 0..2).prop_map(Op::Resume),
    ]
}

/// What the dispatch order depends on: submits of every class into three
/// queues of random weights, agents that run every type, rounds of random
/// sizes over random agents, completions, failures and wakes, and headroom.
fn class_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => vec(item(), 1..6).prop_map(Op::Submit),
        2 => (vec(item(), 1..5), any::<u8>())
            .prop_map(|(items, connected)| Op::SubmitPlaced { items, connected, extra: Vec::new() }),
        2 => (0..AGENTS, 1u8..4).prop_map(|(agent, weight)| Op::Register { agent, types: 7, weight }),
        6 => (1u8..8, any::<u8>()).prop_map(|(max, connected)| Op::Plan { max, connected }),
        4 => vec((any::<u16>(), Just(Tok::Current), any::<bool>()), 1..4)
            .prop_map(|list| Op::Complete { live: true, list }),
        2 => vec((any::<u16>(), Just(Tok::Current), any::<bool>(), any::<bool>()), 1..3)
            .prop_map(|list| Op::Finished { live: true, list }),
        1 => vec(any::<u16>(), 0..2).prop_map(Op::Wake),
        1 => (0u8..3, 1u16..10, any::<bool>()).prop_map(|(queue, weight, wrr)| Op::SetQueue { queue, weight, wrr }),
        1 => (0u8..3, 0u8..4, 0u8..3).prop_map(|(class, slots, gpus)| Op::SetHeadroom { class, slots, gpus }),
        1 => (0..AGENTS).prop_map(Op::Down),
    ]
}

fn spec_of(it: &Item) -> TaskSpec {
    TaskSpec {
        task_type: TYPES[usize::from(it.ty)].into(),
        queue: if it.queue == 0 {
            String::new()
        } else {
            QUEUES[usize::from(it.queue)].into()
        },
        idempotency_key: it.key.map(|k| format!("k{k}")),
        slots: u32::from(it.slots),
        gpus: u32::from(it.gpus),
        max_attempts: u32::from(it.max_attempts),
        priority: [Priority::Online, Priority::Nearline, Priority::Offline][usize::from(it.prio)],
        tenant: TENANTS[usize::from(it.tenant)].into(),
        ..TaskSpec::default()
    }
}

fn token_id(i: u8) -> String {
    format!("{i:016x}")
}

fn role_of(i: u8) -> Role {
    [Role::Admin, Role::User, Role::Agent][usize::from(i % 3)]
}

fn principal_of(it: &Item) -> Principal {
    Principal {
        id: format!("token:{}", TENANTS[usize::from(it.tenant)]),
        role: Role::User,
    }
}

fn agent_id(i: u8) -> AgentId {
    format!("a{i}")
}

/// An agent's capacity depends only on its index, so a re-registration never
/// shrinks it (a shrink is the one accepted way past invariant 3's bound).
fn agent_spec(i: u8, types: u8, weight: u8) -> AgentSpec {
    let types = if types == 0 { 1 } else { types };
    AgentSpec {
        id: agent_id(i),
        dc: "dc1".into(),
        task_types: (0..3)
            .filter(|b| types & (1 << b) != 0)
            .map(|b| TYPES[b].to_string())
            .collect(),
        slots: 1 + u32::from(i),
        weight: u32::from(weight),
        gpus: (0..i % 3)
            .map(|g| Gpu {
                model: "A40".into(),
                memory_mb: 16_000 * (1 + u64::from(g)),
            })
            .collect(),
        // For placement's constraints (`proptests/placement.rs`).
        labels: [
            (
                "zone".to_string(),
                ["a", "b"][usize::from(i % 2)].to_string(),
            ),
            ("rack".to_string(), format!("r{i}")),
        ]
        .into_iter()
        .chain((i == 2).then(|| ("ssd".to_string(), "yes".to_string())))
        .collect(),
        ..AgentSpec::default()
    }
}

/// The driver: the replicas, the next log index and the history the
/// cross-time checks need.
struct Sim {
    a: State,
    b: State,
    index: u64,
    cursor: DispatchCursor,
    /// Invariant 1: the last token each task was assigned.
    last_token: BTreeMap<TaskId, u64>,
    /// Every (task, token) a completion was accepted for.
    completed: BTreeSet<(TaskId, u64)>,
}

impl Sim {
    fn task_id(&self, sel: u16) -> TaskId {
        // One past the last id too, to exercise TaskNotFound.
        TaskId(1 + u64::from(sel) % self.a.next_task_id().0)
    }

    /// A live task if there is one and `live`, else any id.
    fn pick(&self, sel: u16, live: bool) -> TaskId {
        let held: Vec<TaskId> = self
            .a
            .tasks_after(None)
            .filter(|t| t.state.holder().is_some())
            .map(|t| t.id)
            .collect();
        if live && !held.is_empty() {
            held[usize::from(sel) % held.len()]
        } else {
            self.task_id(sel)
        }
    }

    fn token(&self, id: TaskId, tok: &Tok) -> u64 {
        let current = self.last_token.get(&id).copied().unwrap_or(0);
        match tok {
            Tok::Current => current,
            Tok::Older(k) => current.saturating_sub(u64::from(*k)),
            Tok::Any(t) => *t,
        }
    }

    /// The specs of `items` and their placements over the agents in the
    /// mask, plus arbitrary (index, agent) pairs, valid or not.
    fn placed(
        &mut self,
        items: &[Item],
        connected: u8,
        extra: &[(u8, u8)],
    ) -> (Vec<TaskSpec>, Vec<(u32, AgentId)>) {
        let specs: Vec<TaskSpec> = items
            .iter()
            .map(|it| {
                let mut s = spec_of(it);
                crate::state::normalize(&mut s);
                s
            })
            .collect();
        let connected: BTreeSet<AgentId> = (0..AGENTS)
            .filter(|i| connected & (1 << i) != 0)
            .map(agent_id)
            .collect();
        let mut place = place_new(
            &self.a,
            &connected,
            &specs,
            &InFlight::default(),
            &mut self.cursor,
        );
        place.extend(extra.iter().map(|(i, a)| (u32::from(*i), agent_id(*a))));
        (specs, place)
    }

    fn command(&mut self, op: &Op) -> Command {
        match op {
            Op::Submit(items) => Command::Submit(items.iter().map(spec_of).collect()),
            Op::SubmitPlaced {
                items,
                connected,
                extra,
            } => {
                let (specs, place) = self.placed(items, *connected, extra);
                Command::SubmitPlaced { specs, place }
            }
            Op::SubmitAsking { items, connected } => self.submit_asking(items, *connected),
            Op::SubmitAs {
                items,
                connected,
                extra,
            } => {
                let (specs, place) = self.placed(items, *connected, extra);
                Command::SubmitAs {
                    specs,
                    place,
                    by: items.iter().map(principal_of).collect(),
                }
            }
            Op::CreateToken {
                token,
                role,
                first_only,
                expires,
            } => Command::CreateToken {
                id: token_id(*token),
                record: TokenRecord {
                    hash: [*token; 32],
                    name: format!("n{token}"),
                    role: role_of(*role),
                    tenant: (*role % 2 == 1).then(|| "acme".to_string()),
                    created_ms: 0,
                    // This entry's time is 1000 x (index + 1).
                    expires_ms: expires.map(|e| 1_000 * (self.index + u64::from(e))),
                    created_by: "token:test".into(),
                    revoked_ms: None,
                },
                first_only: *first_only,
            },
            Op::RevokeToken(token) => Command::RevokeToken {
                id: token_id(*token),
            },
            Op::SetTenant {
                tenant,
                max_pending,
                max_running_slots,
                max_gpus,
                weight,
            } => Command::SetTenant {
                name: TENANTS[usize::from(*tenant)].into(),
                limits: TenantLimits {
                    max_pending: max_pending.map(u64::from),
                    max_running_slots: max_running_slots.map(u64::from),
                    max_gpus: max_gpus.map(u64::from),
                    submit_rate: Some(SubmitRate {
                        per_s: u32::from(*weight % 3),
                        burst: 10,
                    }),
                    weight: u32::from(*weight),
                },
            },
            Op::RemoveTenant(tenant) => Command::RemoveTenant {
                name: TENANTS[usize::from(*tenant)].into(),
            },
            Op::RegisterAs {
                agent,
                types,
                token,
            } => Command::RegisterAgentAs {
                spec: agent_spec(*agent, *types, 1),
                token: token_id(*token),
            },
            Op::Register {
                agent,
                types,
                weight,
            } => Command::RegisterAgent(agent_spec(*agent, *types, *weight)),
            Op::Down(i) => Command::AgentDown {
                agent: agent_id(*i),
            },
            Op::Deregister(i) => Command::DeregisterAgent {
                agent: agent_id(*i),
            },
            Op::Cancel(t) => Command::Cancel {
                task: self.task_id(*t),
            },
            Op::Plan { max, connected } => {
                let connected: BTreeSet<AgentId> = (0..AGENTS)
                    .filter(|i| connected & (1 << i) != 0)
                    .map(agent_id)
                    .collect();
                Command::Assign(plan(
                    &self.a,
                    &connected,
                    usize::from(*max),
                    &mut self.cursor,
                ))
            }
            Op::Assign(pairs) => Command::Assign(
                pairs
                    .iter()
                    .map(|(t, a)| (self.task_id(*t), agent_id(*a)))
                    .collect(),
            ),
            Op::Started { task, live, tok } => {
                let id = self.pick(*task, *live);
                Command::Started {
                    task: id,
                    token: self.token(id, tok),
                }
            }
            Op::Complete { live, list } => Command::Complete(
                list.iter()
                    .map(|(t, k, success)| {
                        let id = self.pick(*t, *live);
                        let outcome = Outcome {
                            success: *success,
                            result: vec![1],
                            error: String::new(),
                            exit_code: 0,
                        };
                        Completion {
                            task: id,
                            token: self.token(id, k),
                            outcome,
                        }
                    })
                    .collect(),
            ),
            Op::SetQueue { queue, weight, wrr } => Command::SetQueue {
                name: QUEUES[usize::from(*queue)].into(),
                weight: u32::from(*weight),
                strategy: if *wrr {
                    QueueStrategy::WeightedRoundRobin
                } else {
                    QueueStrategy::LeastLoaded
                },
            },
            Op::Noop => Command::Noop,
            Op::SubmitWith {
                items,
                connected,
                opts,
            } => {
                let (specs, place) = self.placed(items, *connected, &[]);
                let now = 1_000 * (self.index + 1);
                Command::SubmitWith {
                    specs,
                    place,
                    by: Vec::new(),
                    opts: opts
                        .iter()
                        .map(|(d, fail, b)| TaskOptions {
                            deadline_ms: d.map(|d| now + 1_000 * u64::from(d)),
                            on_deadline: if *fail {
                                OnDeadline::Fail
                            } else {
                                OnDeadline::Report
                            },
                            backoff_base_ms: 500 * u64::from(*b % 4),
                            suspendable: *b & 4 != 0,
                            preemptible: *b & 8 == 0,
                            ..TaskOptions::default()
                        })
                        .collect(),
                }
            }
            Op::Finished { live, list } => Command::Finished(
                list.iter()
                    .map(|(t, k, success, timed_out)| {
                        let id = self.pick(*t, *live);
                        Finished {
                            task: id,
                            token: self.token(id, k),
                            outcome: Outcome {
                                success: *success,
                                result: vec![2],
                                error: "e".into(),
                                exit_code: 3,
                            },
                            timed_out: *timed_out,
                        }
                    })
                    .collect(),
            ),
            Op::Wake(extra) => {
                let mut ids = self.a.lifecycle().wakes_due(u64::MAX, usize::MAX);
                ids.extend(extra.iter().map(|t| self.task_id(*t)));
                Command::Wake(ids)
            }
            Op::DeadlineMissed(extra) => {
                let mut ids = self.a.lifecycle().deadlines_due(u64::MAX, usize::MAX);
                ids.extend(extra.iter().map(|t| self.task_id(*t)));
                Command::DeadlineMissed(ids)
            }
            Op::Replay(list) => Command::Replay(list.iter().map(|t| self.task_id(*t)).collect()),
            Op::Checkpoint {
                task,
                live,
                tok,
                big,
            } => {
                let id = self.pick(*task, *live);
                let len = if *big { MAX_CHECKPOINT_BYTES + 1 } else { 3 };
                Command::Checkpoint(vec![(id, self.token(id, tok), vec![7; len])])
            }
            Op::Preempt {
                task,
                agent,
                mask,
                tok,
            } => {
                let online: Vec<TaskId> = self
                    .a
                    .tasks_after(None)
                    .filter(|t| {
                        t.state == TaskState::Pending && t.spec.priority == Priority::Online
                    })
                    .map(|t| t.id)
                    .collect();
                let task = match online.len() {
                    0 => self.task_id(*task),
                    n => online[usize::from(*task) % n],
                };
                // Mostly valid victims: lower-class, preemptible, not
                // preempted yet, on an agent that has some; with the
                // mask's top bit, whatever the agent holds.
                let any = *mask & 0x80 != 0;
                let prio = self
                    .a
                    .task(task)
                    .map_or(Priority::Online, |t| t.spec.priority);
                let candidates = |a: &crate::model::Agent| -> Vec<TaskId> {
                    a.tasks
                        .keys()
                        .copied()
                        .filter(|id| {
                            any || (self.a.task(*id).is_some_and(|t| t.spec.priority > prio)
                                && self.a.lifecycle().task(*id).is_some_and(|l| {
                                    l.opts.preemptible
                                        && l.preempting.is_none()
                                        && l.suspended.is_none()
                                }))
                        })
                        .collect()
                };
                let picked = agent_id(*agent);
                let (agent, held) = self
                    .a
                    .agents()
                    .filter(|a| {
                        self.a.task(task).is_none_or(|t| {
                            crate::dispatch::eligibility::capable(&a.spec, &t.spec).is_ok()
                        })
                    })
                    .map(|a| (a.spec.id.clone(), candidates(a)))
                    .filter(|(_, c)| !c.is_empty())
                    .min_by_key(|(id, _)| *id != picked)
                    .unwrap_or((picked, Vec::new()));
                let victims = held
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *mask & (1 << (i % 7)) != 0 || held.len() == 1)
                    .map(|(_, id)| (*id, self.token(*id, tok)))
                    .collect();
                Command::Preempt {
                    task,
                    agent,
                    victims,
                }
            }
            Op::PreemptAny {
                task,
                agent,
                victims,
            } => Command::Preempt {
                task: self.task_id(*task),
                agent: agent_id(*agent),
                victims: victims
                    .iter()
                    .map(|(t, k)| {
                        let id = self.pick(*t, true);
                        (id, self.token(id, k))
                    })
                    .collect(),
            },
            Op::PlanPreempt { connected } => {
                let connected: BTreeSet<AgentId> = (0..AGENTS)
                    .filter(|i| connected & (1 << i) != 0)
                    .map(agent_id)
                    .collect();
                let now = 1_000 * (self.index + 1);
                plan_preemption(&self.a, &connected, now, 4)
                    .into_iter()
                    .next()
                    .unwrap_or(Command::Noop)
            }
            Op::Resume(extra) => {
                let mut ids: Vec<TaskId> = self.a.suspended().map(|(id, _)| id).collect();
                ids.extend(extra.iter().map(|t| self.task_id(*t)));
                Command::Resume(ids)
            }
            Op::SetHeadroom { class, slots, gpus } => Command::SetHeadroom {
                class: [Priority::Online, Priority::Nearline, Priority::Offline]
                    [usize::from(*class)],
                headroom: Headroom {
                    slots: u32::from(*slots),
                    gpus: u32::from(*gpus),
                },
            },
            Op::Drain { agent, deadline } => Command::DrainAgent {
                agent: agent_id(*agent),
                deadline_ms: deadline.map(|d| 1_000 * (self.index + u64::from(d))),
            },
            Op::Undrain(agent) => Command::UndrainAgent {
                agent: agent_id(*agent),
            },
            Op::Stop { task, live, tok } => {
                let id = self.pick(*task, *live);
                Command::Stopped(vec![(id, self.token(id, tok))])
            }
            Op::Expire { age, take, extra } => {
                // This entry's time is 1000 x (index + 1).
                let before_ms = (1_000 * self.index).saturating_sub(1_000 * u64::from(*age));
                let mut tasks = self.a.finished_before(before_ms, usize::from(*take));
                tasks.extend(extra.iter().map(|t| self.task_id(*t)));
                Command::Expire { before_ms, tasks }
            }
            Op::Forward(t) => Command::Forward(vec![(self.task_id(*t), PEER.into())]),
            Op::Ingest { skip, take } => Command::Ingest {
                origin: PEER.into(),
                records: self
                    .a
                    .unshipped(PEER, 0, usize::MAX)
                    .into_iter()
                    .skip(usize::from(*skip))
                    .take(usize::from(*take))
                    .collect(),
            },
            Op::Ack { take, accept } => Command::ForwardAck {
                peer: PEER.into(),
                verdicts: self
                    .a
                    .unshipped(PEER, 0, usize::from(*take))
                    .into_iter()
                    .map(|(seq, _)| {
                        let v = if *accept {
                            Verdict::Accepted {
                                remote_task: Some(TaskId(1000 + seq)),
                            }
                        } else {
                            Verdict::Rejected {
                                reason: "no capacity".into(),
                            }
                        };
                        (seq, v)
                    })
                    .collect(),
            },
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let cmd = self.command(op);
        self.index += 1;
        let ctx = ApplyCtx {
            log_index: self.index,
            time_ms: 1_000 * self.index,
        };
        let before = self.a.clone();
        let ra = self.a.apply(cmd.clone(), ctx);
        let rb = self.b.apply(cmd.clone(), ctx);

        // Replicas applying the same log agree on responses, state and digest.
        prop_assert_eq!(&ra, &rb);
        prop_assert!(self.a == self.b, "replicas diverged after {:?}", cmd);
        prop_assert_eq!(self.a.digest(), self.b.digest());
        // Invariant 3 and the structural invariants, after every apply.
        if let Err(e) = self.a.check_invariants() {
            return Err(TestCaseError::fail(format!("after {cmd:?} -> {ra:?}: {e}")));
        }
        // Every new hold meets its task's placement ask.
        placement::check_new_holds(&before, &self.a)
            .map_err(|e| TestCaseError::fail(format!("after {cmd:?} -> {ra:?}: {e}")))?;

        // Classes in order, work-conserving: no plan places a task of a
        // lower class while one of a higher class that an agent of its pool
        // could still take stays unplaced.
        if let (
            Op::Plan { max, connected },
            Command::Assign(pairs),
            Response::Assigned { rejected, .. },
        ) = (op, &cmd, &ra)
        {
            if rejected.is_empty() {
                self.check_class_order(&before, pairs, *max, *connected)?;
            }
        }

        // Retention removes exactly the finished tasks named that finished
        // by the cut-off, with their keys; everything else stays as it was.
        if let (Command::Expire { before_ms, tasks }, Response::Expired { removed, rejected }) =
            (&cmd, &ra)
        {
            prop_assert_eq!(removed.len() + rejected.len(), tasks.len());
            for id in removed {
                let prior = before.task(*id).expect("removed tasks existed");
                prop_assert!(prior.state.is_terminal() && prior.updated_ms <= *before_ms);
                prop_assert!(self.a.task(*id).is_none() && self.a.expired(*id));
                if let Some(k) = &prior.spec.idempotency_key {
                    prop_assert_eq!(self.a.task_by_key(k), None);
                }
            }
            for (id, _) in rejected.iter().filter(|(id, _)| !removed.contains(id)) {
                prop_assert_eq!(self.a.task(*id), before.task(*id));
            }
        }

        // Invariant 5: ingest is idempotent; the same records again change
        // nothing and get the same verdicts.
        if let (Command::Ingest { .. }, Response::Ingested { verdicts, .. }) = (&cmd, &ra) {
            let mut again = self.a.clone();
            let later = ApplyCtx {
                log_index: ctx.log_index + 1,
                time_ms: ctx.time_ms + 1,
            };
            let r2 = again.apply(cmd.clone(), later);
            prop_assert!(again == self.a, "a repeated ingest changed the state");
            // The same verdicts; a refusal's reason may be worded differently.
            let kinds = |v: &[(u64, Verdict)]| -> Vec<(u64, Option<TaskId>, bool)> {
                v.iter()
                    .map(|(seq, v)| match v {
                        Verdict::Accepted { remote_task } => (*seq, *remote_task, true),
                        Verdict::Rejected { .. } => (*seq, None, false),
                    })
                    .collect()
            };
            if let Response::Ingested { verdicts: v2, .. } = r2 {
                prop_assert_eq!(kinds(verdicts), kinds(&v2));
            }
        }

        // Plan and apply agree: a fresh plan is granted in full.
        if let (Op::Plan { .. }, Command::Assign(pairs), Response::Assigned { granted, rejected }) =
            (op, &cmd, &ra)
        {
            prop_assert!(
                rejected.is_empty(),
                "plan {:?} rejected at apply: {:?}",
                pairs,
                rejected
            );
            prop_assert_eq!(granted.len(), pairs.len());
        }

        // A preemption is all or nothing: refused, nothing changed;
        // applied, every victim is suspended (slots free) or preempting.
        // A resumed task was suspended and is no longer.
        if let (Command::Resume(ids), Response::Items(results)) = (&cmd, &ra) {
            for (id, r) in ids.iter().zip(results) {
                if r.is_ok() {
                    let was = before
                        .lifecycle()
                        .task(*id)
                        .and_then(|l| l.suspended.as_ref());
                    let is = self
                        .a
                        .lifecycle()
                        .task(*id)
                        .and_then(|l| l.suspended.as_ref());
                    prop_assert!(
                        was.is_some() && is.is_none(),
                        "resumed {} was {:?}",
                        id,
                        was
                    );
                }
            }
        }
        // The planner's preemptions are applied in full.
        if let (Op::PlanPreempt { .. }, Command::Preempt { .. }) = (op, &cmd) {
            prop_assert!(
                matches!(ra, Response::Preempted { .. }),
                "planned {:?} answered {:?}",
                cmd,
                ra
            );
        }
        if let Command::Preempt { task, victims, .. } = &cmd {
            match &ra {
                Response::Rejected(_) => {
                    prop_assert!(before == self.a, "a refused preempt changed the state")
                }
                Response::Preempted {
                    suspended,
                    stopping,
                    ..
                } => {
                    prop_assert_eq!(suspended.len() + stopping.len(), victims.len());
                    for (v, _) in victims {
                        let life = self.a.lifecycle().task(*v).expect("a victim has a life");
                        prop_assert!(
                            life.suspended.as_ref().map(|s| s.by) == Some(*task)
                                || life.preempting.as_ref().map(|p| p.by) == Some(*task)
                        );
                        prop_assert_eq!(
                            before.task(*v).map(|t| &t.state),
                            self.a.task(*v).map(|t| &t.state)
                        );
                    }
                }
                other => prop_assert!(false, "preempt answered {:?}", other),
            }
        }

        // Invariant 1, across time: a task's tokens strictly increase.
        for task in self.a.tasks_after(None) {
            if let Some((_, token)) = task.state.holder() {
                let last = self.last_token.insert(task.id, token);
                if let Some(last) = last {
                    prop_assert!(
                        token >= last,
                        "task {} token went from {} to {}",
                        task.id,
                        last,
                        token
                    );
                    if token != last {
                        prop_assert_eq!(token, self.index, "a new token is this entry's index");
                    }
                }
            }
        }

        // Invariant 1: a completion is accepted only with the current token,
        // or acknowledged without effect when resent for an ended task.
        if let (Command::Complete(list), Response::Completed(results)) = (&cmd, &ra) {
            prop_assert_eq!(list.len(), results.len());
            let mut seen = BTreeSet::new();
            for (c, r) in list.iter().zip(results) {
                let first = seen.insert(c.task);
                let Some(prior) = before.task(c.task) else {
                    prop_assert_eq!(r, &Err(Rejection::TaskNotFound(c.task)));
                    continue;
                };
                match (r, prior.state.holder()) {
                    (Ok(()), Some((_, current))) if first => prop_assert_eq!(c.token, current),
                    (Ok(()), None) if first => {
                        prop_assert!(false, "a completion of {} accepted with no holder", c.task)
                    }
                    _ => {}
                }
                // One completion per attempt (task, token) is ever accepted.
                if r.is_ok() {
                    prop_assert!(
                        self.completed.insert((c.task, c.token)),
                        "a second completion of {} under token {} was accepted",
                        c.task,
                        c.token
                    );
                }
                if first && c.token == 0 {
                    prop_assert!(r.is_err(), "token 0 is never current");
                }
            }
        }

        // A stop is accepted only with the current token, and requeues the
        // task with its attempt given back.
        if let (Command::Stopped(list), Response::Stopped(results)) = (&cmd, &ra) {
            for ((task, token), r) in list.iter().zip(results) {
                let prior = before.task(*task);
                let current = prior.and_then(|t| t.state.holder().map(|(_, k)| k));
                prop_assert_eq!(r.is_ok(), current == Some(*token), "{:?}", r);
                if r.is_ok() {
                    let now = self.a.task(*task).unwrap();
                    prop_assert_eq!(&now.state, &TaskState::Pending);
                    prop_assert_eq!(now.attempt, prior.unwrap().attempt.saturating_sub(1));
                }
            }
        }

        self.check_access(&cmd, &ra, &before, ctx)?;
        self.check_quotas(&cmd, &ra, &before)?;

        // Started moves only the current holder's task.
        if let (Command::Started { task, token }, Response::Ok) = (&cmd, &ra) {
            let now = &self.a.task(*task).unwrap().state;
            let running = matches!(now, TaskState::Running { token: t, .. } if t == token);
            prop_assert!(running, "started with {} left the task {:?}", token, now);
        }
        Ok(())
    }
}

impl Sim {
    fn new() -> Sim {
        // At the newest format version (access, lifecycle), so the digests
        // compared after every apply cover the access and lifecycle states
        // too.
        let mut at_v3 = State::new();
        at_v3.restore_cluster_version(crate::FORMAT_VERSION_MAX);
        Sim {
            a: at_v3.clone(),
            b: at_v3,
            index: 0,
            cursor: DispatchCursor::default(),
            last_token: BTreeMap::new(),
            completed: BTreeSet::new(),
        }
    }

    /// The dispatch order's class rule for the round `pairs` that `plan`
    /// made from `before` (and that applied in full, giving `self.a`): no
    /// placed task took from the headroom reserved above its class; and if
    /// it placed a task of class C, every dispatchable task of a class above
    /// C that it left Pending cannot be placed now, after the round: no
    /// agent of the round's pool (Ready, connected, a free slot at its
    /// start) can take it, or its tenant would pass a running quota, or it
    /// would leave less free in the pool than the headroom reserved above
    /// its class. Capacity, usage and free headroom only shrink within a
    /// round, so such a task could not be placed when it was examined
    /// either. Checked only while every tenant's tasks in a queue are
    /// within the round's scan bound.
    fn check_class_order(
        &self,
        before: &State,
        pairs: &[(TaskId, AgentId)],
        max: u8,
        mask: u8,
    ) -> Result<(), TestCaseError> {
        use crate::dispatch::eligibility;
        let bound = 4 * usize::from(max);
        let sets = || before.pending_by_tenant.values().flat_map(|q| q.values());
        if sets().any(|set| set.len() > bound) {
            return Ok(());
        }
        let Some(lowest) = pairs
            .iter()
            .filter_map(|(t, _)| before.task(*t).map(|t| t.spec.priority))
            .max()
        else {
            return Ok(());
        };
        let placed: BTreeSet<TaskId> = pairs.iter().map(|(t, _)| *t).collect();
        let pool: Vec<&crate::model::Agent> = (0..AGENTS)
            .filter(|i| mask & (1 << i) != 0)
            .filter_map(|i| before.agent(&agent_id(i)))
            .filter(|a| eligibility::ready(a).is_ok() && eligibility::free_slots(a) > 0)
            .filter_map(|a| self.a.agent(&a.spec.id))
            .collect();
        let free_slots: u64 = pool
            .iter()
            .map(|a| u64::from(eligibility::free_slots(a)))
            .sum();
        let free_gpus: u64 = pool
            .iter()
            .map(|a| u64::from(eligibility::free_gpus(a)))
            .sum();
        // Headroom: every placed task left the reserve above its class free
        // (what the round placed later only took more).
        for (t, _) in pairs {
            let spec = &before.task(*t).expect("planned tasks exist").spec;
            let reserved = self.a.lifecycle().reserved_above(spec.priority);
            prop_assert!(
                free_slots >= u64::from(reserved.slots)
                    && (spec.gpus == 0 || free_gpus >= u64::from(reserved.gpus)),
                "plan {:?} left {} slots and {} GPUs free, {} took from {:?} reserved",
                pairs,
                free_slots,
                free_gpus,
                t,
                reserved
            );
        }
        for set in sets() {
            for &(class, _, id) in set.iter() {
                if class >= lowest || placed.contains(&id) {
                    continue;
                }
                let spec = &before.task(id).expect("indexed tasks exist").spec;
                let reserved = self.a.lifecycle().reserved_above(class);
                let leaves = free_slots >= u64::from(spec.slots) + u64::from(reserved.slots)
                    && (spec.gpus == 0
                        || free_gpus >= u64::from(spec.gpus) + u64::from(reserved.gpus));
                let tenant = tenant_of(spec);
                let usage = self.a.access().usage(tenant);
                // Its tenant's running quotas, for the GPUs' weight there
                // (by model from version 5 on, else 1000 per GPU).
                let quota = |pick: Option<crate::placement::devices::Pick>| {
                    let milli = match pick {
                        Some(p) if self.a.placement_on() => u64::from(p.gpu_milli),
                        _ => u64::from(spec.gpus) * 1000,
                    };
                    self.a.access().tenant(tenant).is_none_or(|l| {
                        let held = (usage.running_slots, usage.running_gpu_milli);
                        crate::access::quota::running_over(l, held, spec, milli).is_none()
                    })
                };
                // From version 5 on, with its placement ask (constraints,
                // devices, tag rules) too.
                let fits = pool.iter().any(|a| {
                    let bound = self.a.access().agent_tenant(&a.spec.id);
                    crate::placement::check::eligible(
                        a,
                        bound,
                        spec,
                        self.a.placement().ask(id),
                        self.a.placement(),
                    )
                    .is_ok_and(quota)
                });
                prop_assert!(
                    !(leaves && fits),
                    "plan {:?} placed class {:?} and left {} of class {:?}, which fits",
                    pairs,
                    lowest,
                    id,
                    class
                );
            }
        }
        Ok(())
    }

    /// Quotas hold at apply: no apply raises a tenant's usage above a limit
    /// in effect (a usage already above one, after the limit was lowered,
    /// only falls). The one exception is max-pending, which tasks an agent
    /// lost may pass on their way back to Pending: they were admitted, so
    /// the tenant's admitted tasks (Pending and held) do not grow then; and
    /// tasks a peer DC refused come back to Pending whatever it says.
    fn check_quotas(
        &self,
        cmd: &Command,
        r: &Response,
        before: &State,
    ) -> Result<(), TestCaseError> {
        let requeues = matches!(
            cmd,
            Command::AgentDown { .. }
                | Command::DeregisterAgent { .. }
                | Command::Stopped(_)
                | Command::Regrant { .. }
                // A failed attempt is retried from version 4 on.
                | Command::Complete(_)
                | Command::Finished(_)
                | Command::Replay(_)
        );
        let comes_back = matches!(cmd, Command::ForwardAck { .. });
        for tenant in ["default", "acme", "beta"] {
            let Some(limits) = before.access().tenant(tenant) else {
                continue;
            };
            let (was, now) = (before.access().usage(tenant), self.a.access().usage(tenant));
            let held = |s: &State| {
                s.tasks_after(None)
                    .filter(|t| tenant_of(&t.spec) == tenant && t.state.holder().is_some())
                    .count() as u64
            };
            if let Some(max) = limits.max_pending {
                if now.pending > was.pending.max(max) && !comes_back {
                    prop_assert!(
                        requeues,
                        "{} raised {}'s pending from {} to {} past max-pending {} -> {:?}",
                        format!("{cmd:?}"),
                        tenant,
                        was.pending,
                        now.pending,
                        max,
                        r
                    );
                    prop_assert!(now.pending + held(&self.a) <= was.pending + held(before));
                }
            }
            if let Some(max) = limits.max_running_slots {
                prop_assert!(
                    now.running_slots <= was.running_slots.max(max),
                    "{:?} raised {}'s running slots from {} to {} past {}",
                    cmd,
                    tenant,
                    was.running_slots,
                    now.running_slots,
                    max
                );
            }
            if let Some(max) = limits.max_gpus {
                // Weighed by model, in thousandths.
                prop_assert!(
                    now.running_gpu_milli <= was.running_gpu_milli.max(max * 1000),
                    "{:?} raised {}'s GPU weight from {} to {} past {}",
                    cmd,
                    tenant,
                    was.running_gpu_milli,
                    now.running_gpu_milli,
                    max
                );
            }
        }
        Ok(())
    }

    /// What the access commands promise, against the state before them.
    fn check_access(
        &self,
        cmd: &Command,
        r: &Response,
        before: &State,
        ctx: ApplyCtx,
    ) -> Result<(), TestCaseError> {
        let (was, now) = (before.access(), self.a.access());
        match (cmd, r) {
            (Command::CreateToken { first_only, .. }, Response::Ok) => {
                prop_assert!(!first_only || was.tokens_created() == 0);
                prop_assert_eq!(now.tokens_created(), was.tokens_created() + 1);
            }
            (Command::RevokeToken { id }, Response::Ok) => {
                prop_assert!(now.token(id).is_some_and(|t| t.revoked_ms.is_some()));
            }
            (Command::RevokeToken { id }, Response::Rejected(Rejection::LastAdmin(_))) => {
                let others = was
                    .tokens()
                    .filter(|(t, r)| *t != id && r.role == Role::Admin && r.active(ctx.time_ms))
                    .count();
                prop_assert_eq!(others, 0);
                prop_assert!(was.token_active(id, ctx.time_ms));
            }
            (Command::RegisterAgentAs { spec, token }, Response::Ok) => {
                prop_assert_eq!(now.agent_token(&spec.id), Some(token));
                prop_assert!(was.token_active(token, ctx.time_ms));
            }
            (
                Command::RegisterAgentAs { spec, token },
                Response::Rejected(Rejection::AgentOwned { token: owner, .. }),
            ) => {
                prop_assert_eq!(was.agent_token(&spec.id), Some(owner));
                prop_assert!(owner != token && was.token_active(owner, ctx.time_ms));
            }
            (Command::SubmitAs { by, .. }, Response::SubmittedPlaced { submitted, .. }) => {
                for (s, p) in submitted.iter().zip(by) {
                    if let Ok(s) = s {
                        if !s.existed {
                            prop_assert_eq!(now.submitted_by(s.id), Some(p));
                        }
                    }
                }
            }
            _ => {}
        }
        // An active admin token is never lost by a revoke.
        if let Command::RevokeToken { .. } = cmd {
            let admins = |s: &State| {
                s.access()
                    .tokens()
                    .filter(|(_, t)| t.role == Role::Admin && t.active(ctx.time_ms))
                    .count()
            };
            prop_assert!(admins(before) == 0 || admins(&self.a) > 0);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences_keep_invariants(ops in vec(op(), 1..120)) {
        let mut sim = Sim::new();
        for op in &ops {
            sim.step(op)?;
        }
        // Decoded from the state's encoding and the access section (as a
        // snapshot holds them), a replica is equal, usage rebuilt.
        let config = bincode::config::standard();
        let state = bincode::serde::encode_to_vec(&sim.a, config).unwrap();
        let access = bincode::serde::encode_to_vec(sim.a.access(), config).unwrap();
        let lifecycle = bincode::serde::encode_to_vec(sim.a.lifecycle(), config).unwrap();
        let placement = bincode::serde::encode_to_vec(sim.a.placement(), config).unwrap();
        let (mut back, _): (State, _) = bincode::serde::decode_from_slice(&state, config).unwrap();
        back.restore_cluster_version(sim.a.cluster_version());
        back.restore_access(bincode::serde::decode_from_slice(&access, config).unwrap().0);
        back.restore_lifecycle(bincode::serde::decode_from_slice(&lifecycle, config).unwrap().0);
        back.restore_placement(bincode::serde::decode_from_slice(&placement, config).unwrap().0);
        prop_assert!(
            back == sim.a,
            "a state decoded with its access, lifecycle and placement sections differs"
        );
        prop_assert_eq!(back.digest(), sim.a.digest());
        // Whatever happened, draining every agent returns all live work.
        for i in 0..AGENTS {
            sim.step(&Op::Down(i))?;
        }
        prop_assert_eq!(sim.a.agents().map(|a| a.slots_in_use).sum::<u32>(), 0);
    }

    /// Preemptions (valid and not), suspensions, stops and resumes among
    /// the other ends of held work: every apply keeps the invariants (no
    /// agent over its capacity, a suspended task's slots free and its
    /// GPUs taken), and the replicas end equal.
    #[test]
    fn preemption_under_random_interleavings(ops in vec(preempt_op(), 1..150)) {
        let mut sim = Sim::new();
        for agent in 0..AGENTS {
            sim.step(&Op::Register { agent, types: 7, weight: 1 })?;
        }
        for queue in 1..3 {
            sim.step(&Op::SetQueue { queue, weight: 1, wrr: false })?;
        }
        for op in &ops {
            sim.step(op)?;
        }
        prop_assert_eq!(sim.a.digest(), sim.b.digest());
        for i in 0..AGENTS {
            sim.step(&Op::Down(i))?;
        }
        prop_assert_eq!(sim.a.agents().map(|a| a.slots_in_use + a.gpus_in_use).sum::<u32>(), 0);
    }

    /// The dispatch order's class rule (`Sim::check_class_order`, checked
    /// after every round) under workloads where most tasks are placeable.
    #[test]
    fn classes_in_order_across_queues(ops in vec(class_op(), 1..100)) {
        let mut sim = Sim::new();
        for op in &ops {
            sim.step(op)?;
        }
    }

    /// Tenants' quotas under random interleavings of submits, plans,
    /// assignments, completions, losses and limit changes from 3 tenants:
    /// every apply is checked by `check_quotas`, and the replicas end equal.
    #[test]
    fn quotas_hold_under_random_interleavings(ops in vec(quota_op(), 1..150)) {
        let mut sim = Sim::new();
        for op in &ops {
            sim.step(op)?;
        }
        prop_assert_eq!(sim.a.digest(), sim.b.digest());
    }
}
