"""A tidal agent whose workers are Python functions (proto/tidal.proto, header "Agents").

    agent = tidal.Agent(["127.0.0.1:7001"], id="py-1", slots=2)

    @agent.task("t2i")
    def t2i(task):
        image = render(task.payload)     # bytes in, bytes (or str, or JSON) out
        return image

    agent.run()                          # until SIGTERM/SIGINT: drains, then deregisters

The agent holds one Agents.Session with the leader: it registers, renews
its lease with heartbeats, runs each Assignment in a thread of its own,
reports TaskStarted and TaskCompleted (kept and resent until the leader
acknowledges it), follows leader hints, and reconnects with backoff.

A Python function cannot be killed from outside, so every stop is
cooperative: cancel, stop (drain deadline, preemption), max-run and
self-fencing set `task.stopping` and record the reason; a function that
runs long checks `task.should_stop()` (or calls `task.check()`, which
raises TaskStopped, or sleeps with `task.sleep(s)`), and until it returns
its slots stay taken. What it returns after a cancel or a fence is never
reported: the leader has already let that assignment go, and the fencing
token (`task.token`) lets external storage refuse its late writes.

Self-fencing: the agent's lease is its own TTL (60% of the server's, or
`ttl`) from the send time of the last acknowledged heartbeat. When it
passes with tasks running, the agent tells each to stop, will never report
or start those tokens again, names them in its next Register (`fenced`), and
registers again; the leader grants those tasks anew under higher tokens.
"""

import collections
import json
import logging
import os
import queue
import random
import signal
import threading
import time
import traceback
import uuid

import grpc

from . import errors
from ._proto import tidal_pb2 as pb
from ._proto import tidal_pb2_grpc as pb_grpc
from .client import LEADER_ADDR_KEY, Client, _normalize

log = logging.getLogger("tidal.agent")

DISPLACED_KEY = "tidal-agent-displaced"
# The agent's lease as a share of the server's (as tidal's agent).
TTL_SHARE = 0.6
RECONNECT_INITIAL_S = 0.1
RECONNECT_MAX_S = 5.0
REDIRECTS_BEFORE_BACKOFF = 3
# How long the leader has to answer Register with Registered.
REGISTER_TIMEOUT_S = 10.0
# stop(): the drain's deadline by default (as tidal's agent), and how long
# past it a graceful exit waits for stops to be reported before giving up.
DRAIN_TIMEOUT_S = 60.0
LEAVE_SLACK_S = 30.0
# The leader keeps 1 MiB of a result; the agent sends no more.
MAX_RESULT_BYTES = 1 << 20
MAX_ERROR_CHARS = 4096
MAX_CHECKPOINT_BYTES = 64 * 1024
# Register.fenced carries the most recent runs killed by self-fencing.
MAX_FENCED = 4096
# An assignment that finds no free slot while runs told to stop still hold
# them (the leader already counts those slots free) waits this long for
# one before it is handed back: handing it back at once would have the
# leader grant it straight back, two Raft entries per round trip.
PARK_S = 30.0
# Assignments remembered as never to be started again (cancelled, stopped, fenced).
MAX_NEVER = 65536
# A checkpoint unanswered on one session is sent again after 1, 2, 4, 8, 16 s.
CHECKPOINT_RESENDS = (1.0, 2.0, 4.0, 8.0, 16.0)


class TaskStopped(Exception):
    """Raised by `AgentTask.check()` once the task must stop; `reason` says why."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class TaskFailed(Exception):
    """Raise it to fail the attempt with this error and exit code (the
    leader retries while attempts remain). Any other exception fails the
    attempt too, with its traceback as the error and exit code 1."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


class AgentStopped(errors.TidalError):
    """`Agent.run()` ended because the agent may not go on: another process
    took its id over (ABORTED), or its token or certificate was refused."""


class AgentTask:
    """What a task function gets: one attempt of one task.

    id, token (the fencing token: present it to external storage), attempt,
    type, pipeline, models, payload, spec (the tidal.v1.TaskSpec),
    checkpoint (bytes the last attempt saved, or b""), gpu_ids (the GPU
    device indexes this attempt holds), cuda_visible_devices (the same,
    mapped through the agent's own CUDA_VISIBLE_DEVICES, as a string for
    frameworks), max_run_ms, agent_id.
    """

    def __init__(self, agent, a):
        self._agent = agent
        self.id = a.task_id
        self.token = a.token
        self.attempt = a.attempt
        self.spec = a.spec
        self.type = a.spec.task_type
        self.pipeline = a.spec.pipeline
        self.models = list(a.spec.models)
        self.payload = a.spec.payload
        self.checkpoint = a.checkpoint
        self.max_run_ms = a.max_run_ms
        self.agent_id = agent.id
        self.gpu_ids = list(a.gpu_devices.index) if a.HasField("gpu_devices") else []
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        self.cuda_visible_devices = ",".join(
            visible[i] if visible and i < len(visible) else str(i) for i in self.gpu_ids)
        self.stopping = threading.Event()
        self.stop_reason = ""
        # Set while the leader has the task suspended (SuspendTask); cleared on ResumeTask.
        self.suspended = threading.Event()
        # When a preemption notice came: monotonic seconds by which to finish, else None.
        self.preempt_deadline = None

    def should_stop(self):
        """True once the task must stop: cancelled, stopped (drain deadline,
        preemption), past its max run, or fenced."""
        return self.stopping.is_set()

    def check(self):
        """Raises TaskStopped when the task must stop."""
        if self.stopping.is_set():
            raise TaskStopped(self.stop_reason)

    def sleep(self, seconds):
        """Sleeps up to `seconds`; returns True (early) when the task must stop."""
        return self.stopping.wait(seconds)

    def save_checkpoint(self, data):
        """Sends a checkpoint (at most 64 KiB): the next attempt of this task,
        on whichever agent, gets it as `task.checkpoint`. Kept and sent
        again until the leader answers; only the latest counts."""
        if isinstance(data, str):
            data = data.encode()
        if not data:
            return
        if len(data) > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"a checkpoint holds at most {MAX_CHECKPOINT_BYTES} bytes, not {len(data)}")
        self._agent._checkpoint(self, bytes(data))

    def _stop(self, reason):
        with self._agent._lock:
            if not self.stopping.is_set():
                self.stop_reason = reason
                self.stopping.set()


class _Run:
    """One assignment this process holds while its function runs."""

    def __init__(self, task, slots):
        self.task = task
        self.slots = slots
        self.started = time.monotonic()
        self.suspended_at = None   # monotonic, while suspended
        self.suspended_for = 0.0   # seconds suspended before, not counted in max-run
        # How it must end: None (its own result), "cancelled" / "fenced"
        # (report nothing), "stopped" (report stopped), "preempted" (stopped
        # unless it returns normally), "timed_out".
        self.order = None

    def reports(self):
        '''Whether its end will be reported (not cancelled nor fenced).'''
        return self.order not in ("cancelled", "fenced")

    def running_for(self, now):
        '''Seconds it ran, time suspended not counted.'''
        suspended = self.suspended_for + (now - self.suspended_at if self.suspended_at is not None else 0.0)
        return now - self.started - suspended


def _encode_result(value):
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


class Agent:
    """A tidal agent running Python functions.

    endpoints, token, tls, server_name: as for tidal.Client (the token must
      have the agent role; under TLS an agent certificate of the DC).
    id: the agent's name, unique in its DC. dc: the servers' DC.
    slots: tasks (their TaskSpec.slots) run at once. gpus: [(model,
      memory_mb), ...], index i is CUDA device i. models, pipelines, labels,
      weight, warm_models: as `tidal agent`'s flags.
    ttl: the agent's lease in seconds (default 60% of the server's; must
      be shorter than it).
    """

    def __init__(self, endpoints, id, dc="dc1", token=None, tls=None, server_name=None, slots=1,
                 models=(), pipelines=(), labels=None, gpus=(), weight=0, warm_models=(), ttl=None):
        self._client = Client(endpoints, token=token, tls=tls, server_name=server_name)
        self.id = id
        self.dc = dc
        self.slots = slots
        self.instance = f"py-{uuid.uuid4().hex}"
        self._models = list(models)
        self._pipelines = list(pipelines)
        self._labels = dict(labels or {})
        self._gpus = [pb.Gpu(model=m, memory_mb=mb) for m, mb in gpus]
        self._weight = weight
        self._warm = list(warm_models)
        self._ttl = ttl
        self._handlers = {}
        self._lock = threading.RLock()
        self._runs = {}            # (task_id, token) -> _Run, functions still running
        self._unacked = {}         # (task_id, token) -> TaskCompleted not yet acknowledged
        self._parked = collections.OrderedDict()  # (task_id, token) -> (Assignment, fn, slots, deadline)
        self._checkpoints = {}     # task_id -> [TaskCheckpoint, token, sends on this session, next send]
        self._never = collections.OrderedDict()  # (task_id, token) cancelled, stopped or fenced: never start again
        self._fenced = collections.deque(maxlen=MAX_FENCED)
        self._seq = 0              # heartbeat seq, increasing across sessions
        self._checkpoint_seq = 0
        self._lease_until = None   # monotonic deadline of the agent's own lease
        self._session = None       # the live _Session, once Registered
        self._current = None       # the _Session being served
        self._leaving = False
        self._exit = threading.Event()
        self._loop_done = threading.Event()   # the connect loop ended: nothing registers any more
        self._stop_started = False
        self._signalled = False               # stop() was started by a signal
        self._stopped = threading.Event()     # stop() finished
        self._force = threading.Event()       # a second signal: exit at once
        self._thread = None
        self._error = None
        self.sessions = 0          # sessions registered so far
        self.handed_back = 0       # assignments handed back unstarted (no room, leaving)
        self.parked_total = 0      # assignments that waited for a slot of a run told to stop
        self.registered = threading.Event()

    # ---------------------------------------------------------------- the API

    def task(self, task_type):
        """Decorator: `fn(task: AgentTask)` runs tasks of `task_type`; what it
        returns is the result (bytes, str, None, or JSON-encoded)."""
        def register(fn):
            self._handlers[task_type] = fn
            return fn
        return register

    def set_warm_models(self, models):
        """The models loaded now, sent with the next heartbeat (placement prefers warm agents)."""
        with self._lock:
            self._warm = list(models)

    def run(self, handle_signals=True):
        """Runs until `stop()` (or SIGTERM/SIGINT when called in the main thread
        with handle_signals: then it drains, waits for its tasks and
        deregisters). Raises AgentStopped when it may not go on."""
        if not self._handlers:
            raise errors.error(grpc.StatusCode.INVALID_ARGUMENT, "no task function: decorate one with @agent.task(TYPE)")
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        watchdog = threading.Thread(target=self._watchdog, name="tidal-agent-lease", daemon=True)
        watchdog.start()
        try:
            self._connect_loop()
        finally:
            self._exit.set()
            self._loop_done.set()
        # A signal's stop deregisters after the loop ended: wait for it (the
        # process ends when run() returns).
        if self._signalled:
            while not self._stopped.wait(0.1) and not self._force.is_set():
                pass
        if self._error is not None:
            raise self._error

    def _on_signal(self, *_):
        '''The first SIGTERM/SIGINT leaves gracefully (stop()); a second exits at once.'''
        if self._stop_started:
            log.warning("agent %s: a second signal: exiting now", self.id)
            self._force.set()
            self._shutdown()
            return
        self._stop_started = self._signalled = True
        log.info("agent %s: draining (a second signal exits at once)", self.id)
        threading.Thread(target=self.stop, name="tidal-agent-stop").start()

    def start(self):
        """Runs the agent in a background thread; returns self."""
        if not self._handlers:
            raise errors.error(grpc.StatusCode.INVALID_ARGUMENT, "no task function: decorate one with @agent.task(TYPE)")
        self._thread = threading.Thread(target=self._run_quietly, name="tidal-agent", daemon=True)
        self._thread.start()
        return self

    def _run_quietly(self):
        try:
            self.run(handle_signals=False)
        except AgentStopped:
            pass

    def stop(self, drain=True, timeout=DRAIN_TIMEOUT_S):
        """Leaves the DC. drain: Agents.Drain on itself with a deadline of
        `timeout` seconds (no new work; at the deadline the leader stops
        what still runs: its functions are told to stop and reported
        stopped, requeued without spending an attempt), waits until every
        task ended and every report was acknowledged (giving up 30 s after
        the deadline), then ends the session and Agents.Deregister. Without
        drain: tells the running tasks to stop and ends the session; the
        leader grants them again once the lease runs out."""
        self._stop_started = True
        try:
            if drain and not self._exit.is_set():
                self._leave(timeout)
        finally:
            self._shutdown()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join()
            self._stopped.set()

    def _leave(self, timeout):
        self._leaving = True
        try:
            self._client._call(pb_grpc.AgentsStub, "Drain",
                               pb.DrainAgentRequest(agent_id=self.id, deadline_ms=int(timeout * 1000)))
        except errors.NotFound:
            pass  # never registered (or removed): nothing to drain
        except errors.TidalError as e:
            log.warning("agent %s: cannot drain: %s", self.id, e)
            return
        give_up = time.monotonic() + timeout + LEAVE_SLACK_S
        while not self._exit.is_set() and not self._force.is_set():
            with self._lock:
                idle = not self._runs and not self._unacked and not self._parked
            if idle:
                break
            if time.monotonic() > give_up:
                log.warning("agent %s: tasks still run or reports are unacknowledged %gs after the "
                            "drain's deadline: leaving without deregistering", self.id, LEAVE_SLACK_S)
                return
            time.sleep(0.05)
        with self._lock:
            idle = not self._runs and not self._unacked and not self._parked
        if not idle or self._force.is_set():
            return
        # End the sessions and wait until nothing can register again, then deregister.
        self._close_session()
        self._loop_done.wait(REGISTER_TIMEOUT_S)
        try:
            # Its own id: a repeat after a lost answer says NOT_FOUND, which is done.
            self._client._call(pb_grpc.AgentsStub, "Deregister", pb.DeregisterAgentRequest(agent_id=self.id))
        except errors.NotFound:
            pass
        except errors.TidalError as e:
            log.warning("agent %s: cannot deregister: %s", self.id, e)

    def _close_session(self):
        with self._lock:
            self._exit.set()
            for run in self._runs.values():
                run.task._stop("the agent is stopping")
            sessions = {self._session, self._current} - {None}
        for session in sessions:
            session.close()

    def _shutdown(self):
        self._close_session()
        self._client.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(drain=exc[0] is None)

    # ---------------------------------------------------------------- sessions

    def _connect_loop(self):
        endpoints = self._client.endpoints
        addr = endpoints[0]
        backoff = RECONNECT_INITIAL_S
        redirects = 0
        while not self._exit.is_set():
            session = _Session(self, addr)
            with self._lock:
                if self._exit.is_set():
                    return
                self._current = session
            try:
                session.serve()
                if session.registered and session.closed_here:
                    # Our own drop: again at once; after an unanswered
                    # heartbeat on the next endpoint (the leader may be
                    # deposed: whoever leads now is named by any server).
                    backoff, redirects = RECONNECT_INITIAL_S, 0
                    if session.silent:
                        addr = self._next_endpoint(addr)
                    continue
                code, trailers = grpc.StatusCode.UNAVAILABLE, {}
                message = 'the session ended' if session.registered else 'no Registered in time'
            except grpc.RpcError as e:
                code, message = e.code(), e.details() or ""
                trailers = dict(e.trailing_metadata() or ())
            finally:
                with self._lock:
                    if self._session is session:
                        self._session = None
            if session.registered:
                backoff, redirects = RECONNECT_INITIAL_S, 0
            if self._exit.is_set():
                return
            if code == grpc.StatusCode.ABORTED and DISPLACED_KEY in trailers:
                self._fail(AgentStopped(code, f"another process took agent id {self.id} over "
                                              f"(instance {trailers[DISPLACED_KEY]}): {message}"))
                return
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED):
                self._fail(AgentStopped(code, f"the session of agent {self.id} was refused: {message}"))
                return
            hint = trailers.get(LEADER_ADDR_KEY)
            if code == grpc.StatusCode.UNAVAILABLE and hint:
                hint, _ = _normalize(hint)
                redirects += 1
                log.info("agent %s: %s is not the leader; going to %s", self.id, addr, hint)
                if hint not in self._client._endpoints:
                    self._client._endpoints.append(hint)
                addr = hint
                if redirects <= REDIRECTS_BEFORE_BACKOFF:
                    continue
            else:
                redirects = 0
                log.info("agent %s: session with %s ended (%s: %s); reconnecting", self.id, addr, code.name, message)
                addr = self._next_endpoint(addr)
            self._exit.wait(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    def _next_endpoint(self, addr):
        endpoints = self._client.endpoints
        return endpoints[(endpoints.index(addr) + 1) % len(endpoints)] if addr in endpoints else endpoints[0]

    def _register_timeout(self):
        """How long to wait for Registered: REGISTER_TIMEOUT_S, or less
        while tasks run on a lease that ends sooner (try another server first)."""
        with self._lock:
            left = None if self._lease_until is None else self._lease_until - time.monotonic()
            if left is None or left <= 0 or not any(r.reports() for r in self._runs.values()):
                return REGISTER_TIMEOUT_S
            return min(REGISTER_TIMEOUT_S, max(0.5, left / 2))

    def _fail(self, err):
        log.error("agent %s: %s", self.id, err)
        self._error = err
        self._shutdown()

    def _register(self, session):
        with self._lock:
            named = [k for k, r in self._runs.items() if r.reports()]
            named += [k for k in self._unacked if k not in self._runs]
            named += list(self._parked)
            session.named = set(named)
            running = [pb.RunningTask(task_id=t, token=k) for t, k in named]
            spec = pb.AgentSpec(
                id=self.id, dc=self.dc, task_types=sorted(self._handlers), pipelines=self._pipelines,
                models=self._models, slots=self.slots, weight=self._weight, gpus=self._gpus, labels=self._labels)
            return pb.AgentMessage(register=pb.Register(
                spec=spec, running=running, instance=self.instance,
                fenced=[pb.RunningTask(task_id=t, token=k) for t, k in self._fenced],
                warm_models=self._warm))

    def _on_registered(self, session, r):
        if r.server_ttl_ms == 0:
            raise errors.error(grpc.StatusCode.INTERNAL, "the server's lease TTL is 0")
        server_ttl = r.server_ttl_ms / 1000
        ttl = self._ttl if self._ttl is not None else TTL_SHARE * server_ttl
        if ttl >= server_ttl:
            self._fail(AgentStopped(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"the agent's ttl {ttl:g}s must be shorter than the server's {server_ttl:g}s"))
            session.close()
            return
        session.ttl = ttl
        session.interval = max(0.01, min(r.heartbeat_interval_ms / 1000, ttl / 3))
        with self._lock:
            self._lease_until = max(self._lease_until or 0, session.opened + ttl)
            self._session = session
            self.sessions += 1
            # Resend what the leader has not acknowledged, and the starts of
            # what runs (a start lost with the last session is harmless to repeat).
            for (t, k), run in self._runs.items():
                if run.order is None:
                    session.send(pb.AgentMessage(started=pb.TaskStarted(task_id=t, token=k)))
            # A checkpoint goes before the completion that follows it.
            for task_id, entry in self._checkpoints.items():
                entry[2] = 0
                self._send_checkpoint(session, task_id)
            for done in self._unacked.values():
                session.send(pb.AgentMessage(completed=done))
        self.registered.set()
        log.info("agent %s: registered with node %d (lease %gs, heartbeat every %gs)",
                 self.id, r.leader_id, ttl, session.interval)

    def _on_message(self, session, m):
        kind = m.WhichOneof("msg")
        if kind == "heartbeat_ack":
            sent = session.acked(m.heartbeat_ack.seq)
            if sent is not None:
                with self._lock:
                    self._lease_until = max(self._lease_until or 0, sent + session.ttl)
        elif kind == "assignment":
            self._on_assignment(session, m.assignment)
        elif kind == "cancel":
            self._order(m.cancel.task_id, m.cancel.token, "cancelled", f"cancelled: {m.cancel.reason}")
        elif kind == "stop":
            s = m.stop
            if s.preempt:
                grace = s.grace_ms / 1000 if s.grace_ms else 10.0
                self._order(s.task_id, s.token, "preempted", f"preempted: {s.reason}", grace)
            else:
                self._order(s.task_id, s.token, "stopped", f"stopped: {s.reason}")
        elif kind in ("suspend", "resume"):
            msg = getattr(m, kind)
            with self._lock:
                run = self._runs.get((msg.task_id, msg.token))
                if run is not None and run.order is None:
                    now = time.monotonic()
                    if kind == "suspend" and run.suspended_at is None:
                        run.suspended_at = now
                        run.task.suspended.set()
                    elif kind == "resume" and run.suspended_at is not None:
                        run.suspended_for += now - run.suspended_at
                        run.suspended_at = None
                        run.task.suspended.clear()
        elif kind == "completion_ack":
            a = m.completion_ack
            with self._lock:
                self._unacked.pop((a.task_id, a.token), None)
            if not a.accepted:
                log.warning("agent %s: the completion of %s (token %d) was refused: %s",
                            self.id, a.task_id, a.token, a.reason)
        elif kind == "checkpoint_ack":
            a = m.checkpoint_ack
            with self._lock:
                entry = self._checkpoints.get(a.task_id)
                if entry is not None and entry[1] == a.token and entry[0].seq <= a.seq:
                    del self._checkpoints[a.task_id]
            if not a.accepted:
                log.warning("agent %s: the checkpoint of %s was refused: %s", self.id, a.task_id, a.reason)
        # Kinds this version does not know are ignored (newer servers may add some).

    def _on_assignment(self, session, a):
        key = (a.task_id, a.token)
        slots = a.spec.slots or 1
        with self._lock:
            if key in self._runs or key in self._parked:
                return
            if key in self._unacked:
                session.send(pb.AgentMessage(completed=self._unacked[key]))
                return
            if key in self._never:
                return
            if self._lease_until is not None and time.monotonic() >= self._lease_until:
                # The lease ran out: the watchdog drops this session; the
                # next Register does not name it, so the leader grants it
                # again without counting an attempt.
                self._never_again(key)
                return
            # Suspended workers keep their memory, not their slots.
            busy = self._busy_slots()
            fn = self._handlers.get(a.spec.task_type)
            if self._leaving or self._exit.is_set() or fn is None:
                self._hand_back(session, key, "the agent is leaving" if fn is not None
                                else f"no function for task type {a.spec.task_type}")
                return
            if busy + slots > self.slots:
                if busy - self._winding_down_slots() + slots <= self.slots and not self._parked_over():
                    # Runs told to stop hold the room: wait for it.
                    self._parked[key] = (a, fn, slots, time.monotonic() + PARK_S)
                    self.parked_total += 1
                else:
                    self._hand_back(session, key, f"no free slot ({busy} of {self.slots} taken)")
                return
            run = self._start(session, a, fn, slots)
        threading.Thread(target=self._work, args=(fn, run), name=f"tidal-task-{a.task_id}", daemon=True).start()

    def _start(self, session, a, fn, slots):
        """Records a run and sends its TaskStarted (under the lock); the caller starts its thread."""
        run = _Run(AgentTask(self, a), slots)
        self._runs[(a.task_id, a.token)] = run
        if session is not None:
            session.send(pb.AgentMessage(started=pb.TaskStarted(task_id=a.task_id, token=a.token)))
        return run

    def _hand_back(self, session, key, why):
        """Hands an assignment back unstarted (under the lock): requeued
        without spending an attempt; kept until acknowledged, never started."""
        back = pb.TaskCompleted(task_id=key[0], token=key[1], success=False, exit_code=-1, stopped=True, error=why)
        self._unacked[key] = back
        self._never_again(key)
        self.handed_back += 1
        if session is not None:
            session.send(pb.AgentMessage(completed=back))

    def _busy_slots(self):
        return sum(r.slots for r in self._runs.values() if r.suspended_at is None)

    def _winding_down_slots(self):
        """Slots of runs told to end (cancelled, stopped, fenced, past their max run)."""
        return sum(r.slots for r in self._runs.values() if r.suspended_at is None and r.order is not None)

    def _parked_over(self):
        """Whether the parked assignments already claim every slot that is winding down."""
        return sum(p[2] for p in self._parked.values()) >= self._winding_down_slots()

    def _start_parked(self):
        """Starts the parked assignments that fit now, in order, and hands
        back those that waited too long (or all of them when leaving)."""
        started = []
        with self._lock:
            session = self._session
            now = time.monotonic()
            for key in list(self._parked):
                a, fn, slots, deadline = self._parked[key]
                if self._leaving or self._exit.is_set() or now > deadline:
                    del self._parked[key]
                    self._hand_back(session, key, "the agent is leaving" if self._leaving or self._exit.is_set()
                                    else f"no slot freed within {PARK_S:g}s")
                elif self._busy_slots() + slots <= self.slots:
                    del self._parked[key]
                    started.append((fn, self._start(session, a, fn, slots)))
        for fn, run in started:
            threading.Thread(target=self._work, args=(fn, run), name=f"tidal-task-{run.task.id}", daemon=True).start()

    def _order(self, task_id, token, order, reason, grace=None):
        key = (task_id, token)
        with self._lock:
            self._never_again(key)
            if key in self._parked:
                # Never started: a cancel drops it, a stop hands it back.
                del self._parked[key]
                if order != "cancelled":
                    self._hand_back(self._session, key, reason)
                return
            run = self._runs.get(key)
            if run is None or not run.reports():
                return
            # A cancel overrides any stop (nothing is reported); a stop while
            # one is under way (or a max-run end) changes nothing.
            if run.order is not None and order != "cancelled":
                return
            run.order = order
            if run.suspended_at is not None:
                run.suspended_for += time.monotonic() - run.suspended_at
                run.suspended_at = None
            if grace is not None:
                run.task.preempt_deadline = time.monotonic() + grace
            run.task.suspended.clear()
        run.task._stop(reason)

    def _never_again(self, key):
        self._never[key] = None
        while len(self._never) > MAX_NEVER:
            self._never.popitem(last=False)

    # ---------------------------------------------------------------- work

    def _work(self, fn, run):
        try:
            self._run_function(fn, run)
        finally:
            self._start_parked()

    def _run_function(self, fn, run):
        t = run.task
        done = pb.TaskCompleted(task_id=t.id, token=t.token)
        try:
            value = fn(t)
            done.success, done.exit_code, done.result = True, 0, _encode_result(value)[:MAX_RESULT_BYTES]
        except TaskStopped as e:
            done.success, done.exit_code, done.error = False, -1, e.reason
        except TaskFailed as e:
            done.success, done.exit_code, done.error = False, e.exit_code, str(e)[-MAX_ERROR_CHARS:]
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
            done.success, done.exit_code = code == 0, code
            done.error = "" if code == 0 else f"the function exited with {e.code!r}"
        except BaseException:  # noqa: BLE001 - any exception of the function fails the attempt
            done.success, done.exit_code = False, 1
            done.error = traceback.format_exc()[-MAX_ERROR_CHARS:]
        with self._lock:
            self._runs.pop((t.id, t.token), None)
            order = run.order
            if order in ("cancelled", "fenced"):
                entry = self._checkpoints.get(t.id)
                if entry is not None and entry[1] == t.token:
                    del self._checkpoints[t.id]
                return  # the leader let this assignment go: no result
            if order == "stopped" or (order == "preempted" and not done.success):
                done.success, done.stopped, done.result = False, True, b""
                done.error = done.error or t.stop_reason
                done.exit_code = -1
            elif order == "timed_out":
                done.success, done.timed_out, done.result = False, True, b""
                done.error = f"ran longer than its max-run-ms of {t.max_run_ms} ms"
            self._unacked[(t.id, t.token)] = done
            session = self._session
        if session is not None:
            # A checkpoint goes before the completion that follows it.
            self._send_checkpoint(session, t.id)
            session.send(pb.AgentMessage(completed=done))

    def _checkpoint(self, task, data):
        with self._lock:
            run = self._runs.get((task.id, task.token))
            if run is None or not run.reports():
                return
            self._checkpoint_seq += 1
            msg = pb.TaskCheckpoint(task_id=task.id, token=task.token, data=data, seq=self._checkpoint_seq)
            self._checkpoints[task.id] = [msg, task.token, 0, time.monotonic()]
            session = self._session
        if session is not None:
            self._send_checkpoint(session, task.id)

    def _send_checkpoint(self, session, task_id):
        with self._lock:
            entry = self._checkpoints.get(task_id)
            if entry is None or entry[2] > len(CHECKPOINT_RESENDS):
                return
            delay = CHECKPOINT_RESENDS[entry[2]] if entry[2] < len(CHECKPOINT_RESENDS) else None
            entry[2] += 1
            entry[3] = time.monotonic() + delay if delay is not None else float("inf")
            msg = entry[0]
        session.send(pb.AgentMessage(checkpoint=msg))

    def _heartbeat(self, session):
        with self._lock:
            self._seq += 1
            seq = self._seq
            free = max(0, self.slots - self._busy_slots())
            warm = list(self._warm)
            due = [t for t, e in self._checkpoints.items() if e[3] <= time.monotonic()]
        session.sent(seq)
        session.send(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=seq, free_slots=free, warm_models=warm)))
        for task_id in due:
            self._send_checkpoint(session, task_id)

    def _watchdog(self):
        """Self-fencing, silent leaders and max-run: every 20 ms."""
        while not self._exit.wait(0.02):
            now = time.monotonic()
            drop = []
            with self._lock:
                for run in self._runs.values():
                    t = run.task
                    if run.order is None and t.max_run_ms and run.running_for(now) > t.max_run_ms / 1000:
                        run.order = "timed_out"
                        t.suspended.clear()
                        t.stop_reason = f"ran longer than its max-run-ms of {t.max_run_ms} ms"
                        t.stopping.set()
                    if run.order == "preempted" and t.preempt_deadline is not None and now > t.preempt_deadline:
                        run.order = "stopped"
                session = self._session
                if session is not None and session.overdue():
                    log.info("agent %s: a heartbeat went unanswered for 2 intervals: dropping the session", self.id)
                    session.silent = True
                    drop.append(session)
                if self._lease_until is not None and now >= self._lease_until:
                    # Parked ones never started: not named again, the leader
                    # grants them anew without counting an attempt.
                    for key in self._parked:
                        self._never_again(key)
                    self._parked.clear()
                    live = [k for k, r in self._runs.items() if r.reports()]
                    for key in live:
                        run = self._runs[key]
                        run.order = "fenced"
                        run.task.stop_reason = "fenced: the agent's lease was not renewed in time"
                        run.task.stopping.set()
                        self._never_again(key)
                        self._fenced.append(key)
                        entry = self._checkpoints.get(key[0])
                        if entry is not None and entry[1] == key[1]:
                            del self._checkpoints[key[0]]
                    if live:
                        log.warning("agent %s: lease expired: fenced %d task(s); registering again",
                                    self.id, len(live))
                    # A registered session on a lapsed lease goes (the next
                    # Registered starts a new lease), and so does a Register
                    # in flight that named what was just fenced as running.
                    if session is not None:
                        drop.append(session)
                    current = self._current
                    if current is not None and current is not session and current.named & set(live):
                        drop.append(current)
            for s in drop:
                s.close()


class _Session:
    """One Agents.Session call: the Register, then messages both ways."""

    def __init__(self, agent, addr):
        self.agent = agent
        self.addr = addr
        self.out = queue.Queue()
        self.call = None
        self.opened = None
        self.registered = False
        self.ttl = None
        self.interval = None
        self.closed = threading.Event()
        self.closed_here = False  # this side closed it
        self.silent = False  # closed here for a heartbeat left unanswered
        self.named = set()  # the (task, token) pairs its Register named as running
        self._sent = {}      # seq -> monotonic send time, unacknowledged
        self._lock = threading.Lock()

    def _requests(self):
        while True:
            m = self.out.get()
            if m is None:
                return
            yield m

    def send(self, m):
        if not self.closed.is_set():
            self.out.put(m)

    def sent(self, seq):
        with self._lock:
            self._sent[seq] = time.monotonic()

    def acked(self, seq):
        """The send time of heartbeat `seq` (older unanswered ones forgotten)."""
        with self._lock:
            at = self._sent.pop(seq, None)
            for s in [s for s in self._sent if s < seq]:
                del self._sent[s]
            return at

    def overdue(self):
        """A heartbeat unanswered for 2 intervals."""
        with self._lock:
            return bool(self._sent) and time.monotonic() - min(self._sent.values()) > 2 * self.interval

    def close(self):
        self.closed_here = True
        self.closed.set()
        self.out.put(None)
        call = self.call
        if call is not None:
            call.cancel()

    def serve(self):
        """Runs the session until it ends: returns when this side closed it,
        raises grpc.RpcError when the server ended it."""
        agent = self.agent
        channel = agent._client._channel(self.addr)
        self.out.put(agent._register(self))
        self.opened = time.monotonic()
        self.call = pb_grpc.AgentsStub(channel).Session(self._requests(), metadata=agent._client._metadata)
        if self.closed.is_set():
            self.call.cancel()  # closed while the call was being made
            return
        timer = threading.Timer(agent._register_timeout(), lambda: self.registered or self.close())
        timer.daemon = True
        timer.start()
        beats = None
        try:
            for m in self.call:
                if not self.registered:
                    if m.WhichOneof("msg") != "registered":
                        raise errors.error(grpc.StatusCode.INTERNAL, "the server's first message was not Registered")
                    self.registered = True
                    timer.cancel()
                    agent._on_registered(self, m.registered)
                    if self.closed.is_set():
                        return
                    beats = threading.Thread(target=self._beat, name="tidal-agent-heartbeat", daemon=True)
                    beats.start()
                    continue
                agent._on_message(self, m)
        except grpc.RpcError:
            if self.closed.is_set():
                return  # this side closed it
            raise
        finally:
            timer.cancel()
            self.closed.set()
            self.out.put(None)

    def _beat(self):
        while not self.closed.wait(self.interval):
            self.agent._heartbeat(self)
