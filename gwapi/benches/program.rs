//! Benchmarks for the agent's reload path at scale: parsing 10,000 HTTPRoutes from YAML,
//! building the object set, and programming one Gateway with all of them attached.
//!
//! Run with `cargo bench -p meridian-gwapi --bench program`.

use std::fmt::Write;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use meridian_gwapi::{ObjectSet, parse_documents, program};
use meridian_proto::model::ObjectKey;

const N_ROUTES: usize = 10_000;
const N_SERVICES: usize = 100;

/// One Gateway, `N_SERVICES` Services with a 3-endpoint EndpointSlice each, and `N_ROUTES`
/// HTTPRoutes with two rules each (a prefix match and a header match), each on its own host.
fn corpus() -> String {
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: bench}\nspec:\n  gatewayClassName: meridian\n  listeners:\n  - {name: http, port: 80, protocol: HTTP}\n  - {name: wild, port: 80, protocol: HTTP, hostname: '*.example.com'}\n",
    );
    for s in 0..N_SERVICES {
        let _ = write!(
            text,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: bench}}\nspec:\n  ports: [{{name: http, port: 8080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{s}-1, namespace: bench, labels: {{kubernetes.io/service-name: svc-{s}}}}}\naddressType: IPv4\nports: [{{name: http, port: 3000}}]\nendpoints:\n- addresses: [10.{}.{}.1]\n- addresses: [10.{}.{}.2]\n- addresses: [10.{}.{}.3]\n  conditions: {{ready: false}}\n",
            s / 256,
            s % 256,
            s / 256,
            s % 256,
            s / 256,
            s % 256
        );
    }
    for r in 0..N_ROUTES {
        let svc = r % N_SERVICES;
        let other = (r + 1) % N_SERVICES;
        let _ = write!(
            text,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: route-{r}, namespace: bench}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [app-{r}.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /api/v{r}}}}}]\n    backendRefs: [{{name: svc-{svc}, port: 8080, weight: 9}}, {{name: svc-{other}, port: 8080, weight: 1}}]\n  - matches: [{{headers: [{{name: x-version, value: canary}}], path: {{type: Exact, value: /}}}}]\n    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-route, value: r{r}}}]}}}}]\n    backendRefs: [{{name: svc-{other}, port: 8080}}]\n"
        );
    }
    text
}

fn bench(c: &mut Criterion) {
    let text = corpus();
    let gateway = ObjectKey {
        namespace: "bench".to_string(),
        name: "gw".to_string(),
    };
    let (objects, problems) = parse_documents(&text, "bench.yaml");
    assert!(problems.is_empty(), "corpus has problems: {problems:?}");
    let (set, problems) = ObjectSet::from_objects(objects.clone());
    assert!(problems.is_empty(), "corpus has problems: {problems:?}");
    let programmed = program(&set, &[], &gateway);
    assert_eq!(programmed.config.http_routes.len(), N_ROUTES);
    assert_eq!(programmed.config.backends.len(), N_SERVICES);

    let mut group = c.benchmark_group("gwapi_10k_routes");
    group.sample_size(10);
    group.bench_function("parse_documents", |b| {
        b.iter(|| parse_documents(black_box(&text), "bench.yaml"))
    });
    group.bench_function("object_set", |b| {
        b.iter(|| ObjectSet::from_objects(black_box(objects.clone())))
    });
    group.bench_function("program", |b| {
        b.iter(|| program(black_box(&set), &[], &gateway))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
