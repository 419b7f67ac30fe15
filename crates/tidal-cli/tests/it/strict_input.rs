//! Strict input over the wire: out-of-range enums, a reused idempotency key
//! with another spec, second completions, undecodable requests (sent as raw
//! bytes on a plain HTTP/2 connection) and garbage on an agent stream each
//! get the right status and a message naming the problem.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tidal_client::v1::{self, agent_message::Msg as In, server_message::Msg as Out};
use tokio::sync::mpsc;
use tonic::Code;

use crate::harness::{Cluster, ClusterOpts};

fn spec(task_type: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: task_type.into(),
        payload: b"x".to_vec(),
        ..Default::default()
    }
}

fn register(id: &str) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(In::Register(v1::Register {
            spec: Some(v1::AgentSpec {
                id: id.into(),
                dc: "dc1".into(),
                task_types: vec!["strict".into()],
                slots: 1,
                ..Default::default()
            }),
            running: vec![],
            instance: String::new(),
            fenced: vec![],
            warm_models: vec![],
        })),
    }
}

/// One gRPC frame: flag 0, big-endian length, the bytes.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// POSTs `body` as it is to `path` on a fresh HTTP/2 connection, the way a
/// gRPC client would, and returns the call's grpc-status and grpc-message
/// (from the headers of a trailers-only answer, or from the trailers).
async fn raw_call(addr: &str, path: &str, body: Vec<u8>) -> anyhow::Result<(i32, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    raw_call_on(tcp, addr, path, body).await
}

/// [`raw_call`] on a connection the caller opened (e.g. from a chosen source
/// address).
pub(crate) async fn raw_call_on(
    tcp: tokio::net::TcpStream,
    addr: &str,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(i32, String)> {
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(body)))?;
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req)).await??;
    let headers = resp.headers().clone();
    let collected =
        tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await??;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    driver.abort();
    let get = |k: &str| {
        headers
            .get(k)
            .or_else(|| trailers.get(k))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let code = get("grpc-status")
        .ok_or_else(|| anyhow::anyhow!("no grpc-status in {headers:?} / {trailers:?}"))?
        .parse()?;
    let message = get("grpc-message").unwrap_or_default();
    Ok((code, percent_decode(&message)))
}

/// grpc-message is percent-encoded.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_input_is_refused_with_the_right_code_and_names_the_problem() -> anyhow::Result<()> {
    // Raw HTTP/2 calls in plaintext, without a token.
    let c = Cluster::start_plaintext(ClusterOpts {
        nodes: 1,
        ..ClusterOpts::default()
    })
    .await?;
    let (_, leader) = c.wait_leader(Duration::from_secs(20)).await?;

    // Out-of-range enums: INVALID_ARGUMENT naming the field and the value.
    let e = c
        .client
        .submit_one(v1::TaskSpec {
            priority: 99,
            ..spec("t2i")
        })
        .await
        .expect_err("priority 99");
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    assert!(e.message.contains("priority 99"), "{e}");
    let e = c
        .client
        .list_tasks(v1::ListTasksRequest {
            state: 99,
            ..Default::default()
        })
        .await
        .expect_err("state 99");
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    assert!(e.message.contains("state 99"), "{e}");

    // A known key: the same spec (after defaults) is the existing task,
    // another spec is ALREADY_EXISTS naming the key and the task.
    let keyed = v1::TaskSpec {
        idempotency_key: "strict-k".into(),
        ..spec("t2i")
    };
    let first = c.client.submit_one(keyed.clone()).await?;
    let again = c
        .client
        .submit_one(v1::TaskSpec {
            queue: "default".into(),
            max_attempts: 3,
            slots: 1,
            priority: v1::Priority::Nearline as i32,
            ..keyed.clone()
        })
        .await?;
    assert_eq!(
        (again.id.as_str(), again.existed),
        (first.id.as_str(), true)
    );
    let e = c
        .client
        .submit_one(v1::TaskSpec {
            payload: b"other".to_vec(),
            ..keyed.clone()
        })
        .await
        .expect_err("another spec under the key");
    assert_eq!(e.code, Code::AlreadyExists, "{e}");
    assert!(
        e.message.contains("\"strict-k\"") && e.message.contains(&first.id),
        "{e}"
    );

    // Completions: two sent back to back for one attempt, with different
    // outcomes, several times over: the first is accepted and wins, the
    // second is refused as already finished.
    let (tx, rx) = mpsc::channel(16);
    let mut session = c.client.open_session(register("strict-agent"), rx).await?;
    for round in 0..5 {
        let id = c.client.submit_one(spec("strict")).await?.id;
        let asg = loop {
            let m =
                tokio::time::timeout(Duration::from_secs(10), session.inbound.message()).await??;
            match m.and_then(|m| m.msg) {
                Some(Out::Assignment(a)) => break a,
                Some(_) => continue,
                None => anyhow::bail!("the session ended"),
            }
        };
        assert_eq!(asg.task_id, id);
        for success in [true, false] {
            tx.send(v1::AgentMessage {
                msg: Some(In::Completed(v1::TaskCompleted {
                    task_id: id.clone(),
                    token: asg.token,
                    success,
                    result: if success { b"first".to_vec() } else { vec![] },
                    error: if success {
                        String::new()
                    } else {
                        "second".into()
                    },
                    exit_code: i32::from(!success),
                    stopped: false,
                    timed_out: false,
                })),
            })
            .await?;
        }
        let mut acks = Vec::new();
        while acks.len() < 2 {
            let m =
                tokio::time::timeout(Duration::from_secs(10), session.inbound.message()).await??;
            match m.and_then(|m| m.msg) {
                Some(Out::CompletionAck(a)) => acks.push(a),
                Some(_) => {}
                None => anyhow::bail!("the session ended"),
            }
        }
        assert!(acks[0].accepted, "round {round}: {acks:?}");
        assert!(!acks[1].accepted, "round {round}: {acks:?}");
        assert!(
            acks[1].reason.contains("already finished as succeeded"),
            "round {round}: {acks:?}"
        );
        let t = c.client.get_task(&id, false).await?;
        assert_eq!(t.state, v1::TaskState::Succeeded as i32, "round {round}");
        assert_eq!(t.result, b"first", "round {round}");
    }
    drop(tx);

    // Undecodable requests: INVALID_ARGUMENT, whether the frames are fine
    // and the message inside is not, or the frames themselves are broken.
    let submit = "/tidal.v1.Tasks/Submit";
    for (what, body) in [
        (
            "a message that is not a SubmitRequest",
            frame(&[0x0a, 0x7f, 0x01]),
        ),
        (
            "bytes that are not gRPC frames",
            b"this is not grpc at all".to_vec(),
        ),
        (
            "a frame cut short",
            frame(b"\x0a\x02\x0a\x00")[..6].to_vec(),
        ),
    ] {
        let (code, message) = raw_call(&leader, submit, body).await?;
        assert_eq!(code, Code::InvalidArgument as i32, "{what}: {message}");
        assert!(
            message.contains("undecodable") || message.contains("malformed gRPC frame"),
            "{what}: {message}"
        );
    }

    // An agent stream with garbage after its Register ends with an error
    // status, not OK.
    let session = "/tidal.v1.Agents/Session";
    let mut body = frame(&register("strict-garbage").encode_to_vec());
    body.extend(frame(&[0xff, 0xff, 0xff]));
    let (code, message) = raw_call(&leader, session, body).await?;
    assert_eq!(code, Code::InvalidArgument as i32, "{message}");
    let mut body = frame(&register("strict-garbage").encode_to_vec());
    body.extend(b"\x07garbage");
    let (code, message) = raw_call(&leader, session, body).await?;
    assert_eq!(code, Code::InvalidArgument as i32, "{message}");
    assert!(message.contains("malformed gRPC frame"), "{message}");

    // The server is fine afterwards.
    c.client.get_task(&first.id, false).await?;
    Ok(())
}
