"""The client: endpoints, TLS and token, leader hints and retries (proto/tidal.proto, "How to talk to tidal")."""

import dataclasses
import enum
import os
import random
import secrets
import threading
import time

import grpc

from . import errors
from ._proto import tidal_pb2 as pb
from ._proto import tidal_pb2_grpc as pb_grpc

LEADER_ID_KEY = "tidal-leader-id"
LEADER_ADDR_KEY = "tidal-leader-addr"

# The retry policy of tidal's Rust client (crates/tidal-client/src/retry.rs).
RETRY_FOR_S = 15.0
CALL_TIMEOUT_S = 10.0
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 1.0
REDIRECTS_BEFORE_BACKOFF = 3
UNREACHABLE_FOR_S = 0.5
ASK_AGAIN_S = 0.02
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# How grpcio words a TLS handshake refused for a certificate (final, as in
# tidal's client): ours not signed by the server's CA or missing, theirs
# not signed by ca.pem.
_TLS_REFUSALS = ("TSI_DATA_CORRUPTED", "CERTIFICATE_VERIFY_FAILED", "Ssl handshake failed", "Handshake failed")


class TaskState(str, enum.Enum):
    """Where a task is; compares equal to its lowercase name ("succeeded")."""

    UNSPECIFIED = "unspecified"
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FORWARDED = "forwarded"

    @property
    def final(self):
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)

    def __str__(self):
        return self.value


_STATE_FROM_PB = {
    pb.TASK_STATE_UNSPECIFIED: TaskState.UNSPECIFIED,
    pb.PENDING: TaskState.PENDING,
    pb.ASSIGNED: TaskState.ASSIGNED,
    pb.RUNNING: TaskState.RUNNING,
    pb.SUCCEEDED: TaskState.SUCCEEDED,
    pb.FAILED: TaskState.FAILED,
    pb.CANCELLED: TaskState.CANCELLED,
    pb.FORWARDED: TaskState.FORWARDED,
}
_STATE_TO_PB = {v: k for k, v in _STATE_FROM_PB.items()}


class Priority(str, enum.Enum):
    """A task's class: online before nearline before offline."""

    ONLINE = "online"
    NEARLINE = "nearline"
    OFFLINE = "offline"

    def __str__(self):
        return self.value


_PRIORITY_TO_PB = {Priority.ONLINE: pb.ONLINE, Priority.NEARLINE: pb.NEARLINE, Priority.OFFLINE: pb.OFFLINE}
_PRIORITY_FROM_PB = {v: k for k, v in _PRIORITY_TO_PB.items()}


@dataclasses.dataclass
class Task:
    """A task as the server reported it; `raw` is the tidal.v1.Task message."""

    id: str
    state: TaskState
    type: str
    queue: str
    key: str
    priority: Priority
    payload: bytes
    agent: str
    token: int
    attempt: int
    result: bytes
    error: str
    exit_code: int
    created_ms: int
    updated_ms: int
    attempts_left: int
    dead: bool
    waiting: str
    raw: object = dataclasses.field(repr=False)

    @classmethod
    def from_pb(cls, t):
        return cls(
            id=t.id,
            state=_STATE_FROM_PB.get(t.state, TaskState.UNSPECIFIED),
            type=t.spec.task_type,
            queue=t.spec.queue,
            key=t.spec.idempotency_key,
            priority=_PRIORITY_FROM_PB.get(t.spec.priority, Priority.NEARLINE),
            payload=t.spec.payload,
            agent=t.agent,
            token=t.token,
            attempt=t.attempt,
            result=t.result,
            error=t.error,
            exit_code=t.exit_code,
            created_ms=t.created_ms,
            updated_ms=t.updated_ms,
            attempts_left=t.attempts_left,
            dead=t.dead,
            waiting=t.waiting,
            raw=t,
        )


@dataclasses.dataclass
class Submitted:
    """One item of `submit_many`: its task id (`existed` when its key was
    already bound to it), or the error that refused it."""

    id: str
    existed: bool
    error: object  # a TidalError, or None


@dataclasses.dataclass
class Queue:
    name: str
    weight: int
    strategy: str
    pending: int
    spread_key: str

    @classmethod
    def from_pb(cls, q):
        return cls(q.name, q.weight, q.strategy or "least-loaded", q.pending, q.spread_key)


@dataclasses.dataclass
class AgentInfo:
    """An agent as the leader knows it; `raw` is the tidal.v1.AgentInfo message."""

    id: str
    state: str           # ready, draining, down, drained
    connected: bool
    task_types: list
    slots: int
    slots_in_use: int
    in_flight: int
    labels: dict
    raw: object = dataclasses.field(repr=False)

    @classmethod
    def from_pb(cls, a):
        state = pb.AgentState.Name(a.state).lower() if a.state else "unspecified"
        return cls(a.spec.id, state, a.connected, list(a.spec.task_types), a.spec.slots,
                   a.slots_in_use, a.in_flight, dict(a.spec.labels), a)


# On a "not the leader" answer given before the request was proposed.
NOT_PROPOSED_KEY = "tidal-not-proposed"
# How grpcio words a connection that was never made (nothing was sent).
_NOT_CONNECTED = ("failed to connect to all addresses", "Connection refused", "connection refused")


def _never_applied(code, message, trailers):
    """Whether a failed attempt certainly was not applied: the server said
    it is not the leader before proposing anything (`tidal-not-proposed`),
    or no connection was made. A lost connection, a deadline or another
    UNAVAILABLE (a "not the leader" without the mark included) may follow
    an applied request."""
    if code != grpc.StatusCode.UNAVAILABLE:
        return False
    return NOT_PROPOSED_KEY in trailers or any(m in message for m in _NOT_CONNECTED)


def _normalize(raw):
    """`HOST:PORT` of an endpoint (an http:// or https:// prefix stripped), and whether it asked for TLS."""
    if not isinstance(raw, str):
        raise errors.error(grpc.StatusCode.INVALID_ARGUMENT, f"invalid endpoint {raw!r}: not a string")
    s = raw.strip()
    tls = s.startswith("https://")
    for scheme in ("https://", "http://"):
        if s.startswith(scheme):
            s = s[len(scheme):]
    s = s.rstrip("/")
    host, _, port = s.rpartition(":")
    bad = None
    if not s:
        bad = "empty"
    elif any(c.isspace() or c in "/?#@" for c in s):
        bad = "unexpected character"
    elif not host:
        bad = "missing host or port"
    elif not port.isdigit() or not 1 <= int(port) <= 65535:
        bad = "port must be 1..=65535"
    if bad:
        raise errors.error(grpc.StatusCode.INVALID_ARGUMENT, f"invalid endpoint {raw!r}: {bad} (expected HOST:PORT)")
    return s, tls


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise errors.error(grpc.StatusCode.INVALID_ARGUMENT, f"cannot read the TLS {what} {path}: {e.strerror}") from None


def _credentials(tls):
    """grpc channel credentials from a TLS directory (ca.pem, cert.pem,
    key.pem) or a dict with the paths `ca`, `cert` and `key`."""
    if isinstance(tls, (str, os.PathLike)):
        d = os.fspath(tls)
        if not os.path.isdir(d):
            raise errors.error(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"TLS directory {d} does not exist (it needs ca.pem, cert.pem and key.pem)",
            )
        tls = {k: os.path.join(d, f"{k}.pem") for k in ("ca", "cert", "key")}
    if not isinstance(tls, dict) or set(tls) - {"ca", "cert", "key"} or "ca" not in tls:
        raise errors.error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "tls must be a directory with ca.pem, cert.pem and key.pem, or a dict of the paths ca, cert and key",
        )
    if ("cert" in tls) != ("key" in tls):
        raise errors.error(grpc.StatusCode.INVALID_ARGUMENT, "tls needs both cert and key, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls["ca"], "CA"),
        private_key=_read(tls["key"], "key") if "key" in tls else None,
        certificate_chain=_read(tls["cert"], "certificate") if "cert" in tls else None,
    )


def _enum(value, table, cls, field):
    if value is None:
        return 0
    try:
        return table[cls(value.lower() if isinstance(value, str) else value)]
    except (ValueError, KeyError):
        names = ", ".join(m.value for m in table)
        raise errors.error(grpc.StatusCode.INVALID_ARGUMENT, f"invalid {field} {value!r}: one of {names}") from None


def _spec(type, payload=b"", key=None, queue="", priority=None, models=(), pipeline="", **fields):
    """A tidal.v1.TaskSpec; a missing key is drawn as tidal's client does (`auto-` + 32 hex)."""
    if isinstance(payload, str):
        payload = payload.encode()
    spec = pb.TaskSpec(
        task_type=type,
        payload=payload,
        idempotency_key=key or "auto-" + secrets.token_hex(16),
        queue=queue or "",
        priority=_enum(priority, _PRIORITY_TO_PB, Priority, "priority"),
        models=list(models),
        pipeline=pipeline or "",
    )
    for name, value in fields.items():
        if name not in pb.TaskSpec.DESCRIPTOR.fields_by_name:
            raise errors.error(grpc.StatusCode.INVALID_ARGUMENT, f"unknown task field {name!r}")
        if isinstance(value, (list, tuple)):
            getattr(spec, name).extend(value)
        else:
            setattr(spec, name, value)
    return spec


class Client:
    """A client of one tidal DC.

    endpoints: some of its servers, `HOST:PORT` (any of them will do).
    token: `tdl_...`, sent as `authorization: Bearer` (servers under `--auth tokens`).
    tls: a TLS directory (ca.pem, cert.pem, key.pem, as the CLI's `--tls-dir`)
      or a dict of the paths `ca`, `cert`, `key`; None: plaintext.
    server_name: the name to check the servers' certificates against when it
      is not the host dialled (server certificates carry localhost and 127.0.0.1).
    retry_for / call_timeout: seconds in all / per attempt (15 / 10, as tidal's client).
    """

    def __init__(self, endpoints, token=None, tls=None, server_name=None,
                 retry_for=RETRY_FOR_S, call_timeout=CALL_TIMEOUT_S):
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise errors.error(grpc.StatusCode.INVALID_ARGUMENT, "no endpoints given (expected HOST:PORT)")
        normalized = [_normalize(e) for e in endpoints]
        self._endpoints = []
        for addr, _ in normalized:
            if addr not in self._endpoints:
                self._endpoints.append(addr)
        if tls is None and any(wants for _, wants in normalized):
            raise errors.error(
                grpc.StatusCode.INVALID_ARGUMENT,
                "an https:// endpoint needs tls= (a directory with ca.pem, cert.pem and key.pem)",
            )
        self._creds = _credentials(tls) if tls is not None else None
        self._metadata = ()
        if token:
            token = token.strip()
            self._metadata = (("authorization", f"Bearer {token}"),)
        self._options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 10000),
            ("grpc.keepalive_timeout_ms", 3000),
            ("grpc.enable_retries", 0),
            # Redial a server that was down as soon as this client's own
            # backoff retries it (grpcio would wait up to 120 s), and give
            # up on a connect after 300 ms, as tidal's client does.
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.min_reconnect_backoff_ms", 300),
        ]
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._retry_for = retry_for
        self._call_timeout = call_timeout
        self._channels = {}
        self._lock = threading.Lock()
        self._leader = None
        self._next = 0

    @classmethod
    def from_env(cls, **kwargs):
        """A client from TIDAL_ENDPOINTS, TIDAL_TOKEN and TIDAL_TLS_DIR, as the CLI reads them."""
        endpoints = os.environ.get("TIDAL_ENDPOINTS", "")
        if not endpoints.strip():
            raise errors.error(grpc.StatusCode.INVALID_ARGUMENT, "TIDAL_ENDPOINTS is not set (expected HOST:PORT,...)")
        kwargs.setdefault("token", os.environ.get("TIDAL_TOKEN") or None)
        kwargs.setdefault("tls", os.environ.get("TIDAL_TLS_DIR") or None)
        return cls(endpoints, **kwargs)

    @property
    def endpoints(self):
        """The servers known: those given, and leaders the servers named."""
        return list(self._endpoints)

    @property
    def leader(self):
        """The last server that answered as leader (`HOST:PORT`), or None."""
        return self._leader

    def close(self):
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- calls

    def _channel(self, addr):
        with self._lock:
            ch = self._channels.get(addr)
            if ch is None:
                if self._creds is not None:
                    ch = grpc.secure_channel(addr, self._creds, options=self._options)
                else:
                    ch = grpc.insecure_channel(addr, options=self._options)
                self._channels[addr] = ch
            return ch

    def _call(self, stub_cls, method, request, safe=True):
        """One unary call with leader hints and retries (header: Retries).
        A call that is not `safe` to repeat (Tasks.Cancel, Tasks.Replay,
        Agents.Deregister) is sent again only after an attempt that
        certainly was not applied, as tidal's Rust client does."""
        start = time.monotonic()
        deadline = start + self._retry_for
        addr = self._leader or self._endpoints[self._next % len(self._endpoints)]
        redirects = 0
        backoff = BACKOFF_INITIAL_S
        failed_at = {}  # addr -> when it last failed to answer

        def pause():
            nonlocal backoff
            delay = random.uniform(backoff / 2, backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))

        while True:
            remaining = deadline - time.monotonic()
            fn = getattr(stub_cls(self._channel(addr)), method)
            try:
                answer = fn(request, timeout=max(0.001, min(self._call_timeout, remaining)), metadata=self._metadata)
                self._leader = addr
                return answer
            except grpc.RpcError as e:
                code, message = e.code(), e.details() or ""
                trailers = dict(e.trailing_metadata() or ())
                hint = trailers.get(LEADER_ADDR_KEY)
                leader_id = trailers.get(LEADER_ID_KEY)
                err = errors.error(code, message, int(leader_id) if leader_id else None, hint)
                if code not in _RETRIED:
                    raise err from None
                if not safe and not _never_applied(code, message, trailers):
                    raise errors.error(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the request to {addr} may or may not have been applied (its answer was lost: "
                        f"{message}); it is not sent again, as repeating it is not safe: check before retrying",
                    ) from None
                if code == grpc.StatusCode.UNAVAILABLE and any(m in message for m in _TLS_REFUSALS):
                    # A certificate refused by either side: no retry can mend it.
                    raise errors.error(
                        grpc.StatusCode.UNAUTHENTICATED,
                        f"TLS with {addr} failed: {message} (is ca.pem the cluster's CA, and "
                        "cert.pem a client certificate it issued?)",
                    ) from None
                if time.monotonic() >= deadline:
                    raise errors.error(
                        code, f"gave up after {self._retry_for:g}s: {message}",
                        err.leader_id, err.leader_addr,
                    ) from None
                if code == grpc.StatusCode.UNAVAILABLE and hint:
                    hint, _ = _normalize(hint)
                    if time.monotonic() - failed_at.get(hint, -1e9) < UNREACHABLE_FOR_S:
                        # The named leader could not be reached just now: ask again.
                        time.sleep(ASK_AGAIN_S)
                        continue
                    if hint not in self._endpoints:
                        self._endpoints.append(hint)
                    redirects += 1
                    if redirects > REDIRECTS_BEFORE_BACKOFF:
                        pause()
                    addr = hint
                    continue
                # No hint, a timeout or a connection failure: the next endpoint.
                redirects = 0
                failed_at[addr] = time.monotonic()
                self._leader = None
                i = self._endpoints.index(addr) if addr in self._endpoints else self._next
                self._next = (i + 1) % len(self._endpoints)
                addr = self._endpoints[self._next]
                pause()

    # ---------------------------------------------------------------- tasks

    def submit(self, type, payload=b"", key=None, queue="", priority=None, **fields):
        """Submits one task; returns its id (the existing task's when `key`
        was already bound to the same spec). `fields` are more TaskSpec
        fields (models, pipeline, max_attempts, slots, gpus, tenant, ...).
        Without `key` one is drawn, so retries cannot submit it twice."""
        [item] = self.submit_many([dict(type=type, payload=payload, key=key, queue=queue, priority=priority, **fields)])
        if item.error is not None:
            raise item.error
        return item.id

    def submit_many(self, tasks):
        """Submits a batch (dicts of `submit`'s arguments); returns one
        `Submitted` per task, in order. Items refused as UNAVAILABLE (part
        of a split batch that did not commit) are resent with their keys
        until `retry_for` passes."""
        specs = [t if isinstance(t, pb.TaskSpec) else _spec(**t) for t in tasks]
        results = [None] * len(specs)
        todo = list(range(len(specs)))
        deadline = time.monotonic() + self._retry_for
        while True:
            answer = self._call(pb_grpc.TasksStub, "Submit", pb.SubmitRequest(tasks=[specs[i] for i in todo]))
            again = []
            for i, r in zip(todo, answer.results):
                err = errors.error(r.error.code, r.error.message) if r.HasField("error") else None
                results[i] = Submitted(r.id, r.existed, err)
                if err is not None and err.code == grpc.StatusCode.UNAVAILABLE:
                    again.append(i)
            if not again or time.monotonic() >= deadline:
                return results
            todo = again
            time.sleep(BACKOFF_INITIAL_S)

    def get(self, id, stale=False):
        """The task `id` with its payload and result; NotFound when there is none."""
        return Task.from_pb(self._call(pb_grpc.TasksStub, "Get", pb.GetTaskRequest(id=id, stale=stale)))

    def list_page(self, state=None, queue="", limit=0, after_id="", stale=False, dead=False):
        """One page of tasks in id order (no payloads), and the `after_id` of
        the next page ("" when there is none)."""
        req = pb.ListTasksRequest(
            state=_enum(state, _STATE_TO_PB, TaskState, "state"),
            queue=queue or "", limit=limit, after_id=after_id or "", stale=stale, dead=dead,
        )
        answer = self._call(pb_grpc.TasksStub, "List", req)
        return [Task.from_pb(t) for t in answer.tasks], answer.next_after_id

    def list(self, state=None, queue="", limit=None, stale=False, dead=False):
        """Every task that matches (state, queue, dead letters), in id order,
        at most `limit` of them, following pages."""
        out, after = [], ""
        if limit is not None and limit <= 0:
            return out
        while True:
            page_size = 0 if limit is None else min(1000, limit - len(out))
            page, after = self.list_page(state, queue, page_size, after, stale, dead)
            out.extend(page)
            if not after or (limit is not None and len(out) >= limit):
                return out

    def cancel(self, id):
        """Cancels a task that has not finished; returns it CANCELLED. Not
        safe to repeat (a repeat of an applied cancel is FAILED_PRECONDITION):
        after an attempt whose answer was lost it raises Unavailable saying
        the outcome is unknown (check with `get`)."""
        return Task.from_pb(self._call(pb_grpc.TasksStub, "Cancel", pb.CancelTaskRequest(id=id), safe=False))

    def watch(self, id, timeout=None, poll=0.2):
        """Yields the task each time its state, agent or attempt changes
        (the first read included), until it is SUCCEEDED, FAILED or
        CANCELLED, as `tidal task watch` does: polls every `poll` seconds
        (the API has no push). WaitTimeout after `timeout` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            task = self.get(id)
            now = (task.state, task.agent, task.attempt, task.raw.remote_id)
            if now != last:
                last = now
                yield task
            if task.state.final:
                return
            if end is not None and time.monotonic() + poll > end:
                raise errors.WaitTimeout(f"task {id} is still {task.state} after {timeout:g}s", task)
            time.sleep(poll)

    def wait(self, id, timeout=None, poll=1.0):
        """Polls the task until it is SUCCEEDED, FAILED or CANCELLED (the
        API has no watch) and returns it: every 50 ms at first, doubling to
        `poll` seconds. WaitTimeout (with the last task read) after `timeout`
        seconds; None: no limit."""
        end = None if timeout is None else time.monotonic() + timeout
        delay = BACKOFF_INITIAL_S
        while True:
            task = self.get(id)
            if task.state.final:
                return task
            if end is not None and time.monotonic() + delay > end:
                raise errors.WaitTimeout(f"task {id} is still {task.state} after {timeout:g}s", task)
            time.sleep(delay)
            delay = min(delay * 2, poll)

    # ---------------------------------------------------------------- queues

    def set_queue(self, name, weight=1, strategy="", spread_key=""):
        """Creates a queue or sets its weight and strategy (admin); returns it."""
        req = pb.SetQueueRequest(name=name, weight=weight, strategy=strategy, spread_key=spread_key)
        return Queue.from_pb(self._call(pb_grpc.QueuesStub, "Set", req))

    def list_queues(self):
        """Every queue, by name."""
        return [Queue.from_pb(q) for q in self._call(pb_grpc.QueuesStub, "List", pb.ListQueuesRequest()).queues]

    # ---------------------------------------------------------------- agents

    def agents(self, stale=False):
        """Every registered agent (DOWN ones too, until deregistered), by id (admin)."""
        answer = self._call(pb_grpc.AgentsStub, "List", pb.ListAgentsRequest(stale=stale))
        return [AgentInfo.from_pb(a) for a in answer.agents]

    # ---------------------------------------------------------------- cluster

    def status(self, endpoint=None):
        """Cluster.Status (tidal.v1.StatusResponse) of one server: `endpoint`
        as given, without retries; else of whichever server answers."""
        if endpoint is None:
            return self._call(pb_grpc.ClusterStub, "Status", pb.StatusRequest())
        addr, _ = _normalize(endpoint)
        try:
            return pb_grpc.ClusterStub(self._channel(addr)).Status(
                pb.StatusRequest(), timeout=self._call_timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise errors.error(e.code(), e.details() or "") from None
