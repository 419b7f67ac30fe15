//! Integration tests of the `tidal` binary: real processes on 127.0.0.1.
//!
//! - `authz`: `--auth tokens`: no, malformed, unknown or revoked tokens
//!   UNAUTHENTICATED and a user's admin calls PERMISSION_DENIED (exit 8); a
//!   fresh token through a follower; below format version 3 the bootstrap token only.
//! - `agent_metrics`: `tidal agent --metrics-listen`: worker exits counted
//!   by code (0 and 3), the session shown; cluster/grafana/tidal.json names
//!   only metrics a server or an agent serves.
//! - `agent_tokens`: an agent of a one-tenant token runs only that tenant's
//!   tasks; a revoked token ends its agent (exit 8) and the task runs
//!   elsewhere; SIGTERM drains and deregisters a token's agent.
//! - `big_entries`: a follower catches up on megabytes of entries.
//! - `bad_input`: refused requests against a real server: messages, codes, nothing lost.
//! - `cert`: `tidal cert ca | issue | show`: files, modes, identities, refusals.
//! - `chaos`: the bounded chaos subset: every scenario for a few seconds.
//! - `drain`: drain and undrain, a deadline that stops a worker, a drain
//!   carried on by a new leader, SIGTERM to an agent.
//! - `dev`: `tidal dev --dcs 2` up, its demo across two DCs, Ctrl-C.
//! - `duplicate_agent`: a second agent process under a live id takes it over; the first exits 6.
//! - `cli_errors`: usage and connection errors that need no server; plaintext
//!   to a server off loopback refused (exit 2) unless `--insecure`.
//! - `completions`: `tidal completions bash|zsh|fish` names the real
//!   commands; bash parses its script and completes `tidal ta` to `task`.
//! - `cluster_scripts`: cluster/start.sh on ports of its own: certificates,
//!   tokens and the env file made once; a task submitted with it runs; stop.sh.
//! - `elections`: a follower cut off from the leader rejoins without an election.
//! - `harness`: tidal-testkit's cluster of the binary under test (mutual TLS
//!   and `--auth tokens` unless a test opts out); worker scripts, a cuttable relay.
//! - `lifecycle`: retries after a backoff with their history, dead letters
//!   listed and replayed, a deadline that fails a task and is counted,
//!   headroom, bad lifecycle flags (exit 2) and values (INVALID_ARGUMENT).
//! - `membership`: grow, shrink, snapshots, backup and restore, refusals.
//! - `peer_addresses`: a member added with `--peer-addr` is replicated to,
//!   handed leadership and led through it; Members and Status name its client address.
//! - `orphans`: a SIGKILLed test binary leaves no server or agent running.
//! - `packaging`: every `tidal` command line of cluster/compose's compose
//!   file and cluster/systemd's units parses (`tidal check-args`); the
//!   compose set-up script makes certificates and the admin token once; the
//!   compose services' command lines, run as local processes, join a DC
//!   whose agents run a task.
//! - `placement`: an agent of four GPUs gives four one-GPU workers one
//!   device each (CUDA_VISIBLE_DEVICES, TIDAL_GPU_IDS); a fifth waits with
//!   `task explain` naming busy GPUs and gets the freed device; label
//!   constraints pick the agent; a GPU shape falls back and is recorded.
//! - `retention`: finished tasks and their keys expire; `get` says expired.
//! - `shutdown`: SIGTERM on a leader (handed over, exit 0) and a follower,
//!   a second signal, a rolling restart of three servers under load.
//! - `secure_defaults`: plaintext on an address that is not loopback refused
//!   before binding (exit 2); a new cluster under the default `--auth tokens`
//!   writes DATA/bootstrap.token, which the CLI needs (exit 8 without it);
//!   a tokenless cluster restarted under the default warns that it refuses every call.
//! - `settings`: `tidal server` settings: file < variables < flags; `--print-config`
//!   read back by `--config`.
//! - `smoke`: one small end-to-end run through the harness.
//! - `peer_plane`: `--peer-listen` on 127.0.0.11-13: forged Raft calls refused,
//!   the cluster runs through its peer listeners.
//! - `peer_plane_xdc`: two DCs with `--peer-listen`: exchanges between the peer
//!   listeners; a non-peer's, a public port's and a posing member's refused.
//! - `peer_names`: peer addresses named `localhost`, resolved by the peer plane's rules.
//! - `strict_input`: out-of-range enums, key conflicts, second completions,
//!   undecodable requests and agent-stream garbage, over the wire.
//! - `tls`: a 3-node DC over mutual TLS: the CLI (membership, tasks) and an
//!   agent with their certificates; other CAs, another DC's agent, plaintext
//!   and `https://` without a TLS directory refused at once, saying why.
//! - `tls_cluster`: a DC from the kit over mutual TLS and tokens (its defaults);
//!   a member re-added with a new certificate joins, replicates and votes.
//! - `tls_peers`: three servers with `--tls-dir` form a DC, replicate and
//!   fail over; servers with another node's, DC's or CA's certificate can
//!   neither join nor vote; raw Raft calls with a client certificate or none
//!   are refused; two DCs exchange over TLS.
//! - `full_disk`: a follower whose data directory fills up exits 5 and names
//!   it; the others serve on without flooding their logs; freed, it catches up.
//! - `tenant_isolation`: `--auth tokens`: a user token gets, cancels and lists only
//!   its tenant's tasks (another's is NOT_FOUND), cannot submit for another
//!   tenant, and `task get` shows submitted_by; an admin sees every tenant.
//! - `tenants`: `tidal tenant set | list`; a submit past max-pending is
//!   RESOURCE_EXHAUSTED (exit 1); max-running-slots holds with agents to spare.
//! - `forged_peer`: a Python gRPC client built from proto/ forges Raft and exchange
//!   calls from a non-member: all refused, no node stops, failover under a HoldElections flood.
//! - `python_client`: the Python client (clients/python) passes its pytest
//!   tests against three servers with TLS and tokens and an agent.
//! - `failover`: 1,000 tasks exactly once, a leader SIGKILLed, the node catching up.
//! - `workers`: a SIGKILLed agent leaves no worker process running.
//! - `tokens`: `token generate | create | list | revoke`, the bootstrap
//!   token, secrets shown once and never listed or logged; below cluster
//!   format version 3 tokens are refused and submits work.
//! - `upgrade`: a rolling upgrade: a node of an older format version holds
//!   the cluster's version, which rises once it is upgraded; an older build
//!   on an upgraded cluster exits 7.
//! - `checkpoints`: a worker's checkpoint written before a failed attempt
//!   reaches the retry's worker through the agent and the leader; an
//!   attempt reported timed out is acknowledged and retried.
//! - `xdc`: two DCs: forwarding by capability, a cut link, leader kills on both sides.
//!
//! Cluster tests go in their own module here, built on `harness::Cluster`.

mod agent_metrics;
mod agent_tokens;
mod authz;
mod bad_input;
mod big_entries;
mod cert;
mod chaos;
mod checkpoints;
mod cli_errors;
mod cluster_scripts;
mod completions;
mod dev;
mod drain;
mod duplicate_agent;
mod elections;
mod failover;
mod forged_peer;
mod full_disk;
mod harness;
mod lifecycle;
mod membership;
mod orphans;
mod packaging;
mod peer_addresses;
mod peer_names;
mod peer_plane;
mod peer_plane_xdc;
mod placement;
mod python_client;
mod retention;
mod secure_defaults;
mod settings;
mod shutdown;
mod smoke;
mod strict_input;
mod tenant_isolation;
mod tenants;
mod tls;
mod tls_cluster;
mod tls_peers;
mod tokens;
mod upgrade;
mod workers;
mod xdc;
