//! The Kubernetes manifests under `deploy/`: every YAML document is a named object and every
//! kustomization's files exist; every `--flag` a container passes to `meridian <subcommand>`
//! is one the real binary's `<subcommand> --help` lists, and the tls patches keep the base
//! flags; the hub's start script turns a pod ordinal into the right Raft flags (run with a
//! fake `getent` and `meridian`); the example cluster config programs its Gateway with
//! Meridian's own loader; and the example hub config and `meridian ctl` objects run in a real
//! hub that then serves the delegated zone (NS, glue, geo answers, DS).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_gwapi::{ObjectSet, Resource};
use meridian_proto::model::ObjectKey;
use meridian_tests::dns::{self, RecordType};
use meridian_tests::wait::eventually;
use meridian_tests::{Proc, ProcSpec};
use serde_json::Value;

use crate::meridian_bin;

/// The subcommands a manifest may run.
const SUBCOMMANDS: [&str; 6] = ["hub", "agent", "gateway", "ctl", "echo", "dev"];

/// One YAML document of a file under `deploy/`.
struct Doc {
    /// The file, relative to `deploy/`.
    file: String,
    /// 1-based document number.
    index: usize,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }

    fn place(&self) -> String {
        format!(
            "deploy/{} document {} ({} {})",
            self.file,
            self.index,
            self.kind(),
            self.name()
        )
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            out.push(path);
        }
    }
}

/// Every document of every YAML file under `deploy/`; a file that does not parse fails the test.
fn documents() -> Vec<Doc> {
    let root = deploy_dir();
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    assert!(!files.is_empty(), "no YAML under {}", root.display());
    let mut docs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read manifest");
        let file = path
            .strip_prefix(&root)
            .expect("under deploy/")
            .display()
            .to_string();
        let values: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("deploy/{file} is not valid YAML: {e}"));
        for (n, value) in values.into_iter().enumerate() {
            if value.is_null() {
                continue;
            }
            docs.push(Doc {
                file: file.clone(),
                index: n + 1,
                value,
            });
        }
    }
    docs
}

fn find<'a>(docs: &'a [Doc], file_prefix: &str, kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|d| d.file.starts_with(file_prefix) && d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} under deploy/{file_prefix}"))
}

/// `data[key]` of a ConfigMap.
fn config_map_data<'a>(doc: &'a Doc, key: &str) -> &'a str {
    doc.value["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no data key {key}", doc.place()))
}

#[test]
fn every_manifest_is_a_named_object_and_kustomizations_resolve() {
    let docs = documents();
    let mut problems = Vec::new();
    for doc in &docs {
        if doc.file.ends_with("kustomization.yaml") {
            let api = doc.value["apiVersion"].as_str().unwrap_or("");
            if !api.starts_with("kustomize.config.k8s.io/")
                || !matches!(doc.kind(), "Kustomization" | "Component")
            {
                problems.push(format!("{}: not a Kustomization or Component", doc.place()));
            }
            let dir = deploy_dir()
                .join(&doc.file)
                .parent()
                .expect("parent")
                .to_path_buf();
            let mut referenced: Vec<&str> = Vec::new();
            for list in ["resources", "components"] {
                for item in doc.value[list].as_array().into_iter().flatten() {
                    referenced.extend(item.as_str());
                }
            }
            for patch in doc.value["patches"].as_array().into_iter().flatten() {
                referenced.extend(patch["path"].as_str());
            }
            for path in referenced {
                if !dir.join(path).exists() {
                    problems.push(format!("{}: {path} does not exist", doc.place()));
                }
            }
            continue;
        }
        let object = doc.value.as_object();
        let text = |field: &str| object.and_then(|o| o.get(field)).and_then(Value::as_str);
        if text("apiVersion").is_none_or(str::is_empty) {
            problems.push(format!("{}: no apiVersion", doc.place()));
        }
        if text("kind").is_none_or(str::is_empty) {
            problems.push(format!("{}: no kind", doc.place()));
        }
        if doc.name().is_empty() {
            problems.push(format!("{}: no metadata.name", doc.place()));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    for dir in ["hub", "cluster", "demo"] {
        assert!(
            docs.iter()
                .any(|d| d.file == format!("{dir}/kustomization.yaml")),
            "deploy/{dir} has no kustomization.yaml"
        );
    }
}

/// The words of a container's command and args, roughly as a shell would split them.
fn words(container: &Value) -> Vec<String> {
    let mut words = Vec::new();
    for list in ["command", "args"] {
        for item in container[list].as_array().into_iter().flatten() {
            let text = item.as_str().unwrap_or("");
            for word in text.split_whitespace() {
                let word = word.trim_matches(|c| "\"'`;(){}".contains(c));
                if !word.is_empty() {
                    words.push(word.to_string());
                }
            }
        }
    }
    words
}

/// The subcommand of the first `meridian <subcommand>` among `words`.
fn invoked_subcommand(words: &[String]) -> Option<String> {
    words.windows(2).find_map(|pair| {
        let program = pair[0].as_str();
        let is_meridian = program == "meridian" || program.ends_with("/meridian");
        (is_meridian && SUBCOMMANDS.contains(&pair[1].as_str())).then(|| pair[1].clone())
    })
}

/// The `--flags` among `words` (`--flag=value` counts as `--flag`).
fn flags(words: &[String]) -> BTreeSet<String> {
    words
        .iter()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap_or(w).to_string())
        .collect()
}

/// Every container (and init container) anywhere in a document, with the path that leads to it.
fn containers(value: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{path}.{key}");
                if matches!(key.as_str(), "containers" | "initContainers")
                    && let Some(list) = child.as_array()
                {
                    for container in list {
                        let name = container["name"].as_str().unwrap_or("?");
                        out.push((format!("{here}[{name}]"), container.clone()));
                    }
                    continue;
                }
                containers(child, &here, out);
            }
        }
        Value::Array(items) => {
            for (n, child) in items.iter().enumerate() {
                containers(child, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// The long options `meridian <subcommand> --help` lists.
fn help_flags(subcommand: &str) -> BTreeSet<String> {
    let output = std::process::Command::new(meridian_bin())
        .args([subcommand, "--help"])
        .output()
        .expect("run meridian --help");
    assert!(
        output.status.success(),
        "meridian {subcommand} --help failed"
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        if let Some(flag) = line
            .split([' ', ','])
            .find(|word| word.starts_with("--") && word.len() > 2)
        {
            found.insert(flag.to_string());
        }
    }
    assert!(
        found.contains("--help"),
        "no options parsed from meridian {subcommand} --help:\n{text}"
    );
    found
}

#[test]
fn every_meridian_flag_in_a_manifest_exists() {
    let docs = documents();
    // Pass 1: which subcommand each (kind, name, container) runs, so that patches which
    // replace only `args` are checked against the subcommand of the object they patch.
    let mut runs: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut all: Vec<(String, (String, String, String), Value)> = Vec::new();
    for doc in &docs {
        let mut found = Vec::new();
        containers(&doc.value, "", &mut found);
        for (path, container) in found {
            let key = (
                doc.kind().to_string(),
                doc.name().to_string(),
                container["name"].as_str().unwrap_or("").to_string(),
            );
            if let Some(subcommand) = invoked_subcommand(&words(&container)) {
                runs.insert(key.clone(), subcommand);
            }
            all.push((format!("{}{path}", doc.place()), key, container));
        }
    }
    // Pass 2: check every flag.
    let mut help: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for (place, key, container) in &all {
        let words = words(container);
        let used = flags(&words);
        let subcommand = invoked_subcommand(&words).or_else(|| runs.get(key).cloned());
        let Some(subcommand) = subcommand else {
            if !used.is_empty() {
                problems.push(format!(
                    "{place}: passes {used:?} but runs no `meridian <subcommand>`"
                ));
            }
            continue;
        };
        let known = help
            .entry(subcommand.clone())
            .or_insert_with(|| help_flags(&subcommand));
        for flag in &used {
            *checked.entry(subcommand.clone()).or_default() += 1;
            if !known.contains(flag) {
                problems.push(format!(
                    "{place}: `meridian {subcommand}` has no {flag} (its --help lists {known:?})"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    for subcommand in ["hub", "agent", "gateway", "echo"] {
        assert!(
            checked.get(subcommand).copied().unwrap_or(0) > 0,
            "no manifest runs `meridian {subcommand}` with flags (checked: {checked:?})"
        );
    }
}

#[test]
fn tls_patches_keep_the_base_args() {
    // A strategic merge patch replaces `args` as a whole, so each tls component repeats the
    // base flags; they must not drift apart.
    let docs = documents();
    let mut n_patches = 0;
    for patch in docs.iter().filter(|d| d.file.contains("/tls/")) {
        let mut patched = Vec::new();
        containers(&patch.value, "", &mut patched);
        for (_, container) in patched {
            let Some(args) = container.get("args") else {
                continue;
            };
            let base = docs
                .iter()
                .find(|d| {
                    !d.file.contains("/tls/")
                        && d.kind() == patch.kind()
                        && d.name() == patch.name()
                })
                .unwrap_or_else(|| panic!("{}: patches nothing", patch.place()));
            let mut base_containers = Vec::new();
            containers(&base.value, "", &mut base_containers);
            let base_container = base_containers
                .iter()
                .map(|(_, c)| c)
                .find(|c| c["name"] == container["name"])
                .unwrap_or_else(|| {
                    panic!("{}: no such container in {}", patch.place(), base.place())
                });
            let (mut base_args, args) = (strings(&base_container["args"]), strings(args));
            // The TLS patch turns gRPC TLS on, so it drops the base's --insecure-grpc.
            base_args.retain(|arg| arg != "--insecure-grpc");
            assert!(
                !args.iter().any(|arg| arg == "--insecure-grpc"),
                "{}: a TLS patch keeps --insecure-grpc",
                patch.place()
            );
            assert!(
                args.starts_with(&base_args),
                "{}: args {args:?} do not start with the base args {base_args:?}",
                patch.place()
            );
            n_patches += 1;
        }
    }
    assert_eq!(
        n_patches, 3,
        "expected the hub, agent and gateway tls patches"
    );
}

/// The hub StatefulSet's container.
fn hub_container(docs: &[Doc]) -> (&Doc, &Value) {
    let statefulset = find(docs, "hub/statefulset", "StatefulSet", "meridian-hub");
    let container = statefulset.value["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == "hub"))
        .expect("container hub");
    (statefulset, container)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| item.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn hub_start_script_turns_the_ordinal_into_raft_flags() {
    let docs = documents();
    let (statefulset, container) = hub_container(&docs);
    let replicas = statefulset.value["spec"]["replicas"]
        .as_u64()
        .expect("replicas");
    assert_eq!(replicas, 3, "the script test below assumes 3 nodes");

    // The pods' DNS names come from the governing headless Service, which must publish pods
    // before they are Ready (a node is Ready only once its peers have given it state).
    let governing = statefulset.value["spec"]["serviceName"]
        .as_str()
        .expect("serviceName");
    let peers_service = find(&docs, "hub/services", "Service", governing);
    assert_eq!(peers_service.value["spec"]["clusterIP"], "None");
    assert_eq!(
        peers_service.value["spec"]["publishNotReadyAddresses"],
        true
    );

    // Run the real script with a fake `meridian` that prints its arguments.
    let temp = tempfile::tempdir().expect("tempdir");
    let bin = temp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let script = |name: &str, text: &str| {
        let path = bin.join(name);
        std::fs::write(&path, text).expect("write fake");
        let mut permissions = std::fs::metadata(&path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&path, permissions).expect("chmod");
    };
    script("meridian", "#!/bin/sh\nprintf '%s\\n' \"$@\"\n");
    let command = strings(&container["command"]);
    let args = strings(&container["args"]);
    let mut env: Vec<(String, String)> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect();
    env.push(("PATH".into(), format!("{}:/usr/bin:/bin", bin.display())));
    let run = |pod: &str, join: &str| {
        std::process::Command::new(&command[0])
            .args(&command[1..])
            .args(&args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", "meridian-system")
            .env("MERIDIAN_HUB_JOIN", join)
            .output()
            .expect("run the hub start script")
    };

    let output = run("meridian-hub-1", "");
    assert!(
        output.status.success(),
        "script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let argv: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let value_of = |flag: &str| -> String {
        let at = argv
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} missing from {argv:?}"));
        argv[at + 1].clone()
    };
    assert_eq!(argv[0], "hub", "{argv:?}");
    assert_eq!(
        &argv[1..=args.len()],
        args.as_slice(),
        "container args first"
    );
    assert_eq!(value_of("--id"), "2");
    let name = |n: u64| format!("meridian-hub-{n}.{governing}.meridian-system.svc:7001");
    assert_eq!(value_of("--advertise"), name(1));
    assert_eq!(
        value_of("--peers"),
        format!("1={},2={},3={}", name(0), name(1), name(2))
    );
    // The hub takes them: they parse as peer addresses.
    for n in 0..replicas {
        let addr = name(n);
        assert!(
            addr.parse::<meridian_hub::raft::PeerAddr>().is_ok(),
            "{addr} is not a peer address"
        );
    }
    // The Raft data lives on the PersistentVolumeClaim.
    let data_mount = container["volumeMounts"]
        .as_array()
        .and_then(|mounts| mounts.iter().find(|m| m["name"] == "data"))
        .and_then(|m| m["mountPath"].as_str())
        .expect("data volume mount");
    assert!(
        value_of("--data-dir").starts_with(data_mount),
        "--data-dir {} is not on the data volume {data_mount}",
        value_of("--data-dir")
    );
    let templates = statefulset.value["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates");
    assert!(templates.iter().any(|t| t["metadata"]["name"] == "data"));

    // An ordinal beyond the group is refused instead of advertising nothing.
    let output = run("meridian-hub-3", "");
    assert!(!output.status.success(), "ordinal 3 of 3 was accepted");

    // A node listed in MERIDIAN_HUB_JOIN waits to be added instead of founding a group.
    let output = run("meridian-hub-1", "0 1");
    assert!(output.status.success());
    let argv: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(argv.contains(&"--join".to_string()), "{argv:?}");
    assert!(!argv.contains(&"--peers".to_string()), "{argv:?}");
    assert!(argv.contains(&name(1)), "{argv:?}");
    let output = run("meridian-hub-2", "0 1");
    let argv = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        argv.contains("--peers") && !argv.contains("--join"),
        "{argv}"
    );
}

#[test]
fn example_cluster_config_programs_the_gateway() {
    let docs = documents();
    let config = find(&docs, "cluster/", "ConfigMap", "meridian-gateway-api");
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    let data = config.value["data"].as_object().expect("data");
    for (file, text) in data {
        let (mut file_objects, mut file_problems) =
            meridian_gwapi::parse_documents(text.as_str().expect("text"), file);
        objects.append(&mut file_objects);
        problems.append(&mut file_problems);
    }
    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|o| match &o.resource {
            Resource::GatewayClass(_) => "GatewayClass",
            Resource::Gateway(_) => "Gateway",
            Resource::HttpRoute(_) => "HTTPRoute",
            Resource::Service(_) => "Service",
            Resource::EndpointSlice(_) => "EndpointSlice",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "EndpointSlice",
            "Gateway",
            "GatewayClass",
            "HTTPRoute",
            "Service"
        ])
    );
    let (set, mut set_problems) = ObjectSet::from_objects(objects);
    problems.append(&mut set_problems);
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(problems.is_empty(), "{problems:#?}");

    // The gateways serve the Gateway the cluster settings name, and it is Meridian's.
    let settings = find(&docs, "cluster/", "ConfigMap", "meridian-cluster");
    let gateway: ObjectKey = config_map_data(settings, "MERIDIAN_GATEWAY")
        .parse()
        .expect("MERIDIAN_GATEWAY is namespace/name");
    assert_eq!(meridian_gwapi::gateways(&set), vec![gateway.clone()]);

    // The route the hub pushes (deploy/hub/meridian-objects.yaml) attaches here too.
    let shared: Vec<_> = docs
        .iter()
        .filter(|d| d.file == "hub/meridian-objects.yaml" && d.kind() == "HTTPRoute")
        .map(|d| {
            meridian_gwapi::http_route_from_json(&d.value)
                .unwrap_or_else(|p| panic!("{}: {p:?}", d.place()))
        })
        .collect();
    assert!(!shared.is_empty(), "meridian-objects.yaml has no HTTPRoute");

    let programmed = meridian_gwapi::program(&set, &shared, &gateway);
    let config = &programmed.config;
    let listeners: Vec<(&str, u16)> = config
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.port))
        .collect();
    // HTTPS waits for the hub's certificate; HTTP serves at once.
    assert_eq!(listeners, [("http", 8080)], "{:#?}", programmed.status);
    let mut routes: Vec<String> = config
        .http_routes
        .iter()
        .filter(|r| r.attachments.iter().any(|a| a.listener == "http"))
        .map(|r| r.route.key.to_string())
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        ["demo/app", "demo/echo-global"],
        "{:#?}",
        programmed.status
    );
    assert_eq!(config.backends.len(), 1, "{:#?}", config.backends);
    let backend = &config.backends[0];
    assert_eq!(
        (backend.key.namespace.as_str(), backend.key.name.as_str()),
        ("demo", "echo")
    );
    assert!(
        backend.endpoints.len() == 1 && backend.endpoints[0].ready,
        "{:#?}",
        backend.endpoints
    );

    // Every listener port of the Gateway is a port of the gateway container.
    let deployment = find(&docs, "cluster/gateway", "Deployment", "meridian-gateway");
    let container_ports: BTreeSet<i64> = deployment.value["spec"]["template"]["spec"]["containers"]
        [0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    let spec = set.gateway(&gateway).expect("gateway");
    for listener in &spec.spec.listeners {
        assert!(
            container_ports.contains(&listener.port),
            "listener {} port {} is not a container port ({container_ports:?})",
            listener.name,
            listener.port
        );
    }
}

/// Runs `meridian ctl` against `admin` with `token`; returns success and combined output.
async fn ctl(admin: &str, token: &str, args: &[&str]) -> (bool, String) {
    let hub = format!("http://{admin}");
    let mut argv = vec!["--hub", hub.as_str(), "--token", token];
    argv.extend_from_slice(args);
    meridian_tests::hub::run_ctl(Path::new(meridian_bin()), &argv).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_hub_config_serves_the_delegated_zone() {
    let docs = documents();
    let config_map = find(&docs, "hub/configmap", "ConfigMap", "meridian-hub-config");
    let hub_yaml = config_map_data(config_map, "hub.yaml");
    let parsed = meridian_hub::HubConfig::from_yaml(hub_yaml, "hub.yaml")
        .unwrap_or_else(|e| panic!("deploy/hub/configmap.yaml hub.yaml: {e}"));
    let zone = parsed.dns.zones.first().expect("a zone");
    let origin = zone.origin.clone();
    let nameserver = zone.nameservers.first().expect("a name server").clone();
    // The args the StatefulSet passes point at the mounted file.
    let (_, container) = hub_container(&docs);
    assert_eq!(
        strings(&container["args"]),
        [
            "--config",
            "/etc/meridian/config/hub.yaml",
            "--insecure-grpc"
        ]
    );

    // The real binary with the ConfigMap's file; the per-pod and in-cluster values are
    // replaced by flags, as the StatefulSet does, with loopback addresses and port 0.
    let temp = tempfile::tempdir().expect("tempdir");
    let config_file = temp.path().join("hub.yaml");
    std::fs::write(&config_file, hub_yaml).expect("write hub.yaml");
    let token = "deploy-test-token-0123456789abcdef";
    let tokens = temp.path().join("tokens");
    std::fs::write(&tokens, format!("admin {token}\n")).expect("write tokens");
    let data = temp.path().join("data");
    let spec = ProcSpec::new(
        "deploy-hub",
        meridian_bin(),
        temp.path(),
        &[
            "hub",
            "--config",
            &config_file.display().to_string(),
            "--id",
            "1",
            "--data-dir",
            &data.display().to_string(),
            "--grpc",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--dns",
            "127.0.0.1:0",
            "--admin-token-file",
            &tokens.display().to_string(),
        ],
    );
    let (_hub, ready) = Proc::start_ready(spec, Duration::from_secs(30));
    let admin = ready["admin"].as_str().expect("admin").to_string();
    let dns_addr = ready["dns"]
        .as_str()
        .expect("dns")
        .parse()
        .expect("dns addr");

    // The objects the README applies with `meridian ctl apply`.
    let objects = deploy_dir().join("hub/meridian-objects.yaml");
    let (ok, out) = ctl(
        &admin,
        token,
        &["apply", "-f", &objects.display().to_string()],
    )
    .await;
    assert!(ok, "meridian ctl apply: {out}");

    // What the parent zone delegates to: NS at the apex and the glue address.
    let ns = dns::udp(
        dns_addr,
        &dns::query_message(&format!("{origin}."), RecordType::NS, None),
    )
    .await
    .expect("NS query");
    let names: Vec<String> = ns
        .message
        .answers
        .iter()
        .map(|r| r.data.to_string())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.trim_end_matches('.') == nameserver.name),
        "NS {origin}: {names:?}"
    );
    let glue = dns::udp(
        dns_addr,
        &dns::query_message(&format!("{}.", nameserver.name), RecordType::A, None),
    )
    .await
    .expect("A query for the name server");
    assert_eq!(glue.addresses, nameserver.addresses);

    // The hostname policy answers with the clusters' gateway addresses (no agent reports in
    // this test, so every cluster is unknown and the fail-open rule answers).
    let cluster_ips: BTreeSet<IpAddr> = ["192.0.2.10", "192.0.2.20"]
        .iter()
        .map(|ip| ip.parse().expect("ip"))
        .collect();
    let hostname = format!("app.{origin}.");
    eventually(
        "an A answer for the example hostname",
        Duration::from_secs(10),
        || async {
            let answer = dns::a_from_subnet(dns_addr, &hostname, "203.0.113.0/24").await?;
            if !answer.addresses.is_empty()
                && answer.addresses.iter().all(|ip| cluster_ips.contains(ip))
            {
                Ok(())
            } else {
                Err(format!("{:?} {:?}", answer.rcode, answer.addresses))
            }
        },
    )
    .await;

    // DNSSEC is on in the example: the DS record for the parent appears once the key is
    // committed.
    assert!(zone.dnssec, "the example zone is expected to be signed");
    eventually("the zone's DS record", Duration::from_secs(10), || async {
        let (ok, out) = ctl(&admin, token, &["dns", "ds", &origin]).await;
        if ok && out.contains(" DS ") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
}

/// The agent container's args of the first `meridian-agent` Deployment in `deploy/<file_prefix>`.
fn agent_args(docs: &[Doc], file_prefix: &str) -> Vec<String> {
    let doc = find(docs, file_prefix, "Deployment", "meridian-agent");
    let mut found = Vec::new();
    containers(&doc.value, "", &mut found);
    let (_, container) = found
        .iter()
        .find(|(_, c)| c["name"] == "agent")
        .unwrap_or_else(|| panic!("{}: no agent container", doc.place()));
    strings(&container["args"])
}

#[test]
fn the_kube_source_component_swaps_the_config_dir_for_kubernetes() {
    let docs = documents();
    let component = find(
        docs.as_slice(),
        "cluster/kube-source/kustomization",
        "Component",
        "",
    );
    let patches = component.value["patches"].as_array().expect("patches");
    let [patch] = patches.as_slice() else {
        panic!("{}: expected one patch", component.place());
    };
    assert_eq!(patch["target"]["name"], "meridian-agent");
    let ops: Vec<Value> = serde_saphyr::from_str(patch["patch"].as_str().expect("inline patch"))
        .expect("the JSON patch is YAML");
    let help = help_flags("agent");
    // On the base args and on the tls component's (which repeat the base args first).
    for file_prefix in ["cluster/agent", "cluster/tls/agent-tls"] {
        let mut args = agent_args(&docs, file_prefix);
        let mut token = None;
        for op in &ops {
            let path = op["path"].as_str().expect("op path");
            if path == "/spec/template/spec/automountServiceAccountToken" {
                token = op["value"].as_bool();
                continue;
            }
            let index: usize = path
                .strip_prefix("/spec/template/spec/containers/0/args/")
                .unwrap_or_else(|| panic!("unexpected patch path {path}"))
                .parse()
                .expect("an args index");
            let value = op["value"].as_str().unwrap_or("").to_string();
            match op["op"].as_str() {
                Some("test") => assert_eq!(args[index], value, "{file_prefix}: {args:?}"),
                Some("replace") => args[index] = value,
                Some("remove") => {
                    args.remove(index);
                }
                other => panic!("unexpected op {other:?}"),
            }
        }
        assert_eq!(token, Some(true), "the agent needs its token in-cluster");
        let used = flags(&args);
        assert!(used.contains("--kubernetes"), "{file_prefix}: {args:?}");
        assert!(!used.contains("--config-dir"), "{file_prefix}: {args:?}");
        for flag in &used {
            assert!(
                help.contains(flag),
                "{file_prefix}: agent has no {flag}: {args:?}"
            );
        }
        // Every flag still has its value (none swallowed by the removal).
        for pair in args.windows(2) {
            assert!(
                !(pair[0].starts_with("--")
                    && pair[0] != "--kubernetes"
                    && pair[1].starts_with("--")),
                "{file_prefix}: {} lost its value: {args:?}",
                pair[0]
            );
        }
    }
    // The component grants the RBAC it ships.
    let role = find(
        &docs,
        "cluster/kube-source/rbac",
        "ClusterRole",
        "meridian-agent-kube-source",
    );
    let text = role.value.to_string();
    for resource in [
        "httproutes",
        "backendtlspolicies",
        "endpointslices",
        "configmaps",
        "secrets",
    ] {
        assert!(
            text.contains(resource),
            "the ClusterRole lacks {resource}: {text}"
        );
    }
    // Status write-back: PATCH of the status subresources, and no write verb on anything
    // else.
    let rules = role.value["rules"].as_array().expect("rules");
    let status_rule = rules
        .iter()
        .find(|rule| {
            rule["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == "gateways/status"))
        })
        .unwrap_or_else(|| panic!("no rule for gateways/status: {text}"));
    for resource in [
        "gatewayclasses/status",
        "httproutes/status",
        "grpcroutes/status",
        "tlsroutes/status",
        "backendtlspolicies/status",
    ] {
        assert!(
            status_rule["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == resource)),
            "the status rule lacks {resource}: {text}"
        );
    }
    // Writes go to status subresources and to Events, nothing else.
    let events_rule = |rule: &Value| {
        rule["apiGroups"] == serde_json::json!(["events.k8s.io"])
            && rule["resources"] == serde_json::json!(["events"])
            && rule["verbs"] == serde_json::json!(["create", "patch"])
    };
    assert!(
        rules.iter().any(events_rule),
        "the agent records Events: {text}"
    );
    for rule in rules {
        let writes = rule["verbs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|verb| verb != "get" && verb != "list" && verb != "watch");
        let status_only = rule["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|r| r.as_str().is_some_and(|r| r.ends_with("/status")));
        assert!(
            !writes || status_only || events_rule(rule),
            "a write verb outside status and Events: {rule}"
        );
    }
}
