//! Checks of the state's internal invariants, run by tests after every apply.

use std::collections::BTreeSet;

use crate::model::{TaskId, TaskState};
use crate::state::State;

impl State {
    /// Checks the invariants one state can show on its own (invariant 1 across
    /// time needs a history; see the property tests):
    ///
    /// - invariant 3: for every agent, `slots_in_use`/`gpus_in_use` equal the
    ///   sums over the tasks it holds (slots: those not suspended) and do not
    ///   exceed its capacity (the one
    ///   legitimate exception, an agent re-registered with less capacity than in
    ///   use, is reported too: callers that allow it filter it out);
    /// - every Assigned/Running task is in its agent's map with its token, and
    ///   every entry of an agent's map is such a task;
    /// - the pending index holds exactly the Pending tasks, under their queue
    ///   and priority, and so does the pending-by-tenant index, under their
    ///   queue and tenant, with nothing empty;
    /// - idempotency keys point at tasks with that key; ids are below `next_id`;
    ///   every task's queue exists;
    /// - the finished index holds exactly the finished tasks, by `updated_ms`;
    /// - the access state's (`check_access`): usage equals its recomputation,
    ///   who submitted what names existing tasks, agents' tokens exist;
    ///
    /// - cross-DC (invariant 5): outbox sequences are below `next_seq` and
    ///   above `acked`; an ingested task maps back to its origin id and
    ///   the other way; an ingested task is never Forwarded; a task record
    ///   in an outbox is a Forwarded task of that peer.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (name, agent) in &self.agents {
            if *name != agent.spec.id {
                return Err(format!(
                    "agent {name:?} is stored under another id {:?}",
                    agent.spec.id
                ));
            }
            let (mut slots, mut gpus) = (0u64, 0u64);
            for (id, token) in &agent.tasks {
                let Some(task) = self.tasks.get(id) else {
                    return Err(format!("agent {name} holds unknown task {id}"));
                };
                if task.state.holder() != Some((name, *token)) {
                    return Err(format!(
                        "agent {name} holds {id} with token {token}, but the task is {:?}",
                        task.state
                    ));
                }
                // A suspended task's slots are free; its GPUs stay taken.
                let suspended = self
                    .lifecycle
                    .task(*id)
                    .is_some_and(|l| l.suspended.is_some());
                if !suspended {
                    slots += u64::from(task.spec.slots);
                }
                gpus += u64::from(task.spec.gpus);
            }
            if slots != u64::from(agent.slots_in_use) || gpus != u64::from(agent.gpus_in_use) {
                return Err(format!(
                    "agent {name}: in use {}/{} slots/gpus, its tasks sum to {slots}/{gpus}",
                    agent.slots_in_use, agent.gpus_in_use
                ));
            }
            if agent.slots_in_use > agent.spec.slots
                || agent.gpus_in_use as usize > agent.spec.gpus.len()
            {
                return Err(format!(
                    "invariant 3: agent {name} uses {}/{} slots and {}/{} gpus",
                    agent.slots_in_use,
                    agent.spec.slots,
                    agent.gpus_in_use,
                    agent.spec.gpus.len()
                ));
            }
        }
        let mut pending_tasks = BTreeSet::new();
        for (id, task) in &self.tasks {
            if task.id != *id {
                return Err(format!("task {id} is stored under another id {}", task.id));
            }
            if id.0 == 0 || id.0 >= self.next_id {
                return Err(format!("task id {id} is outside 1..{}", self.next_id));
            }
            if !self.queues.contains_key(&task.spec.queue) {
                return Err(format!(
                    "task {id} is in missing queue {:?}",
                    task.spec.queue
                ));
            }
            if let Some((agent, token)) = task.state.holder() {
                let held = self.agents.get(agent).and_then(|a| a.tasks.get(id));
                if held != Some(&token) {
                    return Err(format!(
                        "task {id} is held by {agent} with {token}, the agent says {held:?}"
                    ));
                }
            }
            if task.state == TaskState::Pending {
                pending_tasks.insert((task.spec.queue.as_str(), task.spec.priority, *id));
            }
            if self.attempts_used(task) > task.spec.max_attempts {
                return Err(format!(
                    "task {id} attempt {} over max {} (since its last replay)",
                    task.attempt, task.spec.max_attempts
                ));
            }
        }
        let indexed: BTreeSet<_> = self
            .pending
            .iter()
            .flat_map(|(q, set)| set.iter().map(move |(p, id)| (q.as_str(), *p, *id)))
            .collect();
        if indexed != pending_tasks {
            let extra: Vec<TaskId> = indexed.difference(&pending_tasks).map(|e| e.2).collect();
            let missing: Vec<TaskId> = pending_tasks.difference(&indexed).map(|e| e.2).collect();
            return Err(format!(
                "pending index: extra {extra:?}, missing {missing:?}"
            ));
        }
        if self.pending.keys().any(|q| !self.queues.contains_key(q)) {
            return Err("pending index names a missing queue".to_string());
        }
        if self.pending_by_tenant.counts() != self.pending_by_tenant.recount() {
            return Err(format!(
                "pending-by-tenant index counts {:?} tasks per class, holds {:?}",
                self.pending_by_tenant.counts(),
                self.pending_by_tenant.recount()
            ));
        }
        // Equal indexes have equal per-class counts too.
        if self.pending_by_tenant != crate::state::tenant_index(&self.tasks, &self.lifecycle) {
            return Err(format!(
                "pending-by-tenant index holds {} entries, the Pending tasks are {}",
                self.pending_by_tenant
                    .values()
                    .flat_map(|q| q.values())
                    .map(|set| set.len())
                    .sum::<usize>(),
                pending_tasks.len()
            ));
        }
        self.check_lifecycle()?;
        self.check_placement()?;
        if self.finished != crate::state::finished_index(&self.tasks) {
            return Err(format!(
                "finished index holds {} entries, the finished tasks are {}",
                self.finished.len(),
                crate::state::finished_index(&self.tasks).len()
            ));
        }
        self.check_links()?;
        self.check_access()?;
        for (key, id) in &self.keys {
            let has = self
                .tasks
                .get(id)
                .and_then(|t| t.spec.idempotency_key.as_deref());
            if has != Some(key.as_str()) {
                return Err(format!("key {key:?} points at {id}, which has key {has:?}"));
            }
        }
        Ok(())
    }
}

impl State {
    fn check_links(&self) -> Result<(), String> {
        let links = &self.links;
        for (peer, outbox) in &links.outbox {
            for seq in outbox.records.keys() {
                if *seq >= outbox.next_seq || *seq <= outbox.acked {
                    return Err(format!(
                        "outbox {peer}: seq {seq} outside {}..{}",
                        outbox.acked, outbox.next_seq
                    ));
                }
            }
            for (_, record) in outbox.records.values() {
                if let crate::forwarding::types::Record::Task { origin_task, .. } = record {
                    // Or expired: retention removed it after it finished there.
                    let ok = self.expired(*origin_task)
                        || matches!(
                            self.tasks.get(origin_task).map(|t| &t.state),
                            Some(TaskState::Forwarded { dc, .. }) if dc == peer
                        );
                    if !ok {
                        return Err(format!(
                            "outbox {peer} holds task {origin_task}, which is not forwarded there"
                        ));
                    }
                }
            }
        }
        for (origin, inbound) in &links.inbound {
            for (origin_task, local) in &inbound.tasks {
                // An expired task keeps its dedup entry, nothing else.
                if self.expired(*local) {
                    continue;
                }
                if links.origin_of.get(local) != Some(&(origin.clone(), *origin_task)) {
                    return Err(format!(
                        "ingested {origin}/{origin_task} -> {local} has no matching origin"
                    ));
                }
            }
        }
        for (local, (origin, origin_task)) in &links.origin_of {
            let Some(task) = self.tasks.get(local) else {
                return Err(format!("ingested task {local} does not exist"));
            };
            if matches!(task.state, TaskState::Forwarded { .. }) {
                return Err(format!("ingested task {local} was forwarded again"));
            }
            if links
                .inbound
                .get(origin)
                .and_then(|i| i.tasks.get(origin_task))
                != Some(local)
            {
                return Err(format!(
                    "task {local} names origin {origin}/{origin_task}, which does not name it"
                ));
            }
        }
        Ok(())
    }

    /// The lifecycle state's: its indexes equal their recomputation; a
    /// task in backoff is Pending; a preempting or suspended one is held
    /// (and not both); a dead letter is Failed; it names only
    /// existing tasks; nothing of it exists below version 4.
    fn check_lifecycle(&self) -> Result<(), String> {
        let mut again = self.lifecycle.clone();
        again.reindex(&self.tasks);
        if again.delayed != self.lifecycle.delayed
            || again.deadlines != self.lifecycle.deadlines
            || again.preempted != self.lifecycle.preempted
        {
            return Err(format!(
                "lifecycle indexes: delayed {:?} / {:?}, deadlines {:?} / {:?}",
                self.lifecycle.delayed, again.delayed, self.lifecycle.deadlines, again.deadlines
            ));
        }
        for (id, life) in self.lifecycle.tasks.iter() {
            let Some(task) = self.tasks.get(id) else {
                return Err(format!("lifecycle names unknown task {id}"));
            };
            if life.not_before_ms.is_some() && task.state != TaskState::Pending {
                return Err(format!("task {id} is in backoff but {:?}", task.state));
            }
            if life.dead && !matches!(task.state, TaskState::Failed { .. }) {
                return Err(format!("task {id} is a dead letter but {:?}", task.state));
            }
            if life.attempts.len() > crate::lifecycle::types::MAX_ATTEMPT_HISTORY {
                return Err(format!("task {id} keeps {} attempts", life.attempts.len()));
            }
            if (life.preempting.is_some() || life.suspended.is_some())
                && task.state.holder().is_none()
            {
                return Err(format!(
                    "task {id} is preempted or suspended but {:?}",
                    task.state
                ));
            }
            if life.preempting.is_some() && life.suspended.is_some() {
                return Err(format!("task {id} is both preempting and suspended"));
            }
            if let Some((_, token)) = task.state.holder() {
                if life.attempts.last().map(|a| a.token) != Some(token) {
                    return Err(format!(
                        "task {id} is held under {token}, its last attempt is {:?}",
                        life.attempts.last()
                    ));
                }
            }
        }
        if self.cluster_version < crate::lifecycle::types::LIFECYCLE_VERSION
            && *self.lifecycle() != crate::lifecycle::types::Lifecycle::default()
        {
            return Err("lifecycle state below format version 4".to_string());
        }
        Ok(())
    }

    /// The placement state's: its indexes equal their recomputation; a
    /// task's held devices are under its current token, on its agent, within
    /// the agent's GPU list (unless the agent re-registered smaller), never
    /// held twice, as many as its spec's GPUs; it names only existing tasks;
    /// nothing of it exists below version 5.
    fn check_placement(&self) -> Result<(), String> {
        use crate::placement::types::{Placement, PLACEMENT_VERSION};
        if self.cluster_version < PLACEMENT_VERSION && self.placement != Placement::default() {
            return Err("placement state below format version 5".to_string());
        }
        let mut again = self.placement.clone();
        again.reindex(self.agents.values().map(|a| (&a.spec, &a.tasks)));
        if again.devices != self.placement.devices {
            return Err(format!(
                "placement devices: {:?}, recomputed {:?}",
                self.placement.devices, again.devices
            ));
        }
        if again.tags != self.placement.tags || again.tags_total != self.placement.tags_total {
            return Err(format!(
                "placement tags: {:?} / {:?}, recomputed {:?} / {:?}",
                self.placement.tags, self.placement.tags_total, again.tags, again.tags_total
            ));
        }
        let mut seen = BTreeSet::new();
        for (id, entry) in self.placement.tasks.iter() {
            let Some(task) = self.tasks.get(id) else {
                return Err(format!("placement names unknown task {id}"));
            };
            let Some(held) = &entry.held else {
                continue;
            };
            let Some((agent, token)) = task.state.holder() else {
                return Err(format!("task {id} holds devices but {:?}", task.state));
            };
            if held.token != token {
                return Err(format!(
                    "task {id} holds devices under {}, its token is {token}",
                    held.token
                ));
            }
            if !held.devices.is_empty() && held.devices.len() as u32 != task.spec.gpus {
                return Err(format!(
                    "task {id} holds devices {:?} but asks for {} GPUs",
                    held.devices, task.spec.gpus
                ));
            }
            for d in &held.devices {
                if !seen.insert((agent.clone(), *d)) {
                    return Err(format!("device {d} of agent {agent} is held twice"));
                }
            }
        }
        Ok(())
    }
}
