//! Unit tests of `sink.rs`.

use super::*;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;

async fn say(s: &mut BufReader<TcpStream>, line: &str) -> String {
    s.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_line(&mut out).await.unwrap();
    out.trim().to_string()
}

#[tokio::test]
async fn refuses_a_token_below_one_it_has_seen() {
    let history = Recorder::new(None).unwrap();
    let sink = Sink::start(history.clone()).await.unwrap();
    let mut old = BufReader::new(TcpStream::connect(sink.addr).await.unwrap());
    let mut new = BufReader::new(TcpStream::connect(sink.addr).await.unwrap());
    assert_eq!(say(&mut old, "BEGIN t1 7 a1").await, "OK");
    assert_eq!(say(&mut new, "BEGIN t1 12 a2").await, "OK");
    assert_eq!(say(&mut old, "COMMIT t1 7 a1").await, "STALE 12");
    assert_eq!(say(&mut new, "COMMIT t1 12 a2").await, "OK");
    drop(old);
    drop(new);
    // Both ends are recorded once their connections close.
    for _ in 0..100 {
        if history.events().iter().filter(|e| e.f == "end").count() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let events = history.events();
    let commits: Vec<(u64, bool)> = events
        .iter()
        .filter(|e| e.f == "commit")
        .map(|e| (e.token.unwrap(), e.accepted.unwrap()))
        .collect();
    assert_eq!(commits, vec![(7, false), (12, true)]);
    assert_eq!(events.iter().filter(|e| e.f == "end").count(), 2);
    // Each connection is one run, numbered on all its events.
    let run_of = |tok: u64| -> Vec<Option<u64>> {
        events
            .iter()
            .filter(|e| e.token == Some(tok))
            .map(|e| e.run)
            .collect()
    };
    assert_eq!(run_of(7), vec![Some(1); 3]);
    assert_eq!(run_of(12), vec![Some(2); 3]);
}

#[tokio::test]
async fn records_the_devices_a_worker_says_it_was_given() {
    let history = Recorder::new(None).unwrap();
    let sink = Sink::start(history.clone()).await.unwrap();
    let mut w = BufReader::new(TcpStream::connect(sink.addr).await.unwrap());
    assert_eq!(say(&mut w, "BEGIN t1 7 a1 gpus=0,3").await, "OK");
    assert_eq!(say(&mut w, "COMMIT t1 7 a1").await, "OK");
    let begin = history
        .events()
        .into_iter()
        .find(|e| e.f == "begin")
        .unwrap();
    assert_eq!(begin.devices.as_deref(), Some("0,3"));
    let mut bad = BufReader::new(TcpStream::connect(sink.addr).await.unwrap());
    assert_eq!(say(&mut bad, "BEGIN t2 7 a1 0,3").await, "ERR bad request");
}
