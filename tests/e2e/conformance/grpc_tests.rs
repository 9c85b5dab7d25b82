//! GRPCRoute conformance tests (GA: conformance/tests/grpcroute-*.go). The echo backends speak
//! h2c but not gRPC, so these check the gateway's part: gRPC requests (h2c, content-type
//! `application/grpc`) reach the backend the route names, and unmatched methods get the gRPC
//! status `Unimplemented` (12) from the gateway itself.

use std::time::Duration;

use super::harness::*;

const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// Sends a gRPC-shaped POST over h2c; returns (HTTP status, grpc-status, answering pod).
async fn grpc_call(
    client: &reqwest::Client,
    suite: &Suite,
    authority: &str,
    method: &str,
    metadata: &[(&str, &str)],
) -> Result<(u16, Option<String>, Option<String>), String> {
    let url = format!(
        "http://{authority}:{}/{SERVICE}/{method}",
        suite.addr("HTTP").port()
    );
    let mut request = client
        .post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8, 0, 0, 0, 0]);
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.map_err(|e| e.to_string())?;
    let pod = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["pod"].as_str().map(str::to_string));
    Ok((status, grpc_status, pod))
}

fn h2c_client(suite: &Suite, hosts: &[&str]) -> reqwest::Client {
    meridian_tests::init_crypto();
    let mut builder = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10));
    for host in hosts {
        builder = builder.resolve(host, suite.addr("HTTP"));
    }
    builder.build().unwrap()
}

async fn expect(
    client: &reqwest::Client,
    suite: &Suite,
    authority: &str,
    method: &str,
    metadata: &[(&str, &str)],
    want: Result<&str, &str>,
) {
    let what = format!("{authority} {method} {metadata:?}");
    meridian_tests::eventually(&what, Duration::from_secs(30), || async {
        let (status, grpc_status, pod) =
            grpc_call(client, suite, authority, method, metadata).await?;
        match want {
            Ok(backend)
                if status == 200 && pod.as_deref().is_some_and(|p| p.starts_with(backend)) =>
            {
                Ok(())
            }
            Err(code) if status == 200 && grpc_status.as_deref() == Some(code) => Ok(()),
            _ => Err(format!(
                "status {status}, grpc-status {grpc_status:?}, pod {pod:?}"
            )),
        }
    })
    .await;
}

/// (gRPC metadata, the backend that must answer or the gRPC status the gateway must return).
type Case<'a> = (&'a [(&'a str, &'a str)], Result<&'a str, &'a str>);

fn grpc_route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: gateway-conformance-infra}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n{spec}---\n"
    )
}

/// The `same-namespace` Gateway with one GRPCRoute, and an h2c client for `grpc.example`.
fn start_same_namespace(name: &str, spec: &str) -> (Suite, reqwest::Client) {
    let suite = Suite::new().start(
        "gateway-conformance-infra/same-namespace",
        &format!("{SAME_NAMESPACE_GATEWAY}{}", grpc_route(name, spec)),
    );
    let client = h2c_client(&suite, &["grpc.example"]);
    (suite, client)
}

#[tokio::test]
async fn grpc_exact_method_matching() {
    let spec = format!(
        r#"  rules:
  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8081}}]
  - matches: [{{method: {{service: {SERVICE}, method: EchoTwo}}}}]
    backendRefs: [{{name: infra-backend-v2, port: 8081}}]
"#
    );
    let (suite, client) = start_same_namespace("exact-matching", &spec);
    expect(
        &client,
        &suite,
        "grpc.example",
        "Echo",
        &[],
        Ok("infra-backend-v1"),
    )
    .await;
    expect(
        &client,
        &suite,
        "grpc.example",
        "EchoTwo",
        &[],
        Ok("infra-backend-v2"),
    )
    .await;
    expect(&client, &suite, "grpc.example", "EchoThree", &[], Err("12")).await;
}

#[tokio::test]
async fn grpc_route_header_matching() {
    let spec = r#"  rules:
  - matches: [{headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v1, port: 8081}]
  - matches: [{headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8081}]
  - matches: [{headers: [{name: version, value: two}, {name: color, value: orange}]}]
    backendRefs: [{name: infra-backend-v1, port: 8081}]
  - matches: [{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]
    backendRefs: [{name: infra-backend-v1, port: 8081}]
  - matches: [{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]
    backendRefs: [{name: infra-backend-v2, port: 8081}]
"#;
    let (suite, client) = start_same_namespace("grpc-header-matching", spec);
    let cases: &[Case<'_>] = &[
        (&[("version", "one")], Ok("infra-backend-v1")),
        (&[("version", "two")], Ok("infra-backend-v2")),
        (
            &[("version", "two"), ("color", "orange")],
            Ok("infra-backend-v1"),
        ),
        (&[("color", "blue")], Ok("infra-backend-v1")),
        (&[("color", "red")], Ok("infra-backend-v2")),
        (&[("color", "purple")], Err("12")),
        (&[], Err("12")),
    ];
    for (metadata, want) in cases {
        expect(&client, &suite, "grpc.example", "Echo", metadata, *want).await;
    }
}

#[tokio::test]
async fn grpc_route_listener_hostname_matching() {
    // GRPCRouteListenerHostnameMatching: four listeners on one port, told apart by hostname;
    // each route attaches to some by sectionName.
    let manifests = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: grpcroute-listener-hostname-matching, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: meridian
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: listener-1, port: {{{{HTTP}}}}, protocol: HTTP, hostname: bar.com}}
  - {{name: listener-2, port: {{{{HTTP}}}}, protocol: HTTP, hostname: foo.bar.com}}
  - {{name: listener-3, port: {{{{HTTP}}}}, protocol: HTTP, hostname: "*.bar.com"}}
  - {{name: listener-4, port: {{{{HTTP}}}}, protocol: HTTP, hostname: "*.foo.com"}}
---
{}{}{}"#,
        listener_route(
            "backend-v1",
            "[{name: grpcroute-listener-hostname-matching, sectionName: listener-1}]",
            "infra-backend-v1"
        ),
        listener_route(
            "backend-v2",
            "[{name: grpcroute-listener-hostname-matching, sectionName: listener-2}]",
            "infra-backend-v2"
        ),
        listener_route(
            "backend-v3",
            "[{name: grpcroute-listener-hostname-matching, sectionName: listener-3}, {name: grpcroute-listener-hostname-matching, sectionName: listener-4}]",
            "infra-backend-v3"
        ),
    );
    let suite = Suite::new().start(
        "gateway-conformance-infra/grpcroute-listener-hostname-matching",
        &manifests,
    );
    let hosts = [
        "bar.com",
        "foo.bar.com",
        "baz.bar.com",
        "boo.bar.com",
        "multiple.prefixes.bar.com",
        "multiple.prefixes.foo.com",
        "foo.com",
        "no.matching.host",
    ];
    let client = h2c_client(&suite, &hosts);
    let routed = [
        ("bar.com", "infra-backend-v1"),
        ("foo.bar.com", "infra-backend-v2"),
        ("baz.bar.com", "infra-backend-v3"),
        ("boo.bar.com", "infra-backend-v3"),
        ("multiple.prefixes.bar.com", "infra-backend-v3"),
        ("multiple.prefixes.foo.com", "infra-backend-v3"),
    ];
    for (host, backend) in routed {
        expect(&client, &suite, host, "Echo", &[], Ok(backend)).await;
    }
    // No listener claims these names: no backend answers, and the gateway says so in gRPC
    // terms.
    for host in ["foo.com", "no.matching.host"] {
        let answer = grpc_call(&client, &suite, host, "Echo", &[]).await.unwrap();
        assert_eq!(answer, (200, Some("12".to_string()), None), "{host}");
    }
}

/// A GRPCRoute `name` with `parent_refs` (a flow sequence) sending everything to `backend`.
fn listener_route(name: &str, parent_refs: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: gateway-conformance-infra}}\nspec:\n  parentRefs: {parent_refs}\n  rules: [{{backendRefs: [{{name: {backend}, port: 8081}}]}}]\n---\n"
    )
}

#[tokio::test]
async fn grpc_route_weight() {
    // GRPCRouteWeight: calls split by backendRef weight. The split is exact over any window of
    // `total weight` consecutive calls (the gateway's weighted choice is deterministic).
    let spec = r#"  rules:
  - backendRefs:
    - {name: infra-backend-v1, port: 8081, weight: 70}
    - {name: infra-backend-v2, port: 8081, weight: 30}
    - {name: infra-backend-v3, port: 8081, weight: 0}
"#;
    let (suite, client) = start_same_namespace("weighted-backends", spec);
    expect(
        &client,
        &suite,
        "grpc.example",
        "Echo",
        &[],
        Ok("infra-backend"),
    )
    .await;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let (status, _, pod) = grpc_call(&client, &suite, "grpc.example", "Echo", &[])
            .await
            .unwrap();
        assert_eq!(status, 200);
        let pod = pod.unwrap();
        let backend = pod.rsplitn(3, '-').nth(2).unwrap().to_string();
        *counts.entry(backend).or_insert(0) += 1;
    }
    let want: std::collections::BTreeMap<String, i32> = [
        ("infra-backend-v1".to_string(), 140),
        ("infra-backend-v2".to_string(), 60),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, want);
}

/// Not an upstream test: a GRPCRoute for one host next to a catch-all HTTPRoute (no hostnames).
/// Their listed hostnames do not intersect, so both serve (as in Envoy Gateway): gRPC for that
/// host goes to the GRPCRoute, everything else to the HTTPRoute. Before, the GRPCRoute
/// (first by name, files carry no creation time) took the HTTPRoute off the air for every host.
#[tokio::test]
async fn a_grpc_route_for_one_host_leaves_a_catch_all_http_route_serving() {
    let routes = format!(
        "{}apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web, namespace: gateway-conformance-infra}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  rules: [{{backendRefs: [{{name: infra-backend-v2, port: 8080}}]}}]\n",
        grpc_route(
            "a-grpc",
            "  hostnames: [grpc.example]\n  rules: [{backendRefs: [{name: infra-backend-v1, port: 8081}]}]\n",
        )
    );
    let suite = Suite::new().start(
        "gateway-conformance-infra/same-namespace",
        &format!("{SAME_NAMESPACE_GATEWAY}{routes}"),
    );
    let client = h2c_client(&suite, &["grpc.example"]);
    expect(
        &client,
        &suite,
        "grpc.example",
        "Echo",
        &[],
        Ok("infra-backend-v1"),
    )
    .await;
    check_all(
        &suite,
        &[
            (get("www.example.com", "/"), ok("infra-backend-v2")),
            (get("grpc.example", "/page"), ok("infra-backend-v2")),
        ],
    )
    .await;
}
