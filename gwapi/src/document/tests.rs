//! Tests for document splitting and parsing: good documents are kept, each bad one is reported
//! with its file, document number, object and field path.

use super::*;

fn problems_of(text: &str) -> Vec<String> {
    parse_documents(text, "routes.yaml")
        .1
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn kinds_of(text: &str) -> Vec<String> {
    parse_documents(text, "routes.yaml")
        .0
        .iter()
        .map(|o| match &o.resource {
            Resource::GatewayClass(_) => "GatewayClass".to_string(),
            Resource::Gateway(_) => "Gateway".to_string(),
            Resource::HttpRoute(_) => "HTTPRoute".to_string(),
            Resource::GrpcRoute(_) => "GRPCRoute".to_string(),
            Resource::TlsRoute(_) => "TLSRoute".to_string(),
            Resource::ReferenceGrant(_) => "ReferenceGrant".to_string(),
            Resource::Service(_) => "Service".to_string(),
            Resource::EndpointSlice(_) => "EndpointSlice".to_string(),
            Resource::Secret(_) => "Secret".to_string(),
            Resource::ConfigMap(_) => "ConfigMap".to_string(),
            Resource::Namespace(_) => "Namespace".to_string(),
            Resource::BackendTlsPolicy(_) => "BackendTLSPolicy".to_string(),
            Resource::Ignored { kind, .. } => format!("ignored {kind}"),
        })
        .collect()
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n";
const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  parentRefs:\n  - name: gw\n";

#[test]
fn good_documents_survive_bad_neighbours() {
    let text =
        format!("# leading comment\n---\n{SERVICE}---\napiVersion: v1\nkind: [\n---\n{ROUTE}...\n");
    assert_eq!(kinds_of(&text), ["Service", "HTTPRoute"]);
    assert_eq!(
        problems_of(&text),
        ["routes.yaml doc 2: invalid YAML at line 13 column 7: unclosed bracket '['"]
    );
}

#[test]
fn each_document_problem_names_file_doc_object_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: abc\n",
            "routes.yaml doc 1 Service default/web: spec.ports[0].port: invalid type: string \"abc\", expected an integer",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {app: yes}\n",
            "routes.yaml doc 1 Service default/web: metadata.labels.app: invalid type: boolean `true`, expected a string (YAML reads y, n, yes, no, on and off as booleans: quote the value)",
        ),
        (
            "kind: Service\nmetadata:\n  name: web\n",
            "routes.yaml doc 1: apiVersion: required field is missing or not a string",
        ),
        (
            "apiVersion: v1\nmetadata:\n  name: web\n",
            "routes.yaml doc 1: kind: required field is missing or not a string",
        ),
        (
            "- a\n- b\n",
            "routes.yaml doc 1: expected a Kubernetes object (a mapping with apiVersion and kind), found a list",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1alpha1\nkind: HTTPRoute\nmetadata:\n  name: web\n",
            "routes.yaml doc 1 HTTPRoute: apiVersion: unsupported value \"gateway.networking.k8s.io/v1alpha1\" for kind HTTPRoute (supported: gateway.networking.k8s.io/v1, gateway.networking.k8s.io/v1beta1)",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: shop\n",
            "routes.yaml doc 1 Service: metadata.name: required field is missing",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: Web\n",
            "routes.yaml doc 1 Service default/Web: metadata.name: \"Web\" is not a valid object name: contains 'W'; only lower-case letters, digits and '-' are allowed",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: web\n  namespace: shop\n  creationTimestamp: yesterday\n",
            "routes.yaml doc 1 HTTPRoute shop/web: metadata.creationTimestamp: \"yesterday\" is not an RFC 3339 timestamp: the 'year' component could not be parsed",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: web\nspec:\n  rules:\n  - matches:\n    - path:\n        type: PathPrefix\n        value: foo\n",
            "routes.yaml doc 1 HTTPRoute default/web: spec.rules[0].matches[0].path.value: must start with '/'",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(problems_of(text), [*expected], "for {text}");
    }
}

#[test]
fn documents_are_numbered_from_one_skipping_empty_ones() {
    let text = format!(
        "---\n---\n# only a comment\n---\n{SERVICE}---\n{}",
        ROUTE.replace("name: gw", "name: gw\n  hostnames: [\"Bad\"]")
    );
    let problems = problems_of(&text);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].starts_with("routes.yaml doc 2 HTTPRoute shop/web: spec.hostnames[0]: "),
        "{problems:?}"
    );
}

#[test]
fn json_text_and_lists_parse_like_yaml() {
    let json = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop","labels":{"team":"a"}}},
        {"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"shop"},"spec":{"ports":[{"port":80}]}}
    ]}"#;
    assert_eq!(kinds_of(json), ["Namespace", "Service"]);
    assert!(problems_of(json).is_empty());
}

#[test]
fn unknown_kinds_are_ignored_not_reported() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: c\n";
    assert_eq!(kinds_of(text), ["ignored Deployment", "ignored Pod"]);
    assert!(problems_of(text).is_empty());
}

#[test]
fn unknown_fields_outside_a_gateway_api_spec_are_ignored() {
    // Exported objects carry status, metadata Meridian has no use for, and core kinds many
    // more fields than it reads.
    let text = format!("{ROUTE}status:\n  parents: []\n---\n{SERVICE}  sessionAffinity: None\n")
        .replace(
            "  namespace: shop\n",
            "  namespace: shop\n  uid: x\n  resourceVersion: \"1\"\n",
        );
    assert_eq!(kinds_of(&text), ["HTTPRoute", "Service"]);
    assert!(problems_of(&text).is_empty(), "{:?}", problems_of(&text));
}

#[test]
fn an_unknown_field_in_a_gateway_api_spec_drops_the_object_unless_the_api_server_vouched() {
    // `matchez` for `matches`: ignoring it would leave the rule's match-all default.
    let text = format!(
        "{ROUTE}  rules:\n  - matchez: [{{path: {{type: PathPrefix, value: /secret}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n"
    );
    assert!(kinds_of(&text).is_empty());
    let problems = parse_documents(&text, "routes.yaml").1;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].fatal);
    let message = problems[0].to_string();
    assert!(message.contains("spec.rules[0].matchez"), "{message}");
    assert!(message.contains("unknown field"), "{message}");

    // From the Kubernetes API server (validated against the installed CRDs): a newer field
    // Meridian does not implement is a warning, and the object is kept.
    let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let (object, problems) =
        crate::parse_value(value, &crate::Origin::new("kubernetes", None).lenient());
    assert!(object.is_some());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(!problems[0].fatal);
}

#[test]
fn document_markers_follow_yaml() {
    let cases: &[(&str, usize)] = &[
        ("", 0),
        ("---\n", 0),
        (
            "--- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n",
            1,
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n...\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
            2,
        ),
        (
            "apiVersion: v1\r\nkind: Namespace\r\nmetadata: {name: a}\r\n---\r\napiVersion: v1\r\nkind: Namespace\r\nmetadata: {name: b}\r\n",
            2,
        ),
        // `---` inside a block scalar is indented, so it does not split the document.
        (
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  annotations:\n    note: |\n      ---\n      text\n",
            1,
        ),
    ];
    for (text, n_objects) in cases {
        let (objects, problems) = parse_documents(text, "f.yaml");
        assert!(problems.is_empty(), "{text:?}: {problems:?}");
        assert_eq!(objects.len(), *n_objects, "{text:?}");
    }
}

#[test]
fn parse_value_feeds_a_watcher() {
    let value = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"env": "prod"}}
    });
    let (object, problems) = parse_value(value, &Origin::new("watch", None));
    assert!(problems.is_empty());
    let Some(Object {
        resource: Resource::Namespace(ns),
        ..
    }) = object
    else {
        panic!("expected a Namespace, got {object:?}");
    };
    assert_eq!(
        ns.metadata.labels.get("env").map(String::as_str),
        Some("prod")
    );
}

#[test]
fn secrets_keep_bad_data_but_report_it() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: tls\ntype: kubernetes.io/tls\ndata:\n  tls.crt: '!!!'\n";
    assert_eq!(kinds_of(text), ["Secret"]);
    let problems = problems_of(text);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .starts_with("routes.yaml doc 1 Secret default/tls: data.tls.crt: invalid base64"),
        "{problems:?}"
    );
    // Debug output never shows secret values.
    let (objects, _) = parse_documents(text, "x");
    assert!(!format!("{objects:?}").contains("!!!"));
}

#[test]
fn endpoint_slices_drop_bad_addresses() {
    let text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\nendpoints:\n- addresses: [10.0.0.1, 'fe80::1', nope]\nports:\n- port: 8080\n";
    let (objects, problems) = parse_documents(text, "eps.yaml");
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "eps.yaml doc 1 EndpointSlice default/web-1: endpoints[0].addresses[1]: \"fe80::1\" does not match addressType IPv4",
            "eps.yaml doc 1 EndpointSlice default/web-1: endpoints[0].addresses[2]: \"nope\" is not an IP address",
        ]
    );
    let Resource::EndpointSlice(slice) = &objects[0].resource else {
        panic!("expected an EndpointSlice");
    };
    assert_eq!(slice.endpoints[0].addresses, ["10.0.0.1"]);
}

#[test]
fn alias_bombs_are_refused_not_expanded() {
    let mut text = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\nbomb:\n  l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for level in 1..10 {
        let previous = format!("*l{}", level - 1);
        text.push_str(&format!(
            "  l{level}: &l{level} [{}]\n",
            vec![previous; 10].join(", ")
        ));
    }
    let text = format!("{text}---\n{SERVICE}");
    let (objects, problems) = parse_documents(&text, "bomb.yaml");
    assert_eq!(objects.len(), 1, "the next document still parses");
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .to_string()
            .starts_with("bomb.yaml doc 1: invalid YAML"),
        "{}",
        problems[0]
    );
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: a}}\nx: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (objects, problems) = parse_documents(&text, "deep.yaml");
    assert!(objects.is_empty());
    assert_eq!(problems.len(), 1);
    let json = format!(
        "{{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"x\": {}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (objects, problems) = parse_documents(&json, "deep.json");
    assert!(objects.is_empty());
    assert_eq!(problems.len(), 1);
}

#[test]
fn problems_are_fatal_only_when_their_object_is_dropped() {
    // (document, kinds kept, fatal flag of each problem)
    let cases: &[(&str, &[&str], &[bool])] = &[
        // A listener with an unsupported protocol becomes a listener condition: the Gateway
        // is kept and the problem is not fatal.
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\nspec:\n  gatewayClassName: meridian\n  listeners:\n  - {name: web, port: 80, protocol: HTTP}\n  - {name: db, port: 5432, protocol: TCP}\n",
            &["Gateway"],
            &[false],
        ),
        // A Gateway without listeners is dropped.
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\nspec:\n  gatewayClassName: meridian\n  listeners: []\n",
            &[],
            &[true],
        ),
        // One invalid rule is dropped (PartiallyInvalid), the route kept.
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: shop}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {value: /ok}}]\n  - matches: [{path: {value: no-slash}}]\n",
            &["HTTPRoute"],
            &[false],
        ),
        // A type error drops the object.
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: shop}\nspec:\n  rules: 7\n",
            &[],
            &[true],
        ),
        // Bad YAML drops the document.
        ("kind: [", &[], &[true]),
    ];
    for (text, kinds, fatal) in cases {
        let (_, problems) = parse_documents(text, "x.yaml");
        assert_eq!(kinds_of(text), *kinds, "{text}");
        let flags: Vec<bool> = problems.iter().map(|p| p.fatal).collect();
        assert_eq!(flags, *fatal, "{text}: {problems:?}");
    }
}
