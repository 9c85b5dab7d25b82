//! Tests for probe hysteresis (pure, injected results) and the probe loops (real sockets).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::*;

fn config() -> ProbeConfig {
    ProbeConfig {
        rise: 2,
        fall: 2,
        ..ProbeConfig::default()
    }
}

/// Feeds `results` ('+' pass, '-' fail, 'x' forced down) and returns the health after each.
fn run_sequence(results: &str) -> Vec<Health> {
    let mut state = ProbeState::default();
    results
        .chars()
        .map(|c| {
            match c {
                '+' => state.record(true, "ok", &config()),
                '-' => state.record(false, "fail", &config()),
                'x' => state.force_down("stream closed"),
                other => panic!("bad test input {other:?}"),
            };
            state.health()
        })
        .collect()
}

#[test]
fn hysteresis_follows_rise_and_fall() {
    use Health::{Down, Unknown, Up};
    let table: &[(&str, &[Health])] = &[
        // The first success of a fresh target counts at once.
        ("+", &[Up]),
        // One failure is not enough to go down, from unknown or from up.
        ("-", &[Unknown]),
        ("+-", &[Up, Up]),
        ("+-+-", &[Up, Up, Up, Up]),
        // Two consecutive failures are.
        ("--", &[Unknown, Down]),
        ("+--", &[Up, Up, Down]),
        // Down needs two consecutive successes to come back.
        ("--+", &[Unknown, Down, Down]),
        ("--++", &[Unknown, Down, Down, Up]),
        ("--+-+", &[Unknown, Down, Down, Down, Down]),
        ("--+-++", &[Unknown, Down, Down, Down, Down, Up]),
        // A closed stream is immediate, and recovery still needs `rise` successes.
        ("+x", &[Up, Down]),
        ("+x+", &[Up, Down, Down]),
        ("+x++", &[Up, Down, Down, Up]),
    ];
    for (input, expected) in table {
        assert_eq!(run_sequence(input), *expected, "sequence {input:?}");
    }
}

#[test]
fn record_reports_only_transitions() {
    let mut state = ProbeState::default();
    assert_eq!(state.record(true, "ok", &config()), Some(Health::Up));
    assert_eq!(state.record(true, "ok", &config()), None);
    assert_eq!(state.record(false, "refused", &config()), None);
    assert_eq!(
        state.record(false, "refused", &config()),
        Some(Health::Down)
    );
    assert_eq!(state.detail(), "refused");
    assert_eq!(state.consecutive_fail(), 2);
    assert_eq!(state.force_down("closed"), None);
}

#[test]
fn pace_rechecks_quickly_only_while_a_change_is_pending() {
    let config = config();
    let (n, f) = (500, 100);
    let table: &[(&str, &[u64])] = &[
        ("++++", &[n, n, n, n]),
        // A first failure, and a failure after successes, are rechecked quickly until `fall`
        // failures settle the state.
        ("--", &[f, n]),
        ("++--", &[n, n, f, n]),
        // Recovery likewise needs `rise` successes.
        ("--++", &[f, n, f, n]),
        // A single blip costs one fast recheck per direction.
        ("++-+", &[n, n, f, f]),
    ];
    for (input, expected) in table {
        let mut pace = Pace::new(&config, Duration::from_millis(n), Duration::from_millis(f));
        let waits: Vec<u64> = input
            .chars()
            .map(|c| pace.record(c == '+').as_millis() as u64)
            .collect();
        assert_eq!(waits, *expected, "sequence {input:?}");
    }
}

async fn next_result(results: &mut mpsc::Receiver<ProbeResult>) -> ProbeResult {
    tokio::time::timeout(Duration::from_secs(5), results.recv())
        .await
        .expect("a probe result within 5 s")
        .expect("prober alive")
}

#[tokio::test]
async fn backend_probe_connects_and_fails_after_close() {
    // A port below the ephemeral range: once closed, no other test's bind to port 0 can take
    // it and answer the probe.
    let port = meridian_tests::net::free_port(std::net::Ipv4Addr::LOCALHOST.into());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ProbeConfig {
        backend_interval: Duration::from_millis(50),
        ..ProbeConfig::default()
    };
    let targets = ProbeTargets {
        gateways: BTreeMap::new(),
        backends: BTreeSet::from([addr]),
    };
    let (_targets_tx, targets_rx) = watch::channel(Arc::new(targets));
    let (results_tx, mut results_rx) = mpsc::channel(16);
    let _prober = Prober::spawn(config, targets_rx, results_tx);

    let first = next_result(&mut results_rx).await;
    assert_eq!(first.target, ProbeTarget::Backend(addr));
    assert!(first.ok, "{first:?}");

    drop(listener);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe never failed"
        );
        let result = next_result(&mut results_rx).await;
        if !result.ok {
            assert!(result.detail.contains(&addr.to_string()), "{result:?}");
            break;
        }
    }
}

#[tokio::test]
async fn gateway_probe_reads_ready_status_and_stops_when_target_removed() {
    // A minimal admin server: /ready answers 200 while `ready` is true, 503 after.
    let (ready_tx, ready_rx) = watch::channel(true);
    let app = axum::Router::new().route(
        "/ready",
        axum::routing::get(move || {
            let ready = *ready_rx.borrow();
            async move {
                if ready {
                    http::StatusCode::OK
                } else {
                    http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = ProbeConfig {
        gateway_interval: Duration::from_millis(50),
        ..ProbeConfig::default()
    };
    let targets = ProbeTargets {
        gateways: BTreeMap::from([(7, admin.to_string())]),
        backends: BTreeSet::new(),
    };
    let (targets_tx, targets_rx) = watch::channel(Arc::new(targets));
    let (results_tx, mut results_rx) = mpsc::channel(16);
    let _prober = Prober::spawn(config, targets_rx, results_tx);

    let first = next_result(&mut results_rx).await;
    assert_eq!(first.target, ProbeTarget::Gateway { session: 7 });
    assert!(first.ok, "{first:?}");

    ready_tx.send(false).unwrap();
    loop {
        let result = next_result(&mut results_rx).await;
        if !result.ok {
            assert_eq!(result.detail, "GET /ready answered 503");
            break;
        }
    }

    // Removing the target stops its loop: the channel drains and then stays empty while the
    // sender side (the prober) is alive, which a closed receiver would not show.
    targets_tx.send(Arc::new(ProbeTargets::default())).unwrap();
    let quiet = async {
        loop {
            match tokio::time::timeout(Duration::from_millis(300), results_rx.recv()).await {
                Err(_) => return true,
                Ok(Some(_)) => continue,
                Ok(None) => return false,
            }
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(5), quiet)
            .await
            .unwrap()
    );
}
