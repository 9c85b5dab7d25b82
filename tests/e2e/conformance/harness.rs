//! Conformance harness: backends, gateway process, manifests, request/expectation tables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meridian_tests::{Proc, ProcSpec};

/// The echo backends the upstream base manifests define (namespace, Service name).
pub const BACKENDS: &[(&str, &str)] = &[
    ("gateway-conformance-infra", "infra-backend-v1"),
    ("gateway-conformance-infra", "infra-backend-v2"),
    ("gateway-conformance-infra", "infra-backend-v3"),
    ("gateway-conformance-app-backend", "app-backend-v1"),
    ("gateway-conformance-app-backend", "app-backend-v2"),
    ("gateway-conformance-web-backend", "web-backend"),
];

/// A running suite: echo backends and a gateway serving a config directory.
pub struct Suite {
    /// Working directory (logs, ready files, config dir).
    pub dir: tempfile::TempDir,
    /// Echo backends by Service name.
    pub echoes: BTreeMap<String, (Proc, SocketAddr)>,
    /// The gateway process.
    pub gateway: Option<Proc>,
    /// Port substitutions (`{{HTTP}}` → port).
    pub ports: BTreeMap<&'static str, u16>,
    /// TLS material substitutions.
    pub certs: BTreeMap<String, meridian_tests::gateway::SelfSigned>,
    /// CA certificate PEMs for `{{CA:<id>}}` (frontend client certificate validation).
    pub cas: BTreeMap<String, String>,
    /// Environment variables of the gateway process (`SSL_CERT_FILE`).
    pub gateway_env: Vec<(String, String)>,
}

/// A certificate authority that issues client certificates (frontend mTLS tests).
pub struct TestCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A client certificate for `common_name` signed by this CA, as a client identity.
    pub fn client_identity(&self, common_name: &str) -> reqwest::Identity {
        self.client_identity_and_xfcc(common_name).0
    }

    /// [`Self::client_identity`], with the `X-Forwarded-Client-Cert` value a backend should
    /// get for it (Envoy's format: the DER's SHA-256 in hex and the URL-encoded PEM).
    pub fn client_identity_and_xfcc(&self, common_name: &str) -> (reqwest::Identity, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.der());
        let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let encoded: String = cert
            .pem()
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let xfcc = format!("Hash={hash};Cert=\"{encoded}\"");
        (reqwest::Identity::from_pem(pem.as_bytes()).unwrap(), xfcc)
    }
}

impl Suite {
    /// Starts the echo backends (no gateway yet).
    pub fn new() -> Self {
        meridian_tests::init_crypto();
        let dir = tempfile::tempdir().unwrap();
        let mut echoes = BTreeMap::new();
        for (namespace, name) in BACKENDS {
            // A pod-like name: the suite checks that the answering pod starts with the Service.
            let pod = format!("{name}-6c8d4b9f7-x2k4p");
            let spec = ProcSpec::new(
                name,
                crate::meridian_bin(),
                dir.path(),
                &["echo", "--name", &pod, "--namespace", namespace],
            );
            let (proc, ready) = Proc::start_ready(spec, Duration::from_secs(20));
            let addr: SocketAddr = ready["listen"].as_str().unwrap().parse().unwrap();
            echoes.insert(name.to_string(), (proc, addr));
        }
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let keys = ["HTTP", "HTTPS", "HTTPS_2", "HTTP_2", "HTTP_3", "TLS"];
        let free = meridian_tests::net::free_ports(ip, keys.len());
        let ports: BTreeMap<_, _> = keys.into_iter().zip(free).collect();
        Self {
            dir,
            echoes,
            gateway: None,
            ports,
            certs: BTreeMap::new(),
            cas: BTreeMap::new(),
            gateway_env: Vec::new(),
        }
    }

    /// A new CA, usable as `{{CA:<id>}}` in manifests (its PEM as a quoted YAML string, for a
    /// ConfigMap's `data`).
    pub fn ca(&mut self, id: &str) -> TestCa {
        let ca = TestCa::new(id);
        self.cas.insert(id.to_string(), ca.cert_pem.clone());
        ca
    }

    /// A self-signed certificate for `names`, usable as `{{CERT:<id>}}`/`{{KEY:<id>}}` in
    /// manifests (base64 PEM, as in a Secret's `data`).
    pub fn cert(&mut self, id: &str, names: &[&str]) -> rustls::pki_types::CertificateDer<'static> {
        let certified = meridian_tests::gateway::self_signed(names);
        let der = certified.der.clone();
        self.certs.insert(id.to_string(), certified);
        der
    }

    /// Starts one more echo backend, `name` in `namespace`, serving HTTPS with `leaf`; its
    /// port is `{{PORT:<name>}}` in manifests.
    pub fn tls_echo(&mut self, namespace: &str, name: &str, leaf: &meridian_tests::pki::Leaf) {
        self.tls_echo_with_client_ca(namespace, name, leaf, None);
    }

    /// As [`Suite::tls_echo`]; with `client_ca` (PEM) the echo requires a client certificate
    /// that chains to it and reports it as `tls.peerCertificates`.
    pub fn tls_echo_with_client_ca(
        &mut self,
        namespace: &str,
        name: &str,
        leaf: &meridian_tests::pki::Leaf,
        client_ca: Option<&str>,
    ) {
        let (cert, key) = leaf.write(self.dir.path(), name);
        let pod = format!("{name}-6c8d4b9f7-x2k4p");
        let cert = cert.display().to_string();
        let key = key.display().to_string();
        let mut args = vec![
            "echo",
            "--name",
            &pod,
            "--namespace",
            namespace,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        let ca_path = self.dir.path().join(format!("{name}-client-ca.pem"));
        let ca_arg = ca_path.display().to_string();
        if let Some(pem) = client_ca {
            std::fs::write(&ca_path, pem).unwrap();
            args.extend(["--client-ca", &ca_arg]);
        }
        let spec = ProcSpec::new(name, crate::meridian_bin(), self.dir.path(), &args);
        let (proc, ready) = Proc::start_ready(spec, Duration::from_secs(20));
        let addr: SocketAddr = ready["listen"].as_str().unwrap().parse().unwrap();
        self.echoes.insert(name.to_string(), (proc, addr));
    }

    /// The log of the gateway process.
    pub fn gateway_log(&self) -> String {
        self.gateway
            .as_ref()
            .and_then(|g| std::fs::read_to_string(g.spec().log_file()).ok())
            .unwrap_or_default()
    }

    /// The config directory.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Substitutes ports, endpoints and certificates into a manifest.
    pub fn render(&self, manifest: &str) -> String {
        let mut text = manifest.to_string();
        for (key, port) in &self.ports {
            text = text.replace(&format!("{{{{{key}}}}}"), &port.to_string());
        }
        for (name, (_, addr)) in &self.echoes {
            text = text.replace(&format!("{{{{PORT:{name}}}}}"), &addr.port().to_string());
        }
        for (id, certified) in &self.certs {
            text = text.replace(
                &format!("{{{{CERT:{id}}}}}"),
                &base64(certified.cert_pem.as_bytes()),
            );
            text = text.replace(
                &format!("{{{{KEY:{id}}}}}"),
                &base64(certified.key_pem.as_bytes()),
            );
        }
        for (id, pem) in &self.cas {
            // A JSON string is a valid YAML double-quoted scalar.
            text = text.replace(
                &format!("{{{{CA:{id}}}}}"),
                &serde_json::Value::String(pem.clone()).to_string(),
            );
        }
        assert!(
            !text.contains("{{"),
            "unsubstituted placeholder in manifest:\n{text}"
        );
        text
    }

    /// Writes `name` into the config directory (atomically).
    pub fn write(&self, name: &str, manifest: &str) {
        let dir = self.config_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, self.render(manifest)).unwrap();
        std::fs::rename(tmp, dir.join(name)).unwrap();
    }

    /// Writes the base manifests plus `manifest` and starts the gateway for `gateway`.
    pub fn start(mut self, gateway: &str, manifest: &str) -> Self {
        self.write("00-base.yaml", &base_manifests());
        self.write("10-test.yaml", manifest);
        let dir = self.config_dir().display().to_string();
        let mut spec = ProcSpec::new(
            "gateway",
            crate::meridian_bin(),
            self.dir.path(),
            &[
                "gateway",
                "--config-dir",
                &dir,
                "--gateway",
                gateway,
                "--poll-ms",
                "100",
            ],
        );
        for (name, value) in &self.gateway_env {
            spec = spec.env(name, value);
        }
        let (proc, ready) = Proc::start_ready(spec, Duration::from_secs(20));
        assert!(
            ready["version"].as_u64().unwrap() >= 1,
            "gateway did not apply the config: {ready}"
        );
        self.gateway = Some(proc);
        self
    }

    /// `127.0.0.1:<port>` of a substitution key.
    pub fn addr(&self, key: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[key]))
    }

    /// The log of an echo backend.
    pub fn echo_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.echoes[name].0.spec().log_file()).unwrap_or_default()
    }
}

/// Standard base64 (for Secret data).
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

/// Namespaces, the `same-namespace` Gateway (HTTP on `{{HTTP}}`) and the backend Services
/// with EndpointSlices pointing at the echo processes (GA: conformance/base/manifests.yaml).
pub fn base_manifests() -> String {
    let mut text = String::from(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-infra}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-app-backend, labels: {gateway-conformance: backend}}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-web-backend, labels: {gateway-conformance: backend}}
"#,
    );
    for (namespace, name) in BACKENDS {
        text.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports:
  - {{name: http, port: 8080, targetPort: {{{{PORT:{name}}}}}}}
  - {{name: h2c, port: 8081, targetPort: {{{{PORT:{name}}}}}, appProtocol: kubernetes.io/h2c}}
  - {{name: ws, port: 8082, targetPort: {{{{PORT:{name}}}}}, appProtocol: kubernetes.io/ws}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abcde
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
ports:
- {{name: http, port: {{{{PORT:{name}}}}}}}
- {{name: h2c, port: {{{{PORT:{name}}}}}, appProtocol: kubernetes.io/h2c}}
- {{name: ws, port: {{{{PORT:{name}}}}}, appProtocol: kubernetes.io/ws}}
"#
        ));
    }
    text
}

/// A Service `name` in `gateway-conformance-infra` with one port (`port_name`, `port`,
/// optional appProtocol) and an EndpointSlice on 127.0.0.1 whose target port is `target` (a
/// number, or a `{{PORT:<echo>}}` placeholder).
pub fn service_manifest(
    name: &str,
    port_name: &str,
    port: u16,
    target: &str,
    app_protocol: Option<&str>,
) -> String {
    let app = app_protocol.map_or(String::new(), |p| format!(", appProtocol: {p}"));
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  ports: [{{name: {port_name}, port: {port}, targetPort: {target}{app}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abcde
  namespace: gateway-conformance-infra
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
ports: [{{name: {port_name}, port: {target}{app}}}]
---
"#
    )
}

/// The `same-namespace` Gateway: one HTTP listener on `{{HTTP}}`, routes from its namespace.
pub const SAME_NAMESPACE_GATEWAY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - name: http
    port: {{HTTP}}
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Same}}
---
"#;

/// One request of a conformance table.
#[derive(Debug, Clone, Default)]
pub struct Req {
    /// Host header.
    pub host: String,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
}

/// What the answer must look like.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Acceptable statuses (default 200).
    pub status: Vec<u16>,
    /// The answering backend (Service name prefix of the pod).
    pub backend: Option<String>,
    /// The namespace the backend reports.
    pub namespace: Option<String>,
    /// Path and query the backend saw (default: the request's).
    pub backend_path: Option<String>,
    /// Host the backend saw.
    pub backend_host: Option<String>,
    /// Headers the backend must see (name, comma-joined value).
    pub backend_headers: Vec<(String, String)>,
    /// Headers the backend must not see.
    pub backend_absent: Vec<String>,
    /// Response headers (name, value).
    pub response_headers: Vec<(String, String)>,
    /// Response headers that must be absent.
    pub response_absent: Vec<String>,
    /// Redirect Location.
    pub location: Option<String>,
}

/// `GET host path` → 200 from `backend`.
pub fn get(host: &str, path: &str) -> Req {
    Req {
        host: host.into(),
        method: "GET".into(),
        path: path.into(),
        headers: vec![],
    }
}

impl Req {
    /// With a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// With a method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }
}

/// 200 from `backend`.
pub fn ok(backend: &str) -> Expect {
    Expect {
        status: vec![200],
        backend: Some(backend.into()),
        ..Expect::default()
    }
}

/// Status only.
pub fn status(codes: &[u16]) -> Expect {
    Expect {
        status: codes.to_vec(),
        ..Expect::default()
    }
}

impl Expect {
    /// The backend must see this header value.
    pub fn sees(mut self, name: &str, value: &str) -> Self {
        self.backend_headers.push((name.into(), value.into()));
        self
    }
    /// The backend must not see this header.
    pub fn not_sees(mut self, name: &str) -> Self {
        self.backend_absent.push(name.into());
        self
    }
    /// The backend must see this path (and query).
    pub fn path(mut self, path: &str) -> Self {
        self.backend_path = Some(path.into());
        self
    }
    /// The backend must see this Host.
    pub fn host(mut self, host: &str) -> Self {
        self.backend_host = Some(host.into());
        self
    }
    /// A response header.
    pub fn responds(mut self, name: &str, value: &str) -> Self {
        self.response_headers.push((name.into(), value.into()));
        self
    }
    /// A response header that must be absent.
    pub fn responds_without(mut self, name: &str) -> Self {
        self.response_absent.push(name.into());
        self
    }
    /// The backend's namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }
}

/// A redirect with this status and Location.
pub fn redirect(code: u16, location: &str) -> Expect {
    Expect {
        status: vec![code],
        location: Some(location.into()),
        ..Expect::default()
    }
}

/// An HTTP client like the upstream suite's: no keep-alive reuse across requests, no
/// redirects followed, 10 s timeout.
pub fn client() -> reqwest::Client {
    meridian_tests::init_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Sends `req` to `addr` and checks it against `expect`; `Err` says what differed.
pub async fn check_once(
    client: &reqwest::Client,
    scheme: &str,
    addr: SocketAddr,
    req: &Req,
    expect: &Expect,
) -> Result<(), String> {
    let url = format!(
        "{scheme}://{}:{}{}",
        req.host.split(':').next().unwrap_or(""),
        addr.port(),
        req.path
    );
    let url = if scheme == "http" {
        format!("http://{addr}{}", req.path)
    } else {
        url
    };
    let mut builder = client.request(
        reqwest::Method::from_bytes(req.method.as_bytes()).unwrap(),
        &url,
    );
    if scheme == "http" {
        builder = builder.header("host", &req.host);
    }
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    let response = builder
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.map_err(|e| format!("body: {e}"))?;
    let want_status = if expect.status.is_empty() {
        vec![200]
    } else {
        expect.status.clone()
    };
    if !want_status.contains(&status) {
        return Err(format!(
            "status {status}, want {want_status:?}; body {text}"
        ));
    }
    for (name, value) in &expect.response_headers {
        let got: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if got.join(",") != *value {
            return Err(format!("response header {name}: {got:?}, want {value:?}"));
        }
    }
    for name in &expect.response_absent {
        if headers.contains_key(name.as_str()) {
            return Err(format!("response header {name} present"));
        }
    }
    if let Some(location) = &expect.location {
        let got = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if got != location {
            return Err(format!("Location {got:?}, want {location:?}"));
        }
    }
    if expect.backend.is_none()
        && expect.backend_path.is_none()
        && expect.backend_headers.is_empty()
    {
        return Ok(());
    }
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| format!("not echo JSON: {text}"))?;
    if let Some(backend) = &expect.backend {
        let pod = body["pod"].as_str().unwrap_or("");
        if !pod.starts_with(backend.as_str()) {
            return Err(format!("answered by {pod}, want {backend}"));
        }
    }
    if let Some(namespace) = &expect.namespace
        && body["namespace"].as_str() != Some(namespace)
    {
        return Err(format!("namespace {}, want {namespace}", body["namespace"]));
    }
    let want_path = expect
        .backend_path
        .clone()
        .unwrap_or_else(|| req.path.clone());
    if body["uri"].as_str() != Some(want_path.as_str()) {
        return Err(format!("backend saw {}, want {want_path}", body["uri"]));
    }
    if let Some(host) = &expect.backend_host
        && body["host"].as_str() != Some(host.as_str())
    {
        return Err(format!("backend saw host {}, want {host}", body["host"]));
    }
    let seen = |name: &str| -> Option<String> {
        body["headers"]
            .as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
    };
    for (name, value) in &expect.backend_headers {
        if seen(name).as_deref() != Some(value.as_str()) {
            return Err(format!(
                "backend saw {name}: {:?}, want {value:?}",
                seen(name)
            ));
        }
    }
    for name in &expect.backend_absent {
        if let Some(v) = seen(name) {
            return Err(format!("backend saw {name}: {v:?}, want none"));
        }
    }
    Ok(())
}

/// Checks every case, retrying each until it passes 3 times in a row (30 s max), as the
/// upstream suite does for eventual consistency.
pub async fn check_all(suite: &Suite, cases: &[(Req, Expect)]) {
    check_all_at(suite, "http", suite.addr("HTTP"), cases).await;
}

/// [`check_all`] against another scheme and address.
pub async fn check_all_at(_suite: &Suite, scheme: &str, addr: SocketAddr, cases: &[(Req, Expect)]) {
    let client = client();
    for (req, expect) in cases {
        check_with(&client, scheme, addr, req, expect).await;
    }
}

/// Checks one case with the given client (retrying as [`check_all`]).
pub async fn check_with(
    client: &reqwest::Client,
    scheme: &str,
    addr: SocketAddr,
    req: &Req,
    expect: &Expect,
) {
    let streak = std::cell::Cell::new(0);
    let streak = &streak;
    let what = format!("{} {}{} {:?}", req.method, req.host, req.path, req.headers);
    meridian_tests::eventually(&what, Duration::from_secs(30), || async move {
        match check_once(client, scheme, addr, req, expect).await {
            Ok(()) => {
                streak.set(streak.get() + 1);
                if streak.get() >= 3 {
                    Ok(())
                } else {
                    Err("passed; confirming".to_string())
                }
            }
            Err(error) => {
                streak.set(0);
                Err(error)
            }
        }
    })
    .await;
}
