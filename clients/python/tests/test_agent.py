"""tidal.Agent, and the agent protocol (proto/tidal.proto, Agents.Session) driven from Python, against a real cluster.

Needs TIDAL_AGENT_TOKEN (a token of the agent role) and, when the cluster
runs TLS, TIDAL_AGENT_TLS_DIR (an agent certificate of its DC), and
TIDAL_DC; crates/tidal-cli/tests/it/python_client.rs sets them.
"""

import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

import tidal
from tidal._proto import tidal_pb2 as pb
from tidal._proto import tidal_pb2_grpc as pb_grpc

WAIT_S = 30


def unique(prefix):
    return f"{prefix}-{secrets.token_hex(4)}"


def agent_env():
    if not os.environ.get("TIDAL_ENDPOINTS"):
        pytest.fail("TIDAL_ENDPOINTS is not set: run these tests through `cargo nextest run -p tidal-cli python_client`")
    return dict(
        endpoints=os.environ["TIDAL_ENDPOINTS"],
        token=os.environ.get("TIDAL_AGENT_TOKEN") or None,
        tls=os.environ.get("TIDAL_AGENT_TLS_DIR") or None,
        dc=os.environ.get("TIDAL_DC", "dc1"),
    )


@pytest.fixture
def agents():
    """Makes agents (`agents(types..., **kwargs)` -> (agent, type)); each runs
    one fresh task type of its own, and is stopped at the end of the test."""
    made = []

    def make(**kwargs):
        env = agent_env()
        env.update(kwargs)
        a = tidal.Agent(env.pop("endpoints"), id=env.pop("id", unique("py-agent")), **env)
        made.append(a)
        return a

    yield make
    for a in made:
        a.stop(timeout=WAIT_S)  # drains and deregisters what still runs


def until(what, check, timeout=WAIT_S):
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_function_runs_a_task_and_its_result_is_reported(client, agents):
    a = agents()
    kind = unique("py-run")
    release = threading.Event()
    seen = {}

    @a.task(kind)
    def run(task):
        seen.update(id=task.id, token=task.token, attempt=task.attempt, payload=task.payload,
                    agent=task.agent_id, type=task.type, gpu_ids=task.gpu_ids)
        release.wait(WAIT_S)
        return {"prompt": task.payload.decode()}

    a.start()
    assert a.registered.wait(WAIT_S)
    tid = client.submit(type=kind, payload=b"a red fox")
    # TaskStarted made it RUNNING while the function runs.
    until("RUNNING", lambda: client.get(tid).state == "running")
    # watch: each state once, in order, ending with the final one.
    watch = client.watch(tid, timeout=WAIT_S, poll=0.02)
    assert next(watch).state == "running"
    release.set()
    states = [t.state.value for t in watch]
    assert states[-1] == "succeeded" and set(states) <= {"running", "succeeded"}, states
    task = client.wait(tid, timeout=WAIT_S)
    assert task.state == "succeeded"
    assert task.result == b'{"prompt": "a red fox"}'
    assert (task.agent, task.token, task.attempt, task.exit_code) == (a.id, seen["token"], 1, 0)
    assert seen == dict(id=tid, token=task.token, attempt=1, payload=b"a red fox", agent=a.id, type=kind, gpu_ids=[])
    # The agent is listed with what it offers.
    [info] = [x for x in client.agents() if x.id == a.id]
    assert (info.state, info.connected, info.task_types, info.slots) == ("ready", True, [kind], 1)


def test_a_failed_attempt_is_retried_under_a_higher_token(client, agents):
    a = agents()
    kind = unique("py-retry")
    tokens = []

    @a.task(kind)
    def run(task):
        tokens.append(task.token)
        if task.attempt == 1:
            raise tidal.TaskFailed("the first attempt fails", exit_code=7)
        return "second"

    a.start()
    tid = client.submit(type=kind, payload=b"x", max_attempts=2, retry_backoff_base_ms=1)
    task = client.wait(tid, timeout=WAIT_S)
    assert (task.state, task.attempt, task.result) == ("succeeded", 2, b"second")
    assert len(tokens) == 2 and tokens[0] < tokens[1] == task.token
    first = task.raw.attempts[0]
    assert (first.exit_code, first.token) == (7, tokens[0])
    assert "the first attempt fails" in first.error


def test_an_exception_fails_the_attempt_with_its_traceback(client, agents):
    a = agents()
    kind = unique("py-raise")

    @a.task(kind)
    def run(task):
        raise ValueError("boom")

    a.start()
    task = client.wait(client.submit(type=kind, max_attempts=1), timeout=WAIT_S)
    assert (task.state, task.exit_code) == ("failed", 1)
    assert "ValueError: boom" in task.error and "Traceback" in task.error


def completions_sent(monkeypatch):
    """Records the (task, token) of every TaskCompleted any agent sends."""
    sent = []
    send = tidal.agent._Session.send

    def recording(session, m):
        if m.WhichOneof("msg") == "completed":
            sent.append((m.completed.task_id, m.completed.token))
        send(session, m)

    monkeypatch.setattr(tidal.agent._Session, "send", recording)
    return sent


def test_cancel_reaches_the_function_and_nothing_is_reported(client, agents, monkeypatch):
    sent = completions_sent(monkeypatch)
    a = agents()
    kind = unique("py-cancel")
    started, ended = threading.Event(), threading.Event()
    reasons = []

    @a.task(kind)
    def run(task):
        started.set()
        while not task.sleep(0.02):
            pass
        reasons.append(task.stop_reason)
        ended.set()
        return b"too late"

    a.start()
    tid = client.submit(type=kind)
    assert started.wait(WAIT_S)
    assert client.cancel(tid).state == "cancelled"
    assert ended.wait(WAIT_S)
    assert reasons[0].startswith("cancelled")
    until("the run gone", lambda: not a._runs)
    task = client.get(tid)
    assert (task.state, task.result) == ("cancelled", b"")
    # The function's late result was never sent.
    assert (tid, task.token) not in sent and not a._unacked


def test_a_checkpoint_is_handed_to_the_next_attempt(client, agents):
    a = agents()
    kind = unique("py-ckpt")
    seen = []

    @a.task(kind)
    def run(task):
        seen.append(task.checkpoint)
        if task.attempt == 1:
            task.save_checkpoint(b"step-3")
            # Fail once the leader has the checkpoint.
            until("the checkpoint acked", lambda: client.get(task.id).raw.checkpoint_bytes == 6)
            raise tidal.TaskFailed("crash after a checkpoint")
        return task.checkpoint

    a.start()
    tid = client.submit(type=kind, max_attempts=2, retry_backoff_base_ms=1)
    task = client.wait(tid, timeout=WAIT_S)
    assert (task.state, task.attempt, task.result) == ("succeeded", 2, b"step-3")
    assert seen == [b"", b"step-3"]


def test_an_agent_that_cannot_renew_its_lease_fences_itself(client, agents, monkeypatch):
    # A lease of 2 s (the server's is 10 s); its heartbeats stop while the
    # first attempt runs, so the agent fences itself: the function is told
    # to stop, its result is never reported, the agent registers again
    # naming the run as fenced, and the leader grants the task anew under a
    # higher token (a new attempt).
    sent = completions_sent(monkeypatch)
    a = agents(ttl=2.0)
    kind = unique("py-fence")
    beat = a._heartbeat
    runs = []

    @a.task(kind)
    def run(task):
        runs.append(task.token)
        if len(runs) == 1:
            a._heartbeat = lambda session: None  # the heartbeats go silent
            while not task.sleep(0.02):
                pass
            runs.append(task.stop_reason)
            a._heartbeat = beat
            return b"from the fenced run"
        return b"from the new grant"

    a.start()
    tid = client.submit(type=kind, max_attempts=3)
    task = client.wait(tid, timeout=WAIT_S)
    assert task.state == "succeeded", task
    assert task.result == b"from the new grant"
    # (A machine too loaded to renew a 2 s lease may fence a later run too.)
    first, reason = runs[0], runs[1]
    assert reason.startswith("fenced")
    assert task.token == runs[-1] > first
    assert task.attempt >= 2
    assert (tid, first) in a._fenced
    assert (tid, first) not in sent, "a fenced run reported its result"
    assert a.sessions >= 2


def test_the_agent_follows_a_new_leader_and_keeps_its_running_task(client, agents):
    a = agents()
    kind = unique("py-failover")
    started, release = threading.Event(), threading.Event()

    @a.task(kind)
    def run(task):
        started.set()
        release.wait(WAIT_S)
        return b"survived a leader change"

    a.start()
    tid = client.submit(type=kind)
    assert started.wait(WAIT_S)
    token = client.get(tid).token
    sessions = a.sessions
    # Hand the leadership to another voter (admin): the old leader ends the
    # session with a hint, and the agent registers with the new one, naming
    # the task it runs, so the task keeps its assignment.
    members = client._call(pb_grpc.ClusterStub, "Members", pb.MembersRequest())
    target = next(m for m in members.members if m.voter and m.id != members.leader_id)
    client._call(pb_grpc.ClusterStub, "TransferLeader", pb.TransferLeaderRequest(id=target.id))
    until("the new leader", lambda: client.status(target.addr).leader_id == target.id)
    until("a session with the new leader", lambda: a.sessions > sessions and a._session is not None
          and a._session.addr == target.addr)
    release.set()
    task = client.wait(tid, timeout=WAIT_S)
    assert (task.state, task.result, task.token, task.attempt) == ("succeeded", b"survived a leader change", token, 1)


def test_an_agent_whose_leader_is_paused_registers_with_the_next(client, agents):
    # The leader's process is paused (SIGSTOP): the agent's heartbeats go
    # unanswered, it drops the session, and registers with the leader the
    # other two elect, naming its running task. Its task keeps its
    # assignment if that happened within the agent's lease; on a machine
    # too slow for that the agent fenced itself and the task was granted
    # again under a higher token. Either way it ends SUCCEEDED, once.
    pids = dict(p.split("=") for p in os.environ.get("TIDAL_SERVER_PIDS", "").split(",") if p)
    if not pids:
        pytest.skip("TIDAL_SERVER_PIDS is not set (HOST:PORT=PID of each server)")
    a = agents()
    kind = unique("py-paused")
    started, release = threading.Event(), threading.Event()
    runs = []

    @a.task(kind)
    def run(task):
        runs.append((task.token, task.checkpoint))
        if len(runs) > 1:
            return task.checkpoint
        started.set()
        release.wait(WAIT_S)
        # While the leader is paused: a checkpoint, then a failure. Both
        # wait for the next session, which sends them in that order.
        task.save_checkpoint(b"saved during the failover")
        raise tidal.TaskFailed("failed during the failover")

    a.start()
    tid = client.submit(type=kind, max_attempts=3)
    assert started.wait(WAIT_S)
    token = client.get(tid).token
    leader = client.status().leader_addr
    others = [e for e in client.endpoints if e != leader]
    os.kill(int(pids[leader]), signal.SIGSTOP)
    release.set()
    try:
        def new_leader():
            for e in others:
                try:
                    addr = client.status(e).leader_addr
                except tidal.TidalError:
                    continue
                if addr and addr != leader:
                    return addr
        elected = until("a new leader", new_leader)
        until("a session with the new leader",
              lambda: a._session is not None and a._session.addr == elected)
    finally:
        os.kill(int(pids[leader]), signal.SIGCONT)
    task = client.wait(tid, timeout=WAIT_S)
    assert task.state == "succeeded", task
    assert runs[0][0] == token and task.token > token
    if (tid, token) not in a._fenced:
        # The first attempt's checkpoint and failure reached the new leader.
        assert task.attempt == 2 and task.result == b"saved during the failover"
        assert task.raw.attempts[0].error.startswith("failed during the failover")


def test_an_assignment_waits_for_the_slot_of_a_cancelled_run(client, agents):
    # The cancelled function still holds the only slot (a Python function
    # stops when it chooses) while the leader counts it free: its next
    # assignment waits for that slot (not handed back, which would have the
    # leader grant it straight back again and again), then runs.
    a = agents(slots=1)
    kind = unique("py-full")
    started, hold = threading.Event(), threading.Event()

    @a.task(kind)
    def run(task):
        if task.payload == b"slow to stop":
            started.set()
            hold.wait(WAIT_S)
        return b"ran"

    a.start()
    first = client.submit(type=kind, payload=b"slow to stop")
    assert started.wait(WAIT_S)
    client.cancel(first)
    second = client.submit(type=kind, payload=b"next", max_attempts=1)
    until("the assignment waiting", lambda: a.parked_total >= 1)
    assert client.get(second).state == "assigned"
    hold.set()
    task = client.wait(second, timeout=WAIT_S)
    assert (task.state, task.result, task.attempt) == ("succeeded", b"ran", 1)
    assert a.handed_back == 0


def test_an_agent_given_a_follower_reaches_the_leader(client, agents):
    leader = client.status().leader_addr
    follower = next(e for e in client.endpoints if e != leader)
    a = agents(endpoints=[follower])
    kind = unique("py-follow")

    @a.task(kind)
    def run(task):
        return b"ok"

    a.start()
    assert client.wait(client.submit(type=kind), timeout=WAIT_S).result == b"ok"


def test_stop_drains_waits_for_the_running_task_and_deregisters(client, agents):
    a = agents()
    kind = unique("py-drain")
    started, release = threading.Event(), threading.Event()

    @a.task(kind)
    def run(task):
        started.set()
        release.wait(WAIT_S)
        return b"finished while draining"

    a.start()
    tid = client.submit(type=kind)
    assert started.wait(WAIT_S)
    stopper = threading.Thread(target=a.stop, kwargs=dict(timeout=WAIT_S))
    stopper.start()
    until("DRAINING", lambda: [x.state for x in client.agents() if x.id == a.id] == ["draining"])
    release.set()
    stopper.join(WAIT_S)
    assert not stopper.is_alive()
    assert client.wait(tid, timeout=WAIT_S).result == b"finished while draining"
    # Its sessions ended before it deregistered: it cannot register again.
    assert a._loop_done.is_set() and a._current.closed.is_set()
    assert a.id not in [x.id for x in client.agents()]


def test_sigterm_drains_and_deregisters_before_the_process_exits(client):
    env = agent_env()
    name, kind = unique("py-sigterm"), unique("py-sigterm")
    script = f"""
import threading, tidal
a = tidal.Agent({env['endpoints']!r}, id={name!r}, dc={env['dc']!r}, token={env['token']!r}, tls={env['tls']!r})
a.task({kind!r})(lambda task: b"")
threading.Thread(target=lambda: a.registered.wait(60) and print("registered", flush=True), daemon=True).start()
a.run()
print("run returned", flush=True)
"""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=package))
    try:
        assert p.stdout.readline().strip() == "registered"
        assert name in [x.id for x in client.agents()]
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=WAIT_S)
    finally:
        p.kill()
    assert p.returncode == 0 and "run returned" in out
    # It deregistered before the process ended.
    assert name not in [x.id for x in client.agents()]


def test_a_second_process_under_the_same_id_displaces_the_first(client, agents):
    name = unique("py-twice")
    first, second = agents(id=name), agents(id=name)
    for x in (first, second):
        x.task(unique("py-twice"))(lambda task: b"")
    first.start()
    assert first.registered.wait(WAIT_S)
    second.start()
    assert second.registered.wait(WAIT_S)
    # The first learns it was displaced (ABORTED, tidal-agent-displaced) and stops.
    first._thread.join(WAIT_S)
    assert not first._thread.is_alive()
    assert isinstance(first._error, tidal.AgentStopped)
    assert first._error.code == grpc.StatusCode.ABORTED
    assert second.instance in first._error.message


# ------------------------------------------------------------ the wire protocol


class RawSession:
    """An Agents.Session driven message by message."""

    def __init__(self, endpoint):
        env = agent_env()
        self.client = tidal.Client([endpoint], token=env["token"], tls=env["tls"])
        self.out = queue.Queue()
        self.call = pb_grpc.AgentsStub(self.client._channel(self.client.endpoints[0])).Session(
            iter(self.out.get, None), metadata=self.client._metadata, timeout=WAIT_S)

    def send(self, **msg):
        self.out.put(pb.AgentMessage(**msg))

    def recv(self, kind=None):
        """The next server message (skipping heartbeat acks unless asked for)."""
        while True:
            m = next(self.call)
            if kind is None or m.WhichOneof("msg") == kind:
                return m

    def error(self):
        """The status that ended the session."""
        with pytest.raises(grpc.RpcError) as e:
            while True:
                next(self.call)
        return e.value

    def close(self):
        self.out.put(None)
        self.call.cancel()
        self.client.close()


def spec(agent_id, kind, dc=None):
    return pb.AgentSpec(id=agent_id, dc=dc or agent_env()["dc"], task_types=[kind], slots=1)


def test_protocol_registered_then_heartbeat_acks_and_assignments(client):
    leader = client.status().leader_addr
    s = RawSession(leader)
    try:
        agent_id, kind = unique("py-raw"), unique("py-raw")
        s.send(register=pb.Register(spec=spec(agent_id, kind), instance="raw-1"))
        r = s.recv().registered
        assert r.agent_id == agent_id and r.leader_id > 0
        assert r.server_ttl_ms == 10000 and 0 < r.heartbeat_interval_ms <= r.server_ttl_ms // 3
        s.send(heartbeat=pb.Heartbeat(seq=41, free_slots=1))
        assert s.recv("heartbeat_ack").heartbeat_ack.seq == 41
        # A report about an assignment this session does not hold is refused.
        s.send(completed=pb.TaskCompleted(task_id="t0000000001", token=1, success=True))
        ack = s.recv("completion_ack").completion_ack
        assert (ack.task_id, ack.token, ack.accepted) == ("t0000000001", 1, False) and ack.reason
        # An assignment: started, completed, acknowledged.
        tid = client.submit(type=kind, payload=b"raw")
        a = s.recv("assignment").assignment
        assert (a.task_id, a.attempt, a.spec.payload, a.spec.task_type) == (tid, 1, b"raw", kind)
        assert a.token > 0
        s.send(started=pb.TaskStarted(task_id=tid, token=a.token))
        until("RUNNING", lambda: client.get(tid).state == "running")
        s.send(completed=pb.TaskCompleted(task_id=tid, token=a.token, success=True, result=b"done"))
        ack = s.recv("completion_ack").completion_ack
        assert (ack.task_id, ack.token, ack.accepted) == (tid, a.token, True)
        task = client.get(tid)
        assert (task.state, task.result, task.token) == ("succeeded", b"done", a.token)
        # A second completion of the same attempt is refused.
        s.send(completed=pb.TaskCompleted(task_id=tid, token=a.token, success=True))
        assert s.recv("completion_ack").completion_ack.accepted is False
    finally:
        s.close()
    client._call(pb_grpc.AgentsStub, "Deregister", pb.DeregisterAgentRequest(agent_id=agent_id))


def test_protocol_the_first_message_must_be_a_register(client):
    s = RawSession(client.status().leader_addr)
    try:
        s.send(heartbeat=pb.Heartbeat(seq=1))
        e = s.error()
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    finally:
        s.close()
    s = RawSession(client.status().leader_addr)
    try:
        s.send(register=pb.Register(spec=spec(unique("py-raw"), "t2i", dc="no-such-dc")))
        e = s.error()
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "dc" in e.details(), e
    finally:
        s.close()


def test_protocol_a_message_with_nothing_set_ends_the_session(client):
    agent_id = unique("py-raw")
    s = RawSession(client.status().leader_addr)
    try:
        s.send(register=pb.Register(spec=spec(agent_id, "t2i")))
        s.recv("registered")
        s.out.put(pb.AgentMessage())
        e = s.error()
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        for kind in ("register", "heartbeat", "started", "completed", "checkpoint"):
            assert kind in e.details(), e
    finally:
        s.close()
    client._call(pb_grpc.AgentsStub, "Deregister", pb.DeregisterAgentRequest(agent_id=agent_id))


def test_protocol_a_follower_answers_with_the_leader_hint(client):
    status = client.status()
    follower = next(e for e in client.endpoints if e != status.leader_addr)
    s = RawSession(follower)
    try:
        s.send(register=pb.Register(spec=spec(unique("py-raw"), "t2i")))
        e = s.error()
        trailers = dict(e.trailing_metadata() or ())
        assert e.code() == grpc.StatusCode.UNAVAILABLE
        assert trailers["tidal-leader-addr"] == status.leader_addr
        assert trailers["tidal-leader-id"] == str(status.leader_id)
        # Said before anything was proposed: safe to send anything again.
        assert trailers["tidal-not-proposed"] == "1"
    finally:
        s.close()


def test_protocol_a_new_instance_displaces_the_old_session(client):
    leader = client.status().leader_addr
    agent_id = unique("py-raw")
    old, new = RawSession(leader), RawSession(leader)
    try:
        old.send(register=pb.Register(spec=spec(agent_id, "t2i"), instance="old"))
        old.recv("registered")
        new.send(register=pb.Register(spec=spec(agent_id, "t2i"), instance="new"))
        assert new.recv("registered").registered.displaced_instance == "old"
        e = old.error()
        assert e.code() == grpc.StatusCode.ABORTED
        assert dict(e.trailing_metadata() or ())["tidal-agent-displaced"] == "new"
    finally:
        old.close()
        new.close()
    client._call(pb_grpc.AgentsStub, "Deregister", pb.DeregisterAgentRequest(agent_id=agent_id))
