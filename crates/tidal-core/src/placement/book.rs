//! Keeping the placement state's derived indexes (devices held per agent,
//! tagged tasks per group) in step as tasks are assigned and let go.

use std::collections::BTreeMap;

use crate::model::{AgentSpec, FencingToken, TaskId};
use crate::placement::devices::Pick;
use crate::placement::rules::groups_of;
use crate::placement::types::{Held, Placement, TaskPlace};

impl Placement {
    /// Records that `agent` holds `id` under `token` with the devices of
    /// `pick` (none for a task that takes no GPUs). Keeps no entry for a
    /// task that asks nothing and takes no device.
    pub(crate) fn take(
        &mut self,
        agent: &AgentSpec,
        id: TaskId,
        token: FencingToken,
        pick: Option<Pick>,
    ) {
        let pick = pick.unwrap_or(Pick {
            shape: 0,
            devices: Vec::new(),
            gpu_milli: 0,
        });
        if pick.devices.is_empty() && !self.tasks.contains_key(&id) {
            return;
        }
        if !pick.devices.is_empty() {
            let busy = self.devices.entry(agent.id.clone()).or_default();
            for d in &pick.devices {
                busy.insert(*d, id);
            }
        }
        let mut entry = self.tasks.get(&id).cloned().unwrap_or_default();
        entry.last_shape = Some(pick.shape);
        entry.last_devices = pick.devices.clone();
        entry.held = Some(Held {
            token,
            shape: pick.shape,
            devices: pick.devices,
            gpu_milli: pick.gpu_milli,
        });
        self.count_tags(agent, &entry, true);
        self.tasks.insert(id, entry);
    }

    /// Records that the task no longer holds anything on `agent`.
    pub(crate) fn let_go(&mut self, agent: &AgentSpec, id: TaskId) {
        let Some(entry) = self.tasks.get(&id).cloned() else {
            return;
        };
        let Some(held) = &entry.held else {
            return;
        };
        if let Some(busy) = self.devices.get_mut(&agent.id) {
            for d in &held.devices {
                if busy.get(d) == Some(&id) {
                    busy.remove(d);
                }
            }
            if busy.is_empty() {
                self.devices.remove(&agent.id);
            }
        }
        self.count_tags(agent, &entry, false);
        let mut entry = entry;
        entry.held = None;
        self.tasks.insert(id, entry);
    }

    /// The agent's labels change from `old` to its spec's: its held tagged
    /// tasks count in the new groups.
    pub(crate) fn relabel(&mut self, old: &AgentSpec, new: &AgentSpec, held: &[TaskId]) {
        if old.labels == new.labels {
            return;
        }
        for id in held {
            if let Some(entry) = self.tasks.get(id).cloned() {
                if entry.held.is_some() {
                    self.count_tags(old, &entry, false);
                    self.count_tags(new, &entry, true);
                }
            }
        }
    }

    /// Forgets an expired task.
    pub(crate) fn forget(&mut self, id: TaskId) {
        self.tasks.remove(&id);
    }

    fn count_tags(&mut self, agent: &AgentSpec, entry: &TaskPlace, add: bool) {
        if entry.ask.tags.is_empty() {
            return;
        }
        for group in groups_of(&agent.id, &agent.labels) {
            let counts = self.tags.entry(group.clone()).or_default();
            bump(counts, &entry.ask.tags, add);
            if counts.is_empty() {
                self.tags.remove(&group);
            }
        }
        bump(&mut self.tags_total, &entry.ask.tags, add);
    }

    /// Rebuilds the derived indexes from the entries and the agents
    /// (restoring a snapshot).
    pub(crate) fn reindex<'a>(
        &mut self,
        agents: impl Iterator<Item = (&'a AgentSpec, &'a BTreeMap<TaskId, FencingToken>)>,
    ) {
        self.devices = Default::default();
        self.tags = BTreeMap::new();
        self.tags_total = BTreeMap::new();
        for (spec, held) in agents {
            for id in held.keys() {
                let Some(entry) = self.tasks.get(id).cloned() else {
                    continue;
                };
                let Some(h) = &entry.held else {
                    continue;
                };
                let busy = self.devices.entry(spec.id.clone()).or_default();
                for d in &h.devices {
                    busy.insert(*d, *id);
                }
                if busy.is_empty() {
                    self.devices.remove(&spec.id);
                }
                self.count_tags(spec, &entry, true);
            }
        }
    }
}

fn bump(counts: &mut BTreeMap<String, u32>, tags: &[String], add: bool) {
    for t in tags {
        let n = counts.entry(t.clone()).or_insert(0);
        if add {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
        }
        if *n == 0 {
            counts.remove(t);
        }
    }
}
