//! [`ObjectSet`]: every object of a source (a directory, a cluster), validated, in key order;
//! and loading one from a directory of YAML/JSON files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meridian_proto::model::ObjectKey;
use meridian_proto::model::route::{GrpcRoute, HttpRoute, TlsRoute};

use crate::document::{CheckedPolicy, Object, Resource, Validated, parse_documents};
use crate::k8s;
use crate::problem::{Origin, Problem};

/// Every object found in a directory or a cluster, validated, each list in key order
/// (namespace, then name; cluster-scoped objects by name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectSet {
    /// GatewayClasses.
    pub gateway_classes: Vec<k8s::GatewayClass>,
    /// Gateways (metadata.namespace always set).
    pub gateways: Vec<k8s::Gateway>,
    /// HTTPRoutes in model form.
    pub http_routes: Vec<Validated<HttpRoute>>,
    /// GRPCRoutes in model form.
    pub grpc_routes: Vec<Validated<GrpcRoute>>,
    /// TLSRoutes in model form.
    pub tls_routes: Vec<Validated<TlsRoute>>,
    /// ReferenceGrants.
    pub reference_grants: Vec<k8s::ReferenceGrant>,
    /// Services.
    pub services: Vec<k8s::Service>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<k8s::EndpointSlice>,
    /// Secrets.
    pub secrets: Vec<k8s::Secret>,
    /// ConfigMaps (CA bundles of BackendTLSPolicies and frontend client validation).
    pub config_maps: Vec<k8s::ConfigMap>,
    /// Namespaces (for `allowedRoutes` selectors).
    pub namespaces: Vec<k8s::Namespace>,
    /// BackendTLSPolicies, invalid ones included (they make their targets fail closed).
    pub backend_tls_policies: Vec<CheckedPolicy>,
}

// === impl ObjectSet ===

impl ObjectSet {
    /// Builds a set from parsed objects (for example each file's last good parse). When two
    /// objects have the same kind and key, the first one wins and the later one is reported,
    /// so feed objects in a stable order (files by name, documents in order).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> (Self, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut seen: BTreeMap<(&'static str, String), Origin> = BTreeMap::new();
        let mut set = Self::default();
        for object in objects {
            let Some((kind, key)) = identity(&object.resource) else {
                continue;
            };
            if let Some(first) = seen.get(&(kind, key.clone())) {
                problems.push(object.origin.object_problem(
                    kind,
                    Some(&key),
                    "",
                    format!(
                        "duplicate of the {kind} defined in {first}; this definition is ignored"
                    ),
                ));
                continue;
            }
            seen.insert((kind, key), object.origin.clone());
            match object.resource {
                Resource::GatewayClass(o) => set.gateway_classes.push(o),
                Resource::Gateway(o) => set.gateways.push(o),
                Resource::HttpRoute(o) => set.http_routes.push(o),
                Resource::GrpcRoute(o) => set.grpc_routes.push(o),
                Resource::TlsRoute(o) => set.tls_routes.push(o),
                Resource::ReferenceGrant(o) => set.reference_grants.push(o),
                Resource::Service(o) => set.services.push(o),
                Resource::EndpointSlice(o) => set.endpoint_slices.push(o),
                Resource::Secret(o) => set.secrets.push(o),
                Resource::ConfigMap(o) => set.config_maps.push(o),
                Resource::Namespace(o) => set.namespaces.push(o),
                Resource::BackendTlsPolicy(o) => set.backend_tls_policies.push(o),
                Resource::Ignored { .. } => {}
            }
        }
        set.sort();
        (set, problems)
    }

    fn sort(&mut self) {
        self.gateway_classes
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        self.gateways.sort_by_key(|o| meta_key(&o.metadata));
        self.http_routes
            .sort_by(|a, b| a.route.key.cmp(&b.route.key));
        self.grpc_routes
            .sort_by(|a, b| a.route.key.cmp(&b.route.key));
        self.tls_routes
            .sort_by(|a, b| a.route.key.cmp(&b.route.key));
        self.reference_grants.sort_by_key(|o| meta_key(&o.metadata));
        self.services.sort_by_key(|o| meta_key(&o.metadata));
        self.endpoint_slices.sort_by_key(|o| meta_key(&o.metadata));
        self.secrets.sort_by_key(|o| meta_key(&o.metadata));
        self.config_maps.sort_by_key(|o| meta_key(&o.metadata));
        self.namespaces
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        self.backend_tls_policies
            .sort_by_key(|o| meta_key(&o.policy.metadata));
    }

    /// The Gateway with this key.
    pub fn gateway(&self, key: &ObjectKey) -> Option<&k8s::Gateway> {
        self.gateways.iter().find(|g| meta_key(&g.metadata) == *key)
    }

    /// Whether the set holds no objects at all.
    pub fn is_empty(&self) -> bool {
        self.gateway_classes.is_empty()
            && self.gateways.is_empty()
            && self.http_routes.is_empty()
            && self.grpc_routes.is_empty()
            && self.tls_routes.is_empty()
            && self.reference_grants.is_empty()
            && self.services.is_empty()
            && self.endpoint_slices.is_empty()
            && self.secrets.is_empty()
            && self.config_maps.is_empty()
            && self.namespaces.is_empty()
            && self.backend_tls_policies.is_empty()
    }
}

/// The key of a namespaced object from validated metadata (namespace defaulted to `default`).
pub(crate) fn meta_key(meta: &k8s::ObjectMeta) -> ObjectKey {
    ObjectKey {
        namespace: meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        name: meta.name.clone(),
    }
}

/// (kind, key) identity for duplicate detection; `None` for ignored kinds.
fn identity(resource: &Resource) -> Option<(&'static str, String)> {
    Some(match resource {
        Resource::GatewayClass(o) => ("GatewayClass", o.metadata.name.clone()),
        Resource::Gateway(o) => ("Gateway", meta_key(&o.metadata).to_string()),
        Resource::HttpRoute(o) => ("HTTPRoute", o.route.key.to_string()),
        Resource::GrpcRoute(o) => ("GRPCRoute", o.route.key.to_string()),
        Resource::TlsRoute(o) => ("TLSRoute", o.route.key.to_string()),
        Resource::ReferenceGrant(o) => ("ReferenceGrant", meta_key(&o.metadata).to_string()),
        Resource::Service(o) => ("Service", meta_key(&o.metadata).to_string()),
        Resource::EndpointSlice(o) => ("EndpointSlice", meta_key(&o.metadata).to_string()),
        Resource::Secret(o) => ("Secret", meta_key(&o.metadata).to_string()),
        Resource::ConfigMap(o) => ("ConfigMap", meta_key(&o.metadata).to_string()),
        Resource::Namespace(o) => ("Namespace", o.metadata.name.clone()),
        Resource::BackendTlsPolicy(o) => {
            ("BackendTLSPolicy", meta_key(&o.policy.metadata).to_string())
        }
        Resource::Ignored { .. } => return None,
    })
}

/// The configuration files of a directory: every `*.yaml`, `*.yml` and `*.json` file directly
/// inside it (not in subdirectories, like `kubectl apply -f DIR` without `-R`), skipping hidden
/// files (editor swap and backup files start with `.`), sorted by name.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let wanted = !name.starts_with('.')
            && [".yaml", ".yml", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext));
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses one file. The source name in problems is the file name without its directory.
pub fn load_file(path: &Path) -> (Vec<Object>, Vec<Problem>) {
    let source = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse_documents(&text, &source),
            Err(_) => (
                Vec::new(),
                vec![Origin::new(source, None).problem("file is not valid UTF-8")],
            ),
        },
        Err(error) => (
            Vec::new(),
            vec![Origin::new(source, None).problem(format!("cannot read file: {error}"))],
        ),
    }
}

/// Loads every configuration file of a directory (see [`config_files`]) into one set.
/// Problems name the file and document; a directory that cannot be read is one problem.
pub fn load_dir(dir: &Path) -> (ObjectSet, Vec<Problem>) {
    let files = match config_files(dir) {
        Ok(files) => files,
        Err(error) => {
            let problem = Origin::new(dir.display().to_string(), None)
                .problem(format!("cannot read directory: {error}"));
            return (ObjectSet::default(), vec![problem]);
        }
    };
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let (mut file_objects, mut file_problems) = load_file(&file);
        objects.append(&mut file_objects);
        problems.append(&mut file_problems);
    }
    let (set, mut set_problems) = ObjectSet::from_objects(objects);
    problems.append(&mut set_problems);
    (set, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS_A: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";

    #[test]
    fn load_dir_reads_yaml_yml_and_json_files_only_at_top_level() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write =
            |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
        write("10-ns.yaml", NS_A);
        write(
            "20-ns.yml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
        );
        write(
            "30-ns.json",
            r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}"#,
        );
        write(
            "40-bad.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n---\nkind: [\n",
        );
        write("50-dup.yaml", NS_A);
        write(
            ".hidden.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: hidden}\n",
        );
        write("notes.txt", "not config");
        std::fs::write(dir.path().join("60-binary.yaml"), [0xff, 0xfe, 0x00]).expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        write(
            "sub/nested.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: nested}\n",
        );

        let files: Vec<String> = config_files(dir.path())
            .expect("list")
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            files,
            [
                "10-ns.yaml",
                "20-ns.yml",
                "30-ns.json",
                "40-bad.yaml",
                "50-dup.yaml",
                "60-binary.yaml"
            ]
        );

        let (set, problems) = load_dir(dir.path());
        let names: Vec<&str> = set
            .namespaces
            .iter()
            .map(|n| n.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "40-bad.yaml doc 2: invalid YAML at line 5 column 7: unclosed bracket '['",
                "60-binary.yaml: file is not valid UTF-8",
                "50-dup.yaml doc 1 Namespace a: duplicate of the Namespace defined in 10-ns.yaml doc 1; this definition is ignored",
            ]
        );
    }

    #[test]
    fn a_missing_directory_is_one_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let (set, problems) = load_dir(&missing);
        assert!(set.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .contains(": cannot read directory: "),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn sets_are_sorted_by_key_and_same_names_in_other_kinds_coexist() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: z, namespace: b}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: b}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: z, namespace: a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: z, namespace: a}\n";
        let (objects, problems) = parse_documents(text, "x.yaml");
        assert!(problems.is_empty());
        let (set, problems) = ObjectSet::from_objects(objects);
        assert!(problems.is_empty());
        let keys: Vec<String> = set
            .services
            .iter()
            .map(|s| meta_key(&s.metadata).to_string())
            .collect();
        assert_eq!(keys, ["a/z", "b/a", "b/z"]);
        assert_eq!(set.secrets.len(), 1);
    }
}
