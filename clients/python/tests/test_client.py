"""tidal.Client against a real cluster of three servers and an agent of t2i tasks."""

import json
import os
import secrets
import time

import grpc
import pytest

import tidal


def unique(prefix):
    return f"{prefix}-{secrets.token_hex(6)}"


def test_submit_and_wait_returns_the_result(client):
    tid = client.submit(type="t2i", payload=b"a red fox", key=unique("py-wait"))
    task = client.wait(tid, timeout=30)
    assert task.id == tid
    assert task.state == tidal.TaskState.SUCCEEDED
    assert task.state == "succeeded"
    assert task.agent == "agent-1"
    assert task.token > 0 and task.attempt == 1 and task.error == ""
    result = json.loads(task.result)
    assert result["prompt"] == "a red fox"
    assert result["task_id"] == tid


def test_resubmitting_a_key_returns_the_same_task(client):
    key = unique("py-idem")
    first = client.submit(type="t2i", payload=b"same", key=key)
    assert client.submit(type="t2i", payload=b"same", key=key) == first
    [again] = client.submit_many([dict(type="t2i", payload=b"same", key=key)])
    assert (again.id, again.existed, again.error) == (first, True, None)
    # The same key with another spec is refused.
    with pytest.raises(tidal.AlreadyExists) as e:
        client.submit(type="t2i", payload=b"other", key=key)
    assert e.value.code == grpc.StatusCode.ALREADY_EXISTS


def test_get_of_an_unknown_task_is_not_found(client):
    with pytest.raises(tidal.NotFound) as e:
        client.get("t9999999999")
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert "t9999999999" in e.value.message
    with pytest.raises(tidal.InvalidArgument) as e:
        client.get("not an id")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_cancel_a_pending_task(client):
    # No agent runs this type: the task stays pending until cancelled.
    tid = client.submit(type="py-nobody-runs", payload=b"x")
    assert client.get(tid).state == tidal.TaskState.PENDING
    pending = [t.id for t in client.list(state="pending")]
    assert tid in pending
    cancelled = client.cancel(tid)
    assert cancelled.state == tidal.TaskState.CANCELLED
    assert client.wait(tid, timeout=5).state == "cancelled"
    with pytest.raises(tidal.FailedPrecondition) as e:
        client.cancel(tid)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_a_follower_redirects_to_the_leader(client):
    # Every server names the same leader (polled: a follower may learn it a moment late).
    end = time.monotonic() + 10
    while True:
        statuses = {addr: client.status(addr) for addr in client.endpoints}
        leaders = {s.leader_addr for s in statuses.values()}
        if len(leaders) == 1 and "" not in leaders or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert len(leaders) == 1 and "" not in leaders, statuses
    [leader] = leaders
    follower = next(a for a, s in statuses.items() if s.role == "follower")
    # Only the follower is given: the submit reaches the leader through its hint.
    with tidal.Client([follower], token=os.environ.get("TIDAL_TOKEN"), tls=os.environ.get("TIDAL_TLS_DIR")) as c:
        tid = c.submit(type="t2i", payload=b"through a follower")
        assert c.leader == leader
        assert leader in c.endpoints
        assert c.wait(tid, timeout=30).state == "succeeded"


def test_queues_set_and_list(client):
    name = unique("py-q")
    q = client.set_queue(name, weight=5)
    assert (q.name, q.weight) == (name, 5)
    # Idempotent; a new weight replaces the old.
    assert client.set_queue(name, weight=7).weight == 7
    queues = {q.name: q for q in client.list_queues()}
    assert queues[name].weight == 7
    assert "default" in queues
    tid = client.submit(type="t2i", payload=b"queued", queue=name)
    assert client.get(tid).queue == name
    with pytest.raises(tidal.InvalidArgument):
        client.set_queue(name, weight=0)


def test_bad_arguments_are_refused_before_any_call():
    with pytest.raises(tidal.InvalidArgument, match="no endpoints"):
        tidal.Client([])
    with pytest.raises(tidal.InvalidArgument, match="missing host or port"):
        tidal.Client(["localhost"])
    with pytest.raises(tidal.InvalidArgument, match="needs tls"):
        tidal.Client(["https://127.0.0.1:1"])
    with pytest.raises(tidal.InvalidArgument, match="does not exist"):
        tidal.Client(["127.0.0.1:1"], tls="/nonexistent/tidal-tls")


def test_a_refused_certificate_is_final():
    tls_dir = os.environ.get("TIDAL_TLS_DIR")
    if not tls_dir:
        pytest.skip("the cluster runs plaintext")
    endpoints = os.environ["TIDAL_ENDPOINTS"]
    # The cluster's CA but no client certificate: the server refuses the
    # handshake, which no retry mends (well before the 15 s of retries).
    c = tidal.Client(endpoints, token=os.environ.get("TIDAL_TOKEN"), tls={"ca": os.path.join(tls_dir, "ca.pem")})
    with pytest.raises(tidal.Unauthenticated) as e:
        c.list_queues()
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "TLS with" in e.value.message


def test_a_call_without_the_token_is_unauthenticated():
    if not os.environ.get("TIDAL_TOKEN"):
        pytest.skip("the cluster runs without tokens")
    c = tidal.Client(os.environ["TIDAL_ENDPOINTS"], tls=os.environ.get("TIDAL_TLS_DIR"))
    with pytest.raises(tidal.Unauthenticated) as e:
        c.get("t0000000001")
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "token" in e.value.message


def test_cancel_is_repeated_only_after_an_attempt_that_was_not_applied():
    from tidal.client import _never_applied
    u = grpc.StatusCode.UNAVAILABLE
    assert _never_applied(u, "this node is not the leader; no leader is known yet", {"tidal-not-proposed": "1"})
    assert _never_applied(u, "this node is not the leader; the leader is node 2 at 127.0.0.1:7002",
                          {"tidal-leader-addr": "127.0.0.1:7002", "tidal-not-proposed": "1"})
    # Without the mark: the entry may have been in the log and live on elsewhere.
    assert not _never_applied(u, "this node is not the leader; the leader is node 2 at 127.0.0.1:7002",
                              {"tidal-leader-addr": "127.0.0.1:7002"})
    assert _never_applied(u, "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
                             "Failed to connect to remote host: Connection refused", {})
    # Maybe applied: no quorum, a leader that stepped down before the entry
    # committed, a lost connection, a deadline.
    assert not _never_applied(u, "cannot confirm leadership", {})
    assert not _never_applied(u, "Socket closed", {})
    assert not _never_applied(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", {})
