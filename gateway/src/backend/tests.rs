//! Weighted selection tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;

fn invalid(name: &str, weight: u32) -> BackendChoice {
    BackendChoice {
        weight,
        target: BackendTarget::Invalid {
            name: Arc::from(name),
            reason: Arc::from("BackendNotFound"),
        },
        filters: FilterSet::default(),
    }
}

fn name(choice: &BackendChoice) -> String {
    match &choice.target {
        BackendTarget::Invalid { name, .. } => name.to_string(),
        BackendTarget::Service(_) => unreachable!(),
    }
}

fn counts(backends: &WeightedBackends, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(name(backends.pick().unwrap())).or_insert(0) += 1;
    }
    counts
}

#[test]
fn every_total_consecutive_requests_split_exactly_and_zero_never() {
    let backends =
        WeightedBackends::new(vec![invalid("v1", 70), invalid("v2", 30), invalid("v3", 0)]);
    // Start mid-cycle: any window of `total` requests is exact, not only aligned ones.
    counts(&backends, 37);
    let got = counts(&backends, 500);
    assert_eq!(got["v1"], 350, "{got:?}");
    assert_eq!(got["v2"], 150, "{got:?}");
    assert!(!got.contains_key("v3"), "{got:?}");
}

#[test]
fn short_windows_stay_close_to_the_weights() {
    // A 5% canary must not get a run of requests: in every window of 20 it gets at most 2.
    let backends = WeightedBackends::new(vec![invalid("stable", 95), invalid("canary", 5)]);
    let seq: Vec<String> = (0..400).map(|_| name(backends.pick().unwrap())).collect();
    for window in seq.windows(20) {
        let canary = window.iter().filter(|n| *n == "canary").count();
        assert!(canary <= 2, "{window:?}");
    }
    // And a 1:1 split alternates rather than clumping.
    let even = WeightedBackends::new(vec![invalid("a", 1), invalid("b", 1)]);
    let seq: Vec<String> = (0..6).map(|_| name(even.pick().unwrap())).collect();
    assert!(seq.windows(2).all(|pair| pair[0] != pair[1]), "{seq:?}");
}

#[test]
fn large_and_uneven_weights_stay_exact() {
    let backends = WeightedBackends::new(vec![
        invalid("a", 1_000_000),
        invalid("b", 999_999),
        invalid("c", 1),
    ]);
    let total = backends.total_weight();
    assert_eq!(gcd(backends.stride, total), 1);
    let c = (0..total)
        .filter(|&n| name(backends.pick_nth(n).unwrap()) == "c")
        .count();
    assert_eq!(c, 1);
}

#[test]
fn all_zero_or_no_backends_pick_nothing() {
    assert!(
        WeightedBackends::new(vec![invalid("a", 0)])
            .pick()
            .is_none()
    );
    assert!(WeightedBackends::new(vec![]).pick().is_none());
}
