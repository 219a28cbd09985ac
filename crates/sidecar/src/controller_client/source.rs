//! The flags that point a sidecar at its controller (`--controller` instead of `--manifests`),
//! checked at start into a [`ControllerSource`]: the stream's and the certificates' URLs, the
//! TLS client trusting only the controller's CA, the pod's name and its token file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::Uri;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tollgate_api::stream as wire;

use super::error::StreamError;

/// Where Kubernetes mounts the projected token the injector asks for.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/tollgate/token";

/// How the sidecar reaches the controller. Replaces --manifests.
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerSourceArgs {
    /// The controller's snapshot stream, `https://HOST:PORT`. The sidecar's configuration then
    /// comes from the controller instead of --manifests.
    #[arg(long, env = "TOLLGATE_CONTROLLER", conflicts_with = "manifests")]
    pub controller: Option<String>,

    /// PEM file of the CA the controller's certificate is signed by.
    #[arg(long, env = "TOLLGATE_CONTROLLER_CA", requires = "controller")]
    pub controller_ca: Option<PathBuf>,

    /// The pod's service-account token (audience `tollgate`), sent to the controller. Read
    /// again at each connection, as the kubelet rotates it.
    #[arg(long, env = "TOLLGATE_TOKEN_FILE", default_value = DEFAULT_TOKEN_FILE)]
    pub token_file: PathBuf,

    /// The pod's name (the downward API's metadata.name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// The pod's namespace (the downward API's metadata.namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    /// File keeping the last snapshot received, served at start while the controller is
    /// unreachable. Holds no secret in the clear (client secrets and provision keys are
    /// digests).
    #[arg(long, env = "TOLLGATE_SNAPSHOT_CACHE", requires = "controller")]
    pub snapshot_cache: Option<PathBuf>,
}

/// The controller source, validated.
#[derive(Clone, Debug)]
pub struct ControllerSource {
    /// `https://host:port/v1/snapshots/{namespace}/{pod}?deltas=1`.
    pub(super) stream_uri: Uri,
    /// `https://host:port/v1/certificates/{namespace}/{pod}`.
    pub(crate) certificates_uri: Uri,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) server_name: ServerName<'static>,
    pub(super) tls: Arc<rustls::ClientConfig>,
    pub(crate) token_file: PathBuf,
    pub namespace: String,
    pub pod: String,
    /// `--snapshot-cache`.
    pub(super) cache: Option<PathBuf>,
}

// === impl ControllerSource ===

impl ControllerSource {
    /// The source the flags describe, or `None` without --controller. Every problem is pushed
    /// to `errors`, naming its flag.
    pub fn load(args: &ControllerSourceArgs, errors: &mut Vec<String>) -> Option<Self> {
        let url = args.controller.as_deref()?;
        let before = errors.len();

        let target = match url.parse::<Uri>() {
            Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {
                let host = uri
                    .host()
                    .unwrap_or_default()
                    .trim_matches(['[', ']'])
                    .to_owned();
                Some((host, uri.port_u16().unwrap_or(443)))
            }
            _ => {
                errors.push(format!(
                    "--controller: `{url}` is not an https://HOST:PORT URL"
                ));
                None
            }
        };
        let server_name = target.as_ref().and_then(|(host, _)| {
            ServerName::try_from(host.clone())
                .map_err(|_| errors.push(format!("--controller: `{host}` is not a host name")))
                .ok()
        });

        let tls = match &args.controller_ca {
            None => {
                errors.push("--controller-ca: required with --controller".to_owned());
                None
            }
            Some(path) => client_config(path).map_err(|e| errors.push(e)).ok(),
        };

        if let Err(error) = read_token(&args.token_file) {
            errors.push(error.to_string());
        }

        let mut name = |value: &Option<String>, flag: &str, env: &str| -> String {
            match value.as_deref().map(str::trim) {
                Some(v) if is_dns_name(v) => v.to_owned(),
                Some(v) if !v.is_empty() => {
                    errors.push(format!("{flag}: `{v}` is not a Kubernetes name"));
                    String::new()
                }
                _ => {
                    errors.push(format!("{flag} (or {env}): required with --controller"));
                    String::new()
                }
            }
        };
        let pod = name(&args.pod_name, "--pod-name", "POD_NAME");
        let namespace = name(&args.pod_namespace, "--pod-namespace", "POD_NAMESPACE");

        if let Some(cache) = &args.snapshot_cache {
            let folder = cache.parent().filter(|p| !p.as_os_str().is_empty());
            if folder.is_some_and(|f| !f.is_dir()) {
                errors.push(format!(
                    "--snapshot-cache {}: its folder does not exist",
                    cache.display()
                ));
            }
        }

        if errors.len() != before {
            return None;
        }
        let (host, port) = target?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        // Asking for deltas: a controller of an earlier release ignores the query.
        let stream_uri = format!(
            "https://{authority}{}",
            wire::delta_snapshots_path(&namespace, &pod)
        )
        .parse()
        .map_err(|_| errors.push(format!("--controller: `{url}` is not a usable URL")))
        .ok()?;
        let certificates_uri = format!(
            "https://{authority}{}",
            tollgate_api::certificates::certificates_path(&namespace, &pod)
        )
        .parse()
        .ok()?;
        Some(Self {
            stream_uri,
            certificates_uri,
            host,
            port,
            server_name: server_name?,
            tls: tls?,
            token_file: args.token_file.clone(),
            namespace,
            pod,
            cache: args.snapshot_cache.clone(),
        })
    }
}

/// The pod's service-account token in `path`, read again at each connection: the kubelet
/// rotates it.
pub(crate) fn read_token(path: &Path) -> Result<String, StreamError> {
    let token = std::fs::read_to_string(path).map_err(|error| StreamError::Token {
        path: path.display().to_string(),
        error,
    })?;
    if token.trim().is_empty() {
        return Err(StreamError::Token {
            path: path.display().to_string(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        });
    }
    Ok(token)
}

/// A TLS client that trusts only the CA in `path`, speaking HTTP/2.
fn client_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let flag = format!("--controller-ca {}", path.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{flag}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{flag}: not a CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{flag}: no PEM certificate found"));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// RFC 1123 names, as pods and namespaces are named.
fn is_dns_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> ControllerSourceArgs {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
        std::fs::write(dir.join("token"), "t0ken\n").unwrap();
        ControllerSourceArgs {
            controller: Some("https://localhost:8090".into()),
            controller_ca: Some(dir.join("ca.pem")),
            token_file: dir.join("token"),
            pod_name: Some("iris-0".into()),
            pod_namespace: Some("default".into()),
            snapshot_cache: Some(dir.join("snapshot.json")),
        }
    }

    #[test]
    fn good_flags_give_the_pods_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut errors = Vec::new();
        let source = ControllerSource::load(&args(dir.path()), &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            source.stream_uri.to_string(),
            "https://localhost:8090/v1/snapshots/default/iris-0?deltas=1"
        );
        assert_eq!(
            source.certificates_uri.to_string(),
            "https://localhost:8090/v1/certificates/default/iris-0"
        );
        assert!(!format!("{source:?}").contains("t0ken"));
    }

    #[test]
    fn every_bad_flag_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = args(dir.path());
        bad.controller = Some("http://localhost:8090".into());
        bad.controller_ca = Some(dir.path().join("missing.pem"));
        bad.token_file = dir.path().join("missing-token");
        bad.pod_name = None;
        bad.pod_namespace = Some("Not_A_Name".into());
        bad.snapshot_cache = Some(dir.path().join("no/such/folder/snapshot.json"));
        let mut errors = Vec::new();
        assert!(ControllerSource::load(&bad, &mut errors).is_none());
        let all = errors.join("\n");
        for flag in [
            "--controller:",
            "--controller-ca",
            "--token-file",
            "--pod-name (or POD_NAME): required",
            "--pod-namespace: `Not_A_Name`",
            "--snapshot-cache",
        ] {
            assert!(all.contains(flag), "{flag} missing from:\n{all}");
        }
        let mut none = Vec::new();
        let without = ControllerSourceArgs {
            controller: None,
            ..bad
        };
        assert!(ControllerSource::load(&without, &mut none).is_none());
        assert!(none.is_empty());
    }
}
