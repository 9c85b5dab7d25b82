//! Connection hygiene of the gateway process (not in the upstream suite): connections that
//! send nothing are closed, HTTP/2 connections with no stream are closed when idle, the
//! connection cap keeps the admin server and new requests working, and a log output nobody
//! reads does not stop serving.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_tests::{Proc, ProcSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::harness::*;

const GW: &str = "gateway-conformance-infra/same-namespace";

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: all, namespace: gateway-conformance-infra}\nspec:\n  parentRefs: [{name: same-namespace}]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n---\n";

/// The suite's config, written, and the gateway arguments (without the ready file).
fn prepare(extra: &[&str]) -> (Suite, Vec<String>) {
    let suite = Suite::new();
    suite.write("00-base.yaml", &base_manifests());
    suite.write("10-test.yaml", &format!("{SAME_NAMESPACE_GATEWAY}{ROUTE}"));
    let mut args: Vec<String> = [
        "gateway",
        "--config-dir",
        &suite.config_dir().display().to_string(),
        "--gateway",
        GW,
        "--poll-ms",
        "100",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.extend(extra.iter().map(ToString::to_string));
    (suite, args)
}

/// A gateway with `extra` arguments, logging to its log file; returns the suite and the admin
/// address.
fn start(extra: &[&str]) -> (Suite, SocketAddr) {
    let (mut suite, args) = prepare(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let spec = ProcSpec::new("gateway", crate::meridian_bin(), suite.dir.path(), &args);
    let (proc, ready) = Proc::start_ready(spec, Duration::from_secs(20));
    assert!(
        ready["version"].as_u64().unwrap() >= 1,
        "no config: {ready}"
    );
    suite.gateway = Some(proc);
    let admin = ready["admin"].as_str().unwrap().parse().unwrap();
    (suite, admin)
}

/// Reads until the peer closes (or resets) the connection, at most `limit`; returns what was
/// read, or `None` if the connection was still open then.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn metric(admin: SocketAddr, prefix: &str) -> f64 {
    let text = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
}

async fn ready_ok(admin: SocketAddr) {
    let status = client()
        .get(format!("http://{admin}/ready"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "admin /ready");
}

#[tokio::test]
async fn connection_sending_nothing_is_closed_after_first_byte_timeout() {
    let (suite, _admin) = start(&["--first-byte-timeout-ms", "1000"]);
    let mut silent = TcpStream::connect(suite.addr("HTTP")).await.unwrap();
    let started = Instant::now();
    let seen = read_until_closed(&mut silent, Duration::from_secs(20)).await;
    assert_eq!(
        seen.as_deref(),
        Some(&[][..]),
        "a connection that sends nothing must be closed without an answer"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A client that does send is served as usual.
    check_all(&suite, &[(get("example.com", "/"), ok("infra-backend-v1"))]).await;
}

#[tokio::test]
async fn h2_connection_with_only_preface_and_settings_is_closed_when_idle() {
    let (suite, admin) = start(&["--idle-timeout-ms", "1000"]);
    let mut h2 = TcpStream::connect(suite.addr("HTTP")).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame, then nothing (no stream, no SETTINGS ack, no PING answer).
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let seen = read_until_closed(&mut h2, Duration::from_secs(20))
        .await
        .expect("an HTTP/2 connection with no stream must be closed after the idle timeout");
    // The gateway said why: a GOAWAY frame (type 7) among the frames it sent.
    let mut frames = Vec::new();
    let mut rest = &seen[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        frames.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(frames.contains(&7), "no GOAWAY; frame types {frames:?}");
    let port = suite.addr("HTTP").port();
    let timed_out = metric(
        admin,
        &format!("gateway_connections_timed_out_total{{port=\"{port}\"}}"),
    )
    .await;
    assert!(timed_out >= 1.0, "idle closes counted: {timed_out}");
}

#[tokio::test]
async fn connection_cap_keeps_admin_and_requests_working() {
    let (suite, admin) = start(&["--max-connections", "20", "--first-byte-timeout-ms", "3000"]);
    let port = suite.addr("HTTP").port();
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(suite.addr("HTTP")).await.unwrap());
    }
    // Connections past the cap are closed at once, not left in the backlog. Which ones is not
    // known (each serving thread accepts from its own socket), so all are read at once, for
    // less than the first-byte timeout that closes the admitted ones.
    let mut reads = tokio::task::JoinSet::new();
    for mut stream in idle {
        reads.spawn(async move {
            let closed = read_until_closed(&mut stream, Duration::from_secs(2))
                .await
                .is_some();
            (stream, closed)
        });
    }
    let mut idle = Vec::new();
    let mut closed = 0;
    while let Some(read) = reads.join_next().await {
        let (stream, was_closed) = read.unwrap();
        closed += usize::from(was_closed);
        idle.push(stream);
    }
    assert!(
        closed >= 20,
        "connections past the cap must be closed at once: {closed} of 40"
    );
    ready_ok(admin).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let refused = metric(
            admin,
            &format!("gateway_connections_refused_total{{port=\"{port}\"}}"),
        )
        .await;
        if refused >= 20.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusals counted: {refused}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once the idle ones are closed (first-byte timeout), requests are served again.
    check_all(&suite, &[(get("example.com", "/"), ok("infra-backend-v1"))]).await;
    ready_ok(admin).await;
    drop(idle);
}

/// Kills the child on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn unread_log_pipe_does_not_block_serving() {
    let (suite, mut args) = prepare(&[]);
    let ready = suite.dir.path().join("gateway.ready.json");
    args.push("--ready-file".into());
    args.push(ready.display().to_string());
    // stdout and stderr are pipes that nobody reads: they fill after about 64 KB.
    let child = Command::new(crate::meridian_bin())
        .args(&args)
        .env("MERIDIAN_LOG", "info")
        .env("MERIDIAN_LOG_BUFFER_LINES", "100")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let started = Instant::now();
    let ready: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(value) = serde_json::from_str(&text)
        {
            break value;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "gateway exited");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gateway not ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        ready["version"].as_u64().unwrap() >= 1,
        "no config: {ready}"
    );
    let admin: SocketAddr = ready["admin"].as_str().unwrap().parse().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("http://{}/", suite.addr("HTTP"));
    for i in 0..2000 {
        let response = http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(response.status(), 200, "request {i}");
    }
    // The access log lines that did not fit were dropped and counted.
    assert!(metric(admin, "meridian_log_dropped_lines_total").await > 0.0);
}

#[tokio::test]
async fn backend_that_never_answers_gets_504_after_the_default_response_timeout() {
    let (suite, _admin) = start(&["--upstream-response-timeout-ms", "500"]);
    let client = client();
    let addr = suite.addr("HTTP");
    let started = Instant::now();
    let response = client
        .get(format!("http://{addr}/?delay=5s"))
        .header("host", "example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504, "a route without timeouts");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    check_all(
        &suite,
        &[(get("example.com", "/?delay=100ms"), ok("infra-backend-v1"))],
    )
    .await;

    // A route's own timeouts replace the default, and `request: 0s` ("no deadline") too.
    suite.write(
        "20-own-timeouts.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: own, namespace: gateway-conformance-infra}\nspec:\n  parentRefs: [{name: same-namespace}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /no-deadline}}]\n    timeouts: {request: 0s}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /longer}}]\n    timeouts: {request: 5s}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    check_all(
        &suite,
        &[
            (
                get("example.com", "/no-deadline?delay=1s"),
                ok("infra-backend-v1"),
            ),
            (
                get("example.com", "/longer?delay=1s"),
                ok("infra-backend-v1"),
            ),
            (get("example.com", "/other?delay=1s"), status(&[504])),
        ],
    )
    .await;
}
