//! Session persistence (GEP-1619, experimental channel; upstream has no conformance test for
//! it yet): cookie and header sessions pin a client to one endpoint of a Service with several,
//! survive nothing but that endpoint, and expire.

use std::time::{Duration, Instant};

use super::harness::*;

/// One Service (`sticky`) whose three endpoints are the three infra echo backends, one
/// EndpointSlice each (a slice has one port per name, and each echo listens on its own port).
fn sticky_service(endpoints: &[&str]) -> String {
    let mut text = String::from(
        "apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: gateway-conformance-infra}
spec:
  ports: [{name: http, port: 8080}]
",
    );
    for echo in endpoints {
        text.push_str(&format!(
            "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sticky-{echo}
  namespace: gateway-conformance-infra
  labels: {{kubernetes.io/service-name: sticky}}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
ports:
- {{name: http, port: {{{{PORT:{echo}}}}}}}
"
        ));
    }
    text
}

const ROUTES: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: sessions, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cookie}}]
    backendRefs: [{name: sticky, port: 8080}]
    sessionPersistence:
      sessionName: shop-session
      absoluteTimeout: 1h
      cookieConfig: {lifetimeType: Permanent}
  - matches: [{path: {type: PathPrefix, value: /header}}]
    backendRefs: [{name: sticky, port: 8080}]
    sessionPersistence: {type: Header, sessionName: X-Session}
  - matches: [{path: {type: PathPrefix, value: /short}}]
    backendRefs: [{name: sticky, port: 8080}]
    sessionPersistence: {absoluteTimeout: 3s}
  - matches: [{path: {type: PathPrefix, value: /plain}}]
    backendRefs: [{name: sticky, port: 8080}]
"#;

const ALL: [&str; 3] = ["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"];

struct Answer {
    pod: String,
    set_cookie: Option<String>,
    session_header: Option<String>,
}

async fn send(suite: &Suite, path: &str, header: Option<(&str, &str)>) -> Answer {
    let mut request = client()
        .get(format!("http://{}{path}", suite.addr("HTTP")))
        .header("host", "example.com");
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    let text = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let set_cookie = text("set-cookie");
    let session_header = text("x-session");
    let body: serde_json::Value = response.json().await.unwrap();
    let pod = body["pod"].as_str().unwrap();
    // The echo's pod name is "<service>-<hash>"; keep the Service part.
    let pod = ALL.iter().find(|name| pod.starts_with(*name)).unwrap();
    Answer {
        pod: pod.to_string(),
        set_cookie,
        session_header,
    }
}

/// `name=value` of a Set-Cookie field.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

fn start() -> Suite {
    let manifests = format!(
        "{SAME_NAMESPACE_GATEWAY}{}---\n{ROUTES}",
        sticky_service(&ALL)
    );
    Suite::new().start("gateway-conformance-infra/same-namespace", &manifests)
}

#[tokio::test]
async fn http_route_session_persistence_cookie() {
    let suite = start();

    // Without a session the gateway spreads requests over the three endpoints.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let answer = send(&suite, "/plain", None).await;
        assert_eq!(answer.set_cookie, None, "a rule without sessionPersistence");
        seen.insert(answer.pod);
    }
    assert_eq!(seen.len(), 3, "round robin over three endpoints: {seen:?}");

    let first = send(&suite, "/cookie/cart", None).await;
    let set_cookie = first.set_cookie.expect("a new session sets its cookie");
    assert!(set_cookie.starts_with("shop-session="), "{set_cookie}");
    assert!(
        set_cookie.ends_with("; Path=/cookie; Max-Age=3600; HttpOnly"),
        "{set_cookie}"
    );
    let cookie = format!("theme=dark; {}", cookie_pair(&set_cookie));
    for _ in 0..12 {
        let answer = send(&suite, "/cookie/cart", Some(("cookie", &cookie))).await;
        assert_eq!(answer.pod, first.pod, "the session stays on its endpoint");
        assert_eq!(
            answer.set_cookie, None,
            "an unchanged session is not reissued"
        );
    }

    // Its endpoint goes away: the session moves to another one, with a new cookie.
    let rest: Vec<&str> = ALL.iter().copied().filter(|e| *e != first.pod).collect();
    suite.write(
        "10-test.yaml",
        &format!(
            "{SAME_NAMESPACE_GATEWAY}{}---\n{ROUTES}",
            sticky_service(&rest)
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let moved = loop {
        let answer = send(&suite, "/cookie/cart", Some(("cookie", &cookie))).await;
        if answer.pod != first.pod {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never dropped the endpoint"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let set_cookie = moved
        .set_cookie
        .expect("the moved session gets a new cookie");
    let cookie = cookie_pair(&set_cookie);
    for _ in 0..6 {
        let answer = send(&suite, "/cookie/cart", Some(("cookie", &cookie))).await;
        assert_eq!(answer.pod, moved.pod, "the new session sticks too");
    }
}

#[tokio::test]
async fn http_route_session_persistence_header() {
    let suite = start();
    let first = send(&suite, "/header", None).await;
    let token = first.session_header.expect("a new session sets its header");
    assert_eq!(first.set_cookie, None);
    for _ in 0..12 {
        let answer = send(&suite, "/header", Some(("x-session", &token))).await;
        assert_eq!(answer.pod, first.pod, "the session stays on its endpoint");
    }
    // A token the gateway cannot read starts a new session.
    let fresh = send(&suite, "/header", Some(("x-session", "not-a-token"))).await;
    assert!(fresh.session_header.is_some());
}

#[tokio::test]
async fn http_route_session_persistence_expires() {
    let suite = start();
    let first = send(&suite, "/short", None).await;
    let set_cookie = first.set_cookie.expect("a new session sets its cookie");
    assert!(
        set_cookie.ends_with("; Path=/short; HttpOnly"),
        "a session cookie has no Max-Age: {set_cookie}"
    );
    let cookie = cookie_pair(&set_cookie);
    assert!(
        cookie.starts_with("meridian-session-"),
        "a generated name: {cookie}"
    );
    let again = send(&suite, "/short", Some(("cookie", &cookie))).await;
    assert_eq!(again.pod, first.pod);
    assert_eq!(again.set_cookie, None);
    // Past the 3 s absolute timeout (tokens count whole seconds) the session is over: the next
    // request starts a new one. (3 s, not 1 s: the request above must still fall inside it
    // on a machine that stalls.)
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let expired = send(&suite, "/short", Some(("cookie", &cookie))).await;
    assert!(
        expired.set_cookie.is_some(),
        "an expired session is replaced"
    );
}
