//! The host's trust store, for BackendTLSPolicies with `wellKnownCACertificates: System`.
//!
//! Found the way OpenSSL (and rustls-native-certs) find it on Linux: the PEM file named by
//! `SSL_CERT_FILE` when that is set, else the first existing of the distributions' bundle
//! paths ([`BUNDLE_PATHS`]); plus every file of the directories in `SSL_CERT_DIR`
//! (colon-separated) when that is set. Certificates webpki cannot use as trust anchors are
//! skipped, as OpenSSL skips them.
//!
//! The store is loaded once per process ([`system`]): connections and snapshots share it,
//! and a changed bundle takes effect on restart, as with OpenSSL-based proxies. When nothing
//! usable is found, every connection under such a policy fails (never cleartext, never
//! unverified) and the error names the paths tried.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tracing::{info, warn};

/// Where distributions keep the system bundle (Debian/Ubuntu/Alpine, Fedora/RHEL, openSUSE,
/// older RHEL, and the OpenSSL default), in OpenSSL's probe order.
pub(crate) const BUNDLE_PATHS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];

/// Where to look: the environment's answer, passed in so the search is testable without
/// touching the process environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    /// `SSL_CERT_FILE`: when set, the only bundle file read.
    pub(crate) cert_file: Option<PathBuf>,
    /// `SSL_CERT_DIR`: directories whose files are read too.
    pub(crate) cert_dirs: Vec<PathBuf>,
    /// The bundle paths probed when `cert_file` is not set.
    pub(crate) bundle_paths: Vec<PathBuf>,
}

/// A loaded trust store, or why there is none.
pub(crate) type SystemRoots = Result<Arc<RootCertStore>, Arc<str>>;

// === impl Sources ===

impl Sources {
    /// The process environment's sources (`SSL_CERT_FILE`, `SSL_CERT_DIR`) and the standard
    /// bundle paths. An empty variable counts as unset, as in OpenSSL.
    pub(crate) fn from_env() -> Self {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        Self {
            cert_file: var("SSL_CERT_FILE").map(PathBuf::from),
            cert_dirs: var("SSL_CERT_DIR")
                .map(|dirs| std::env::split_paths(&dirs).collect())
                .unwrap_or_default(),
            bundle_paths: BUNDLE_PATHS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// The process's trust store, loaded from the environment on first use.
pub(crate) fn system() -> &'static SystemRoots {
    static ROOTS: OnceLock<SystemRoots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let roots = load(&Sources::from_env());
        match &roots {
            Ok(store) => info!(certificates = store.len(), "system trust store loaded"),
            Err(why) => warn!(error = %why, "no system trust store"),
        }
        roots
    })
}

/// Loads the trust store `sources` name. The error says which paths were tried and why each
/// gave nothing.
pub(crate) fn load(sources: &Sources) -> SystemRoots {
    let mut tried: Vec<String> = Vec::new();
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    match &sources.cert_file {
        Some(file) => read_bundle(file, "SSL_CERT_FILE ", &mut certs, &mut tried),
        None => {
            let found = sources.bundle_paths.iter().find(|path| path.is_file());
            match found {
                Some(path) => read_bundle(path, "", &mut certs, &mut tried),
                None => tried.extend(
                    sources
                        .bundle_paths
                        .iter()
                        .map(|p| format!("{}: not found", p.display())),
                ),
            }
        }
    }
    for dir in &sources.cert_dirs {
        read_dir(dir, &mut certs, &mut tried);
    }
    let mut store = RootCertStore::empty();
    let (added, skipped) = store.add_parsable_certificates(certs);
    if added == 0 {
        let why = if skipped > 0 {
            format!("no usable CA certificate ({skipped} unusable)")
        } else {
            "no CA certificate".to_string()
        };
        return Err(Arc::from(format!("{why}; tried {}", tried.join(", "))));
    }
    if skipped > 0 {
        warn!(
            skipped,
            added, "system trust store: skipped certificates webpki cannot use as trust anchors"
        );
    }
    Ok(Arc::new(store))
}

/// Adds the PEM certificates of `path` to `certs`, or notes in `tried` why there were none.
fn read_bundle(
    path: &Path,
    label: &str,
    certs: &mut Vec<CertificateDer<'static>>,
    tried: &mut Vec<String>,
) {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) => {
            tried.push(format!("{label}{}: {error}", path.display()));
            return;
        }
    };
    let before = certs.len();
    // A bundle with a damaged block still yields the good ones, as OpenSSL's loader does.
    certs.extend(CertificateDer::pem_slice_iter(&text).filter_map(Result::ok));
    let n = certs.len() - before;
    tried.push(format!("{label}{}: {n} certificates", path.display()));
}

/// Adds the certificates of every regular file in `dir` (c_rehash links point at the same
/// files; duplicates do no harm).
fn read_dir(dir: &Path, certs: &mut Vec<CertificateDer<'static>>, tried: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            tried.push(format!("SSL_CERT_DIR {}: {error}", dir.display()));
            return;
        }
    };
    let before = certs.len();
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for path in paths {
        if let Ok(text) = std::fs::read(&path) {
            certs.extend(CertificateDer::pem_slice_iter(&text).filter_map(Result::ok));
        }
    }
    tried.push(format!(
        "SSL_CERT_DIR {}: {} certificates",
        dir.display(),
        certs.len() - before
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn sources(dir: &Path) -> Sources {
        Sources {
            cert_file: None,
            cert_dirs: vec![],
            bundle_paths: vec![dir.join("missing.pem"), dir.join("bundle.pem")],
        }
    }

    #[test]
    fn cert_file_is_read_when_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("custom.pem");
        std::fs::write(&file, format!("{}{}", ca_pem("a"), ca_pem("b"))).unwrap();
        let roots = load(&Sources {
            cert_file: Some(file),
            ..sources(dir.path())
        })
        .unwrap();
        assert_eq!(roots.len(), 2);
    }

    #[test]
    fn the_first_existing_bundle_path_is_read_without_cert_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bundle.pem"), ca_pem("a")).unwrap();
        assert_eq!(load(&sources(dir.path())).unwrap().len(), 1);
    }

    #[test]
    fn a_set_cert_file_that_is_missing_does_not_fall_back_and_is_named() {
        let dir = tempfile::tempdir().unwrap();
        // A bundle exists, but SSL_CERT_FILE names another file: only that one counts.
        std::fs::write(dir.path().join("bundle.pem"), ca_pem("a")).unwrap();
        let missing = dir.path().join("nope.pem");
        let error = load(&Sources {
            cert_file: Some(missing.clone()),
            ..sources(dir.path())
        })
        .unwrap_err();
        assert!(
            error.contains(&format!("SSL_CERT_FILE {}", missing.display())),
            "{error}"
        );
    }

    #[test]
    fn no_bundle_anywhere_names_every_path_tried() {
        let dir = tempfile::tempdir().unwrap();
        let error = load(&sources(dir.path())).unwrap_err();
        for name in ["missing.pem", "bundle.pem"] {
            let path = dir.path().join(name).display().to_string();
            assert!(error.contains(&format!("{path}: not found")), "{error}");
        }
    }

    #[test]
    fn a_bundle_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bundle.pem"), "not a certificate\n").unwrap();
        let error = load(&sources(dir.path())).unwrap_err();
        assert!(error.contains("no CA certificate"), "{error}");
        assert!(error.contains("bundle.pem: 0 certificates"), "{error}");
    }

    #[test]
    fn cert_dir_files_are_added() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        std::fs::write(certs.join("one.pem"), ca_pem("one")).unwrap();
        std::fs::write(certs.join("two.pem"), ca_pem("two")).unwrap();
        std::fs::write(certs.join("README"), "not a certificate").unwrap();
        std::fs::write(dir.path().join("bundle.pem"), ca_pem("a")).unwrap();
        let roots = load(&Sources {
            cert_dirs: vec![certs],
            ..sources(dir.path())
        })
        .unwrap();
        assert_eq!(roots.len(), 3);
    }
}
