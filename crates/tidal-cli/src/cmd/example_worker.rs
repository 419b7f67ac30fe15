//! `tidal example-worker` (hidden): the demo task command that `tidal dev`'s
//! agents run. It reads the payload on stdin and the task's identity from the
//! `TIDAL_*` variables the agent sets, does a small deterministic piece of
//! work and prints a JSON result. A payload containing "fail" exits 3 with a
//! message on stderr, to show a failed task; a word `work-ms=N` in the
//! payload sets how long it pretends to work (over `--sleep-ms`), so one
//! agent's workers can run short online and long offline tasks.
//!
//! It checkpoints as a preemptible worker should: when the agent names a
//! checkpoint file (`TIDAL_CHECKPOINT_FILE`), it writes its progress there
//! (`done-ms=N`) every 100 ms, and an attempt that finds a checkpoint
//! there (a preempted or retried task's) works only what is left.
//!
//! With `--fence-at HOST:PORT` it shows how a worker uses its fencing token:
//! it presents `TIDAL_FENCING_TOKEN` to a resource that checks tokens (a line
//! `BEGIN <task> <token> <agent> [gpus=<TIDAL_GPU_IDS>]` when it starts, `COMMIT ...` when its work
//! is done; the resource answers `OK` or `STALE <highest>`), and gives up
//! (exit 75) when the resource has seen a newer holder of the task.

use std::io::Read;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};

use crate::exit;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Task type when TIDAL_TASK_TYPE is not set.
    #[arg(long = "type", value_name = "TYPE")]
    pub task_type: Option<String>,
    /// Pretend to work this long (default: 200 ms plus 10 ms per payload byte, at most 2 s).
    #[arg(long, value_name = "MS")]
    pub sleep_ms: Option<u64>,
    /// Present the fencing token to a token-checking resource at this address.
    #[arg(long, value_name = "HOST:PORT")]
    pub fence_at: Option<String>,
}

/// Exit code when the fenced resource refused this worker's token.
pub const FENCED_OUT: i32 = 75;

/// Exit code of a demo task whose payload asks it to fail.
pub const DEMO_FAILURE: i32 = 3;

pub async fn run(args: WorkerArgs) -> anyhow::Result<i32> {
    let mut payload = Vec::new();
    std::io::stdin()
        .read_to_end(&mut payload)
        .context("reading the payload from stdin")?;
    let text = String::from_utf8_lossy(&payload).into_owned();
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let task_type = args.task_type.unwrap_or_else(|| env("TIDAL_TASK_TYPE"));
    let models: Vec<String> = env("TIDAL_MODELS")
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    let sleep = work_ms(&text)
        .or(args.sleep_ms)
        .unwrap_or_else(|| (200 + 10 * payload.len() as u64).min(2_000));
    let checkpoint = std::env::var_os("TIDAL_CHECKPOINT_FILE").map(std::path::PathBuf::from);
    let mut fence = match &args.fence_at {
        Some(addr) => Some(
            Fence::open(
                addr,
                &env("TIDAL_TASK_ID"),
                &env("TIDAL_FENCING_TOKEN"),
                &env("TIDAL_AGENT_ID"),
            )
            .await?,
        ),
        None => None,
    };
    if let Some(f) = fence.as_mut() {
        if let Err(refusal) = f.say("BEGIN").await? {
            eprintln!("example-worker: {refusal}");
            return Ok(FENCED_OUT);
        }
    }
    match &checkpoint {
        Some(path) => work_with_checkpoints(path, sleep).await,
        None => tokio::time::sleep(Duration::from_millis(sleep)).await,
    }
    if let Some(f) = fence.as_mut() {
        if let Err(refusal) = f.say("COMMIT").await? {
            eprintln!("example-worker: {refusal}");
            return Ok(FENCED_OUT);
        }
    }
    if text.contains("fail") {
        eprintln!(
            "example-worker: the payload asked to fail ({:?})",
            text.trim()
        );
        return Ok(DEMO_FAILURE);
    }
    let mut out = work(&task_type, &text, &models);
    out["task_id"] = json!(env("TIDAL_TASK_ID"));
    out["agent"] = json!(env("TIDAL_AGENT_ID"));
    out["token"] = json!(env("TIDAL_FENCING_TOKEN"));
    println!("{out}");
    Ok(exit::OK)
}

/// The `work-ms=N` word of a payload.
fn work_ms(text: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("work-ms="))
        .and_then(|n| n.parse().ok())
}

/// How often the worker writes its progress to its checkpoint file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Works `total_ms`, less what an earlier attempt's checkpoint (`done-ms=N`
/// in `path`) says is done, writing its own progress to `path` as it goes.
/// A checkpoint that cannot be read counts as none; one that cannot be
/// written is skipped (the work goes on).
async fn work_with_checkpoints(path: &std::path::Path, total_ms: u64) {
    let done = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().strip_prefix("done-ms=")?.parse::<u64>().ok())
        .unwrap_or(0)
        .min(total_ms);
    let start = std::time::Instant::now();
    let left = Duration::from_millis(total_ms - done);
    loop {
        let worked = start.elapsed();
        if worked >= left {
            return;
        }
        let progress = done + worked.as_millis() as u64;
        let _ = std::fs::write(path, format!("done-ms={progress}\n"));
        tokio::time::sleep(CHECKPOINT_EVERY.min(left - worked)).await;
    }
}

/// A connection to a token-checking resource.
struct Fence {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    ident: String,
}

impl Fence {
    async fn open(addr: &str, task: &str, token: &str, agent: &str) -> anyhow::Result<Fence> {
        use tokio::io::AsyncBufReadExt;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the fenced resource at {addr}"))?;
        let (r, writer) = stream.into_split();
        Ok(Fence {
            lines: tokio::io::BufReader::new(r).lines(),
            writer,
            ident: format!("{task} {token} {agent}"),
        })
    }

    /// Sends `VERB task token agent`, and on `BEGIN` the GPU devices the
    /// worker was given (` gpus=0,2`, from `TIDAL_GPU_IDS`) when it was
    /// given any; Ok(Err(why)) when the token was refused.
    async fn say(&mut self, verb: &str) -> anyhow::Result<Result<(), String>> {
        use tokio::io::AsyncWriteExt;
        let gpus = match std::env::var("TIDAL_GPU_IDS") {
            Ok(ids) if verb == "BEGIN" && !ids.is_empty() => format!(" gpus={ids}"),
            _ => String::new(),
        };
        self.writer
            .write_all(format!("{verb} {}{gpus}\n", self.ident).as_bytes())
            .await
            .context("writing to the fenced resource")?;
        match self
            .lines
            .next_line()
            .await
            .context("reading from the fenced resource")?
        {
            Some(l) if l == "OK" => Ok(Ok(())),
            Some(l) => Ok(Err(format!(
                "the fenced resource refused {verb} under token {}: {l}",
                self.ident
            ))),
            None => anyhow::bail!("the fenced resource closed the connection"),
        }
    }
}

/// The deterministic "inference": the same input gives the same output.
pub fn work(task_type: &str, text: &str, models: &[String]) -> Value {
    let model = models
        .first()
        .cloned()
        .unwrap_or_else(|| "none".to_string());
    let digest = format!(
        "{:016x}",
        fnv1a(format!("{task_type}\0{model}\0{text}").as_bytes())
    );
    match task_type {
        "t2i" => {
            json!({ "type": "t2i", "prompt": text, "model": model, "image": format!("fake-png:{digest}"), "width": 1024, "height": 1024 })
        }
        "i2i" => {
            json!({ "type": "i2i", "input": text, "model": model, "image": format!("fake-png:{digest}") })
        }
        "sr" => {
            json!({ "type": "sr", "input": text, "model": model, "scale": 4, "image": format!("fake-png:{digest}") })
        }
        "tts" => json!({
            "type": "tts",
            "text": text,
            "voice": model,
            "audio": format!("fake-wav:{digest}"),
            "duration_ms": 60 * text.split_whitespace().count().max(1) as u64 * 5,
        }),
        other => json!({ "type": other, "echo": text, "model": model, "digest": digest }),
    }
}

/// FNV-1a, 64 bits: tiny, stable across platforms and releases.
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_sets_the_work_time() {
        assert_eq!(work_ms("a red fox work-ms=1500"), Some(1500));
        assert_eq!(work_ms("work-ms=0"), Some(0));
        assert_eq!(work_ms("work-ms=soon"), None);
        assert_eq!(work_ms("a red fox"), None);
    }

    #[tokio::test]
    async fn an_attempt_works_only_what_its_checkpoint_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        // Everything done: nothing left to work, the checkpoint untouched.
        std::fs::write(&path, "done-ms=1000\n").unwrap();
        work_with_checkpoints(&path, 1_000).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "done-ms=1000\n");
        // 100 ms left: its first progress starts from the checkpoint's
        // 900 ms, not from 0, and it works one 100 ms step.
        std::fs::write(&path, "done-ms=900\n").unwrap();
        work_with_checkpoints(&path, 1_000).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "done-ms=900\n");
        // No checkpoint: it starts from 0.
        std::fs::remove_file(&path).unwrap();
        work_with_checkpoints(&path, 50).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "done-ms=0\n");
    }

    #[test]
    fn work_is_deterministic_and_typed() {
        let m = vec!["sdxl".to_string()];
        let a = work("t2i", "a red fox", &m);
        assert_eq!(a, work("t2i", "a red fox", &m));
        assert_eq!(a["prompt"], "a red fox");
        assert_eq!(a["model"], "sdxl");
        assert!(a["image"]
            .as_str()
            .is_some_and(|s| s.starts_with("fake-png:")));
        assert_ne!(a["image"], work("t2i", "a blue fox", &m)["image"]);
        assert_eq!(work("tts", "hello there", &[])["voice"], "none");
        assert_eq!(work("train", "x", &[])["echo"], "x");
    }
}
