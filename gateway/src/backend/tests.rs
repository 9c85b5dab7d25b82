//! Weighted selection tests (fixed seed, so they are deterministic).

use std::sync::Arc;

use rand::{RngCore, SeedableRng};

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

fn shares(backends: &WeightedBackends, n: usize) -> std::collections::BTreeMap<String, f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let choice = backends.pick_with(rng.next_u64()).unwrap();
        let BackendTarget::Invalid { name, .. } = &choice.target else {
            unreachable!()
        };
        *counts.entry(name.to_string()).or_insert(0usize) += 1;
    }
    counts
        .into_iter()
        .map(|(k, v)| (k, v as f64 / n as f64))
        .collect()
}

#[test]
fn weights_give_proportional_shares_and_zero_never() {
    let backends =
        WeightedBackends::new(vec![invalid("v1", 70), invalid("v2", 30), invalid("v3", 0)]);
    let got = shares(&backends, 100_000);
    assert!((got["v1"] - 0.70).abs() < 0.01, "{got:?}");
    assert!((got["v2"] - 0.30).abs() < 0.01, "{got:?}");
    assert!(!got.contains_key("v3"), "{got:?}");
}

#[test]
fn exact_boundaries_of_the_cumulative_table() {
    let backends = WeightedBackends::new(vec![invalid("a", 1), invalid("b", 2)]);
    let name = |r| match &backends.pick_with(r).unwrap().target {
        BackendTarget::Invalid { name, .. } => name.to_string(),
        BackendTarget::Service(_) => unreachable!(),
    };
    assert_eq!(name(0), "a");
    assert_eq!(name(1), "b");
    assert_eq!(name(2), "b");
    assert_eq!(name(3), "a");
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
