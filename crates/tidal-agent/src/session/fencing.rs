//! Self-fencing (the lease lapsed: kill every task, drop its token) and
//! credentials the servers refused (the same, then the agent ends).

use tokio::time::Instant;

use super::{Agent, STOPPED_TOKENS};

impl Agent {
    /// The servers refused this agent's credentials (`what`: its
    /// registration, or its open session): it fences itself, since without
    /// a session its lease is not renewed, and the error ends the agent
    /// (`tidal agent` exits 8). Never retried: the same token is refused
    /// again.
    pub(super) fn credentials_refused(
        &mut self,
        e: tidal_client::Error,
        what: &str,
    ) -> anyhow::Error {
        let killed = self.stop_all();
        tracing::error!(
            code = ?e.code,
            error = %e.message,
            killed,
            "the servers refused this agent's credentials: stopped every task; exiting"
        );
        self.drop_session(Instant::now());
        anyhow::Error::new(e).context(format!(
            "the servers refused this agent's credentials ({what}); it stopped {killed} task(s)"
        ))
    }

    /// Kills every running task and drops its token for good (the leader
    /// grants the task again under a new one); returns how many it killed.
    pub(super) fn stop_all(&mut self) -> usize {
        for r in self.exec.running() {
            self.stopped.push_back((r.task_id.clone(), r.token));
            self.fenced.push_back((r.task_id, r.token));
        }
        while self.stopped.len() > STOPPED_TOKENS {
            self.stopped.pop_front();
        }
        while self.fenced.len() > STOPPED_TOKENS {
            self.fenced.pop_front();
        }
        self.exec.kill_all()
    }

    /// The lease lapsed: stop all work and drop its tokens. Their results are
    /// not reported; the server requeues the tasks after its own TTL.
    pub(super) fn fence(&mut self) {
        let killed = self.stop_all();
        self.lease.reset();
        let ttl_ms = self.lease.ttl().as_millis() as u64;
        if killed > 0 {
            tracing::warn!(
                killed,
                ttl_ms,
                "lease not renewed within the agent ttl: self-fenced (killed running tasks, dropped their tokens)"
            );
        } else {
            tracing::info!(
                ttl_ms,
                "lease not renewed within the agent ttl; nothing was running"
            );
        }
        // The session (if any) is no longer trusted; a registration already
        // in flight would name the killed tasks as running.
        self.drop_session(Instant::now());
    }
}
