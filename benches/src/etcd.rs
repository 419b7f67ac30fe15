//! The baseline: a 3-member etcd cluster on 127.0.0.1 (etcd from Debian's
//! packages, `benches/setup-etcd.sh`) driven through its JSON gateway with
//! the usual etcd work-queue pattern: producers put `q/pending/<id>`;
//! workers read up to 64 pending keys and claim one with a transaction
//! `compare(version(key) == v) -> delete key, put q/claimed/<id> = worker`,
//! retrying on a lost race.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};

use crate::stats::{histogram, summary};

pub struct Etcd {
    clients: Vec<String>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Etcd {
    /// Starts 3 members with data on disk (etcd fsyncs its WAL on every
    /// commit, as tidal does) and waits until they serve.
    pub async fn start() -> anyhow::Result<Etcd> {
        let exe = which_etcd()?;
        let dir = tempfile::Builder::new()
            .prefix("tidal-bench-etcd-")
            .tempdir()?;
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut etcd = Etcd {
            clients: ports
                .iter()
                .map(|(c, _)| format!("127.0.0.1:{c}"))
                .collect(),
            children: Vec::new(),
            _dir: dir,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(etcd._dir.path().join(format!("e{i}.log")))?;
            let child = Command::new(&exe)
                .args([
                    "--name",
                    &format!("e{i}"),
                    "--data-dir",
                    &etcd._dir.path().join(format!("e{i}")).display().to_string(),
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--log-level",
                    "warn",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {exe}"))?;
            etcd.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut c = Conn::open(&etcd.clients[0]).await;
        loop {
            if let Ok(c) = &mut c {
                if c.call("/v3/kv/put", &put_body("warmup", b"x"))
                    .await
                    .is_ok()
                {
                    return Ok(etcd);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd did not serve within 30 s; see {}",
                    etcd._dir.path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            c = Conn::open(&etcd.clients[0]).await;
        }
    }

    fn endpoint(&self, k: usize) -> &str {
        &self.clients[k % self.clients.len()]
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which_etcd() -> anyhow::Result<String> {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return Ok(p.to_string());
        }
    }
    bail!("no etcd binary: run benches/setup-etcd.sh (installs Debian's etcd-server)")
}

/// One HTTP/1.1 keep-alive connection to an etcd member's JSON gateway.
struct Conn {
    host: String,
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            host: addr.to_string(),
            send,
        })
    }

    async fn call(&mut self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let req = hyper::Request::post(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("etcd {path}: {status} {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

fn put_body(key: &str, value: &[u8]) -> Value {
    json!({ "key": b64(key.as_bytes()), "value": b64(value) })
}

/// Producers: `clients` connections putting 200-byte items as fast as
/// answers come back. Returns puts/s and latency.
pub async fn puts(etcd: &Etcd, clients: usize, duration: Duration) -> anyhow::Result<Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for k in 0..clients {
        let mut c = Conn::open(etcd.endpoint(k)).await?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t0 = Instant::now();
                let body = put_body(&format!("q/pending/{k:03}-{n:09}"), &[b'x'; 200]);
                if c.call("/v3/kv/put", &body).await.is_ok() {
                    let _ = h.record(t0.elapsed().as_micros() as u64);
                }
            }
            h
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    for t in tasks {
        all.add(t.await?)?;
    }
    Ok(json!({
        "name": format!("etcd put, {clients} clients"),
        "submitted_per_s": all.len() as f64 / duration.as_secs_f64(),
        "submit_latency": summary(&all),
    }))
}

/// Workers: each reads up to 64 pending keys, picks one and claims it with
/// a transaction on its version; a lost race reads again. Returns claims/s
/// and the latency of each claim (first read to won transaction).
pub async fn claims(etcd: &Etcd, workers: usize, duration: Duration) -> anyhow::Result<Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut c = Conn::open(etcd.endpoint(w)).await?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut lost = 0u64;
            let prefix = b64(b"q/pending/");
            let end = b64(b"q/pending0");
            let mut pick = w as u64;
            'claim: while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break 'claim;
                    }
                    let range = json!({ "key": prefix, "range_end": end, "limit": 64, "keys_only": true });
                    let Ok(r) = c.call("/v3/kv/range", &range).await else {
                        continue;
                    };
                    let kvs = r["kvs"].as_array().cloned().unwrap_or_default();
                    if kvs.is_empty() {
                        break 'claim; // the queue ran dry
                    }
                    pick = pick.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let kv = &kvs[(pick >> 33) as usize % kvs.len()];
                    let key = kv["key"].as_str().unwrap_or_default().to_string();
                    let version = kv["version"].as_str().unwrap_or("1").to_string();
                    let raw = B64.decode(&key).unwrap_or_default();
                    let claimed = String::from_utf8_lossy(&raw).replacen("q/pending/", "q/claimed/", 1);
                    let txn = json!({
                        "compare": [{ "key": key, "target": "VERSION", "result": "EQUAL", "version": version }],
                        "success": [
                            { "request_delete_range": { "key": key } },
                            { "request_put": { "key": b64(claimed.as_bytes()), "value": b64(format!("worker-{w}").as_bytes()) } }
                        ],
                    });
                    match c.call("/v3/kv/txn", &txn).await {
                        Ok(r) if r["succeeded"].as_bool() == Some(true) => {
                            let _ = h.record(t0.elapsed().as_micros() as u64);
                            continue 'claim;
                        }
                        _ => lost += 1,
                    }
                }
            }
            (h, lost)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    let mut lost = 0;
    for t in tasks {
        let (h, l) = t.await?;
        all.add(h)?;
        lost += l;
    }
    Ok(json!({
        "name": format!("etcd claim, {workers} workers"),
        "assigned_per_s": all.len() as f64 / duration.as_secs_f64(),
        "assign_latency": summary(&all),
        "lost_races": lost,
    }))
}
