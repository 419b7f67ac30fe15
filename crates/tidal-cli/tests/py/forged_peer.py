"""A gRPC client that is not tidal's, written from proto/ alone, plays forged peer traffic against a cluster and reports every answer as JSON lines.

Usage: forged_peer.py PROTO_DIR NODES_JSON

NODES_JSON is a list of {"id": N, "public": "HOST:PORT", "peer": "HOST:PORT"}.
The stubs are generated from PROTO_DIR into a temporary directory at start
(grpcio-tools), so nothing generated is kept. Lines on stdout, one JSON
object each:

1. {"phase": "control", ...}: Cluster/Status on each public port (this
   client works: the node answers it).
2. {"phase": "attacks", "calls": [...]}: every Raft RPC (Removed naming
   each voter, HoldElections, Campaign, Vote, AppendEntries, PreVote,
   InstallSnapshot, Hello) and Dcs/Exchange, to each node's peer port and
   public port, each call with its status code name and message.
3. {"phase": "flooding"}: a thread now sends HoldElections{40000 ms} to
   every peer and public port every 200 ms. Commands on stdin, one a line:
   "count" answers {"phase": "count", "rounds": N}; "stop" ends the flood
   and answers {"phase": "flood", "rounds": N, "codes": {...}}, the count
   of each status code per node and port, then the script exits.
"""

import json
import os
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

FLOOD_EVERY_S = 0.2
TIMEOUT_S = 5.0
FLOOD_TIMEOUT_S = 1.0


def generate(proto_dir, out_dir):
    """Generates the Python stubs of every .proto file in proto_dir."""
    protos = sorted(f for f in os.listdir(proto_dir) if f.endswith(".proto"))
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", "-I", proto_dir, "-I", include,
            "--python_out", out_dir, "--grpc_python_out", out_dir] + protos
    if protoc.main(args) != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {protos} in {proto_dir}")
    sys.path.insert(0, out_dir)


def emit(obj):
    print(json.dumps(obj), flush=True)


def call(fn, request, timeout):
    """Makes one unary call; returns (status code name, message)."""
    try:
        fn(request, timeout=timeout)
        return "OK", ""
    except grpc.RpcError as e:
        return e.code().name, e.details() or ""


def main():
    proto_dir, nodes = sys.argv[1], json.loads(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="tidal-py-stubs-") as out:
        generate(proto_dir, out)
        run(nodes)


def run(nodes):
    import raft_pb2
    import raft_pb2_grpc
    import tidal_pb2
    import tidal_pb2_grpc

    channels = {}

    def channel(addr):
        if addr not in channels:
            channels[addr] = grpc.insecure_channel(addr)
        return channels[addr]

    def raft(addr):
        return raft_pb2_grpc.RaftStub(channel(addr))

    ids = [n["id"] for n in nodes]

    control = []
    for n in nodes:
        stub = tidal_pb2_grpc.ClusterStub(channel(n["public"]))
        code, msg = call(stub.Status, tidal_pb2.StatusRequest(), TIMEOUT_S)
        control.append({"node": n["id"], "port": "public", "rpc": "Cluster/Status",
                        "code": code, "message": msg})
    emit({"phase": "control", "calls": control})

    # Bytes no tidal server would send; the peer plane refuses them before
    # anything decodes them.
    junk = raft_pb2.RaftPayload(data=b"\x01\x02\x03\x04" * 8, format=2)
    calls = []
    for n in nodes:
        for port in ("peer", "public"):
            addr = n[port]
            r = raft(addr)
            attempts = []
            for voter in ids:
                # Each voter told it was removed, by each other voter.
                for leader in ids:
                    if leader != voter:
                        attempts.append((f"Raft/Removed(node {voter}, leader {leader})", r.Removed,
                                         raft_pb2.RemovedNotice(node_id=voter, leader_id=leader,
                                                                membership_index=1)))
            attempts += [
                ("Raft/HoldElections", r.HoldElections,
                 raft_pb2.HoldElectionsRequest(millis=40000)),
                ("Raft/Campaign", r.Campaign, raft_pb2.CampaignRequest(node_id=n["id"])),
                ("Raft/Vote", r.Vote, junk),
                ("Raft/AppendEntries", r.AppendEntries, junk),
                ("Raft/InstallSnapshot", r.InstallSnapshot, junk),
                ("Raft/PreVote", r.PreVote,
                 raft_pb2.PreVoteRequest(candidate_id=n["id"], last_log_id=b"", format=2)),
                ("Raft/Hello", r.Hello, raft_pb2.HelloRequest(node_id=n["id"], dc="dc1")),
                ("Dcs/Exchange", tidal_pb2_grpc.DcsStub(channel(addr)).Exchange,
                 tidal_pb2.ExchangeRequest(origin_dc="dc2", target_dc="dc1", body=b"\x00")),
            ]
            for name, fn, req in attempts:
                code, msg = call(fn, req, TIMEOUT_S)
                calls.append({"node": n["id"], "port": port, "rpc": name,
                              "code": code, "message": msg})
    emit({"phase": "attacks", "calls": calls})

    flood = Flood(nodes, raft, raft_pb2.HoldElectionsRequest(millis=40000))
    flood.start()
    flood.first_round.wait()
    emit({"phase": "flooding"})
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "count":
            emit({"phase": "count", "rounds": flood.rounds})
        elif cmd == "stop":
            break
    flood.stop()
    emit({"phase": "flood", "rounds": flood.rounds, "codes": flood.codes})
    for ch in channels.values():
        ch.close()


class Flood(threading.Thread):
    """HoldElections to every peer and public port, a round every 200 ms."""

    def __init__(self, nodes, raft, request):
        super().__init__(daemon=True)
        self.targets = [(n["id"], port, raft(n[port])) for n in nodes for port in ("peer", "public")]
        self.request = request
        self.rounds = 0
        # "node/port" -> {code name: count}
        self.codes = {}
        self.first_round = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        next_at = time.monotonic()
        while not self.done.is_set():
            for node, port, stub in self.targets:
                code, _ = call(stub.HoldElections, self.request, FLOOD_TIMEOUT_S)
                with self.lock:
                    per = self.codes.setdefault(f"{node}/{port}", {})
                    per[code] = per.get(code, 0) + 1
            with self.lock:
                self.rounds += 1
            self.first_round.set()
            next_at += FLOOD_EVERY_S
            self.done.wait(max(0.0, next_at - time.monotonic()))

    def stop(self):
        self.done.set()
        self.join()


if __name__ == "__main__":
    main()
