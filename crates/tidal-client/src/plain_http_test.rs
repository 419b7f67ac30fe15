use super::*;

fn echo(head: Option<&[u8]>) -> Response {
    match head {
        None => Response::text("431 Request Header Fields Too Large", "too long\n"),
        Some(h) => {
            let (method, path) = request_line(h);
            Response {
                status: "200 OK",
                content_type: "application/x-test",
                body: format!("{method} {path}\n"),
            }
        }
    }
}

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Sends `request` and reads until the server closes.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn request_line_splits_method_and_path() {
    assert_eq!(
        request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("GET".to_string(), "/metrics".to_string())
    );
    assert_eq!(request_line(b"\r\n\r\n"), (String::new(), String::new()));
    // The absolute form a proxy may send.
    assert_eq!(
        request_line(b"GET http://10.0.0.1:9101/status.json HTTP/1.1\r\n\r\n"),
        ("GET".to_string(), "/status.json".to_string())
    );
    assert_eq!(
        request_line(b"GET http://10.0.0.1:9101 HTTP/1.1\r\n\r\n"),
        ("GET".to_string(), "/".to_string())
    );
}

#[tokio::test]
async fn answers_with_status_type_length_and_close() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(serve(l, echo));
    let got = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        got,
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-test\r\nContent-Length: 13\r\n\
         Connection: close\r\n\r\nGET /metrics\n"
    );
    // A head longer than MAX_HEAD reaches the handler as None.
    let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    long.extend(vec![b'a'; MAX_HEAD + 10]);
    let got = exchange(addr, &long).await;
    assert!(
        got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{got}"
    );
    server.abort();
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_free_one() {
    let (l, addr) = listener().await;
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let server = tokio::spawn(serve_capped(l, echo, permits.clone()));
    // MAX_CONNECTIONS idle clients hold every permit (each is accepted,
    // and waits in read_head).
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET").await.unwrap();
        idle.push(s);
    }
    // Every permit is taken once they are all accepted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while permits.available_permits() > 0 {
        assert!(std::time::Instant::now() < deadline, "not all accepted");
        tokio::task::yield_now().await;
    }
    let waiting = tokio::spawn(exchange(addr, b"GET /late HTTP/1.1\r\n\r\n"));
    // One idle client finishing its request frees a permit for the last.
    let mut first = idle.remove(0);
    first.write_all(b" /first HTTP/1.1\r\n\r\n").await.unwrap();
    let mut out = String::new();
    first.read_to_string(&mut out).await.unwrap();
    assert!(out.ends_with("GET /first\n"), "{out}");
    let late = waiting.await.unwrap();
    assert!(late.ends_with("GET /late\n"), "{late}");
    server.abort();
}
