//! The version-4 world of the lifecycle's unit tests: a state whose entries
//! carry the times a test gives, its invariants checked after each.

use crate::command::{ApplyCtx, Command, Response};
use crate::lifecycle::{TaskOptions, LIFECYCLE_VERSION};
use crate::model::{AgentSpec, Gpu, Priority, TaskId, TaskSpec};
use crate::state::State;

pub(crate) struct World {
    pub(crate) state: State,
    /// The last entry's log index.
    pub(crate) index: u64,
}

impl World {
    /// An empty state at cluster format version 4.
    pub(crate) fn new() -> World {
        let mut state = State::new();
        state.restore_cluster_version(LIFECYCLE_VERSION);
        World { state, index: 0 }
    }

    /// Applies `cmd` as the next entry, at `time_ms`.
    pub(crate) fn at(&mut self, time_ms: u64, cmd: Command) -> Response {
        self.index += 1;
        let r = self.state.apply(
            cmd,
            ApplyCtx {
                log_index: self.index,
                time_ms,
            },
        );
        self.state
            .check_invariants()
            .unwrap_or_else(|e| panic!("after {r:?}: {e}"));
        r
    }

    /// Applies `cmd` as the next entry, at 1000 ms times its index.
    pub(crate) fn apply(&mut self, cmd: Command) -> Response {
        self.at(1_000 * (self.index + 1), cmd)
    }

    /// Registers agent `id` for task type "t" with `slots` and `gpus` GPUs.
    pub(crate) fn agent(&mut self, id: &str, slots: u32, gpus: usize) {
        self.at(
            0,
            Command::RegisterAgent(AgentSpec {
                id: id.into(),
                dc: "dc1".into(),
                task_types: ["t".to_string()].into(),
                slots,
                weight: 1,
                gpus: vec![
                    Gpu {
                        model: "A40".into(),
                        memory_mb: 1,
                    };
                    gpus
                ],
                ..AgentSpec::default()
            }),
        );
    }

    /// Submits `spec` with `opts` at `time_ms`; returns its id.
    pub(crate) fn submit_at(&mut self, time_ms: u64, spec: TaskSpec, opts: TaskOptions) -> TaskId {
        match self.at(
            time_ms,
            Command::SubmitWith {
                specs: vec![spec],
                place: vec![],
                by: vec![],
                opts: vec![opts],
            },
        ) {
            Response::SubmittedPlaced { submitted, .. } => submitted[0].as_ref().unwrap().id,
            other => panic!("{other:?}"),
        }
    }

    /// Submits a task of type "t" of `prio` taking `slots` and `gpus`.
    pub(crate) fn submit(
        &mut self,
        prio: Priority,
        slots: u32,
        gpus: u32,
        opts: TaskOptions,
    ) -> TaskId {
        let spec = TaskSpec {
            task_type: "t".into(),
            priority: prio,
            slots,
            gpus,
            ..TaskSpec::default()
        };
        self.submit_at(0, spec, opts)
    }

    /// Assigns `id` to `agent` at `time_ms`; returns the token.
    pub(crate) fn assign_at(&mut self, time_ms: u64, id: TaskId, agent: &str) -> u64 {
        match self.at(time_ms, Command::Assign(vec![(id, agent.into())])) {
            Response::Assigned { granted, rejected } if rejected.is_empty() => granted[0].token,
            other => panic!("{other:?}"),
        }
    }

    /// Assigns `id` to `agent` and has it start, at `time_ms`; returns the
    /// token.
    pub(crate) fn start_at(&mut self, time_ms: u64, id: TaskId, agent: &str) -> u64 {
        let token = self.assign_at(time_ms, id, agent);
        assert_eq!(
            self.at(time_ms, Command::Started { task: id, token }),
            Response::Ok
        );
        token
    }
}
