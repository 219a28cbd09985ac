//! Reading Kubernetes YAML manifests (files or folders, several documents per file) into
//! [`Resources`], the input of [`crate::compile`], for standalone mode.
//!
//! The files are the ones a user would `kubectl apply`, so anything that is not ours (a
//! Deployment, a Service) is skipped rather than refused, while anything that claims our API
//! group must be right, down to its last field: a field the API server would refuse
//! (`stripPth`) is refused here too, in the API server's words. Every error is one line naming the file, the document, the object
//! when known, and the field, because the person reading it has only that line to go on.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::resources::{Consumer, OAuthApplication, OAuthService};

mod strict;

/// Our API group; documents claiming it must be kinds and versions we know.
pub const GROUP: &str = "oauth.tollgate.dev";
/// The only version of [`GROUP`] served today.
pub const VERSION: &str = "v1alpha1";
/// The namespace of objects that name none, as `kubectl apply` would pick with no context.
pub const DEFAULT_NAMESPACE: &str = "default";

/// File name extensions read from folders.
const MANIFEST_EXTENSIONS: &[&str] = &["yaml", "yml", "json"];
/// Folders nest this deep at most, so a symlink loop ends in an error instead of a hang.
const MAX_FOLDER_DEPTH: usize = 16;

/// Every object the manifests hold that tollgate uses, in file order.
#[derive(Debug, Default, Clone)]
pub struct Resources {
    pub services: Vec<OAuthService>,
    pub consumers: Vec<Consumer>,
    pub applications: Vec<OAuthApplication>,
    pub secrets: Vec<Secret>,
}

/// Why the manifests could not be read: one line, starting with the file's path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    pub path: PathBuf,
    pub message: String,
}

/// The kinds we keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    OAuthService,
    Consumer,
    OAuthApplication,
    Secret,
}

/// Where a document sits, to name it in errors: `document 2` or `document 1, item 3`.
#[derive(Clone, Copy, Debug)]
struct Position {
    document: usize,
    item: Option<usize>,
}

/// Reads every manifest under `paths` (files, or folders read recursively in name order).
pub fn load(paths: &[PathBuf]) -> Result<Resources, ManifestError> {
    let mut loader = Loader::default();
    for path in paths {
        loader.load_path(path)?;
    }
    Ok(loader.resources)
}

/// Reads the documents of one manifest file's text; `path` only names it in errors. Useful to
/// callers that already hold the text (and to fuzzing).
pub fn load_str(path: &Path, text: &str) -> Result<Resources, ManifestError> {
    let mut loader = Loader::default();
    loader.load_text(path, text)?;
    Ok(loader.resources)
}

/// A digest of the names and contents of every file [`load`] would read under `paths`: it
/// changes when any of them changes, appears or goes. A path that cannot be listed digests
/// its error, so that its coming back is a change too. Not a security digest: it only tells
/// a poller when to read again.
pub fn fingerprint(paths: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        let mut files = Vec::new();
        let listed = match fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => collect_files(path, 0, &mut files),
            Ok(_) => {
                files.push(path.clone());
                Ok(())
            }
            Err(e) => Err(io_error(path, &e)),
        };
        if let Err(error) = listed {
            error.to_string().hash(&mut hasher);
        }
        for file in files {
            file.hash(&mut hasher);
            fs::read(&file).ok().hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// The files [`load`] reads under `paths`, in its order: files as given, folders recursively
/// in name order, skipping hidden entries and files that are not `*.yaml`, `*.yml` or
/// `*.json`. For a caller reading more of the same files (the controller reads Pods too).
pub fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = fs::metadata(path).map_err(|e| io_error(path, &e))?;
        if metadata.is_dir() {
            collect_files(path, 0, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

#[derive(Default)]
struct Loader {
    resources: Resources,
    /// (kind, namespace, name) → where it was first seen, to refuse duplicates.
    seen: HashMap<(Kind, String, String), String>,
}

// === impl Loader ===

impl Loader {
    fn load_path(&mut self, path: &Path) -> Result<(), ManifestError> {
        let metadata = fs::metadata(path).map_err(|e| io_error(path, &e))?;
        if metadata.is_dir() {
            let mut files = Vec::new();
            collect_files(path, 0, &mut files)?;
            if files.is_empty() {
                return Err(error(
                    path,
                    "no manifests in this folder (expected *.yaml, *.yml or *.json files)",
                ));
            }
            for file in files {
                self.load_file(&file)?;
            }
            Ok(())
        } else {
            self.load_file(path)
        }
    }

    fn load_file(&mut self, path: &Path) -> Result<(), ManifestError> {
        let bytes = fs::read(path).map_err(|e| io_error(path, &e))?;
        let text = String::from_utf8(bytes).map_err(|_| error(path, "not UTF-8 text"))?;
        self.load_text(path, &text)
    }

    fn load_text(&mut self, path: &Path, text: &str) -> Result<(), ManifestError> {
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let document_number = index + 1;
            let value = Value::deserialize(document).map_err(|e| {
                error(
                    path,
                    format!("document {document_number}: invalid YAML: {e}"),
                )
            })?;
            // `---` followed by nothing, or only comments.
            if value.is_null() {
                continue;
            }
            let position = Position {
                document: document_number,
                item: None,
            };
            if value.get("kind").and_then(Value::as_str) == Some("List") {
                let items = match value.get("items") {
                    None | Some(Value::Null) => continue,
                    Some(Value::Sequence(items)) => items,
                    Some(_) => {
                        return Err(error(
                            path,
                            format!("{position}: items: expected a list of objects"),
                        ));
                    }
                };
                for (item, value) in items.iter().enumerate() {
                    let position = Position {
                        item: Some(item + 1),
                        ..position
                    };
                    self.load_object(path, position, value.clone())?;
                }
            } else {
                self.load_object(path, position, value)?;
            }
        }
        Ok(())
    }

    fn load_object(
        &mut self,
        path: &Path,
        position: Position,
        mut value: Value,
    ) -> Result<(), ManifestError> {
        let fail = |message: String| error(path, format!("{position}: {message}"));
        if !value.is_mapping() {
            return Err(fail(
                "expected a Kubernetes object (a mapping with apiVersion and kind)".into(),
            ));
        }
        let api_version = required_str(&value, "apiVersion").map_err(&fail)?;
        let kind_name = required_str(&value, "kind").map_err(&fail)?;
        let Some(kind) = classify(&api_version, &kind_name).map_err(&fail)? else {
            return Ok(());
        };

        let namespace = set_default_namespace(&mut value);
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let Some(name) = name else {
            return Err(fail(format!("{kind_name}: metadata.name: missing field")));
        };
        let object = format!("{kind_name} {namespace}/{name}");
        let fail = |message: String| error(path, format!("{position} ({object}): {message}"));

        let here = format!("{} {position}", path.display());
        if let Some(first) = self
            .seen
            .insert((kind, namespace.clone(), name.clone()), here)
        {
            return Err(fail(format!("defined twice, first in {first}")));
        }

        // Refused as the API server refuses it, rather than served without the field.
        if let Some(message) = strict::unknown_fields(kind, &value) {
            return Err(fail(message));
        }
        match kind {
            Kind::OAuthService => self.resources.services.push(typed(value).map_err(fail)?),
            Kind::Consumer => self.resources.consumers.push(typed(value).map_err(fail)?),
            Kind::OAuthApplication => self
                .resources
                .applications
                .push(typed(value).map_err(fail)?),
            Kind::Secret => self.resources.secrets.push(typed(value).map_err(fail)?),
        }
        Ok(())
    }
}

/// Which of our kinds a document is; `None` for documents of other APIs, which are skipped.
fn classify(api_version: &str, kind: &str) -> Result<Option<Kind>, String> {
    if api_version == "v1" {
        return Ok((kind == "Secret").then_some(Kind::Secret));
    }
    let Some((group, version)) = api_version.split_once('/') else {
        return Ok(None);
    };
    if group != GROUP {
        return Ok(None);
    }
    let kind = match kind {
        "OAuthService" => Kind::OAuthService,
        "Consumer" => Kind::Consumer,
        "OAuthApplication" => Kind::OAuthApplication,
        other => {
            return Err(format!(
                "unknown kind `{other}` in {GROUP} (expected OAuthService, Consumer or OAuthApplication)"
            ));
        }
    };
    if version != VERSION {
        return Err(format!(
            "unknown version `{api_version}` for {kind:?} (expected {GROUP}/{VERSION})"
        ));
    }
    Ok(Some(kind))
}

/// Puts `metadata.namespace: default` in objects that name none, and returns the namespace.
fn set_default_namespace(value: &mut Value) -> String {
    let Some(object) = value.as_mapping_mut() else {
        return DEFAULT_NAMESPACE.to_owned();
    };
    let metadata = object
        .entry(Value::from("metadata"))
        .or_insert_with(|| Value::Mapping(Default::default()));
    // A `metadata: ~` is as good as absent; anything else not a mapping is left for the
    // typed parse to report.
    if metadata.is_null() {
        *metadata = Value::Mapping(Default::default());
    }
    let Some(metadata) = metadata.as_mapping_mut() else {
        return DEFAULT_NAMESPACE.to_owned();
    };
    let namespace = metadata
        .entry(Value::from("namespace"))
        .or_insert(Value::Null);
    match namespace.as_str() {
        Some(ns) if !ns.is_empty() => ns.to_owned(),
        _ => {
            *namespace = Value::from(DEFAULT_NAMESPACE);
            DEFAULT_NAMESPACE.to_owned()
        }
    }
}

fn required_str(value: &Value, field: &str) -> Result<String, String> {
    match value.get(field) {
        None | Some(Value::Null) => Err(format!("{field}: missing field")),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("{field}: expected a non-empty string")),
    }
}

/// Deserializes with the path of the failing field: `spec.routes[0].pathPrefix: …`.
fn typed<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde reports a missing field at its parent; name the field itself, as a reader
        // looks for it: `spec.clientId: missing field`.
        if let Some(field) = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            if path == "." {
                format!("{field}: missing field")
            } else {
                format!("{path}.{field}: missing field")
            }
        } else if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

fn collect_files(
    folder: &Path,
    depth: usize,
    files: &mut Vec<PathBuf>,
) -> Result<(), ManifestError> {
    if depth > MAX_FOLDER_DEPTH {
        return Err(error(
            folder,
            format!("folders nested more than {MAX_FOLDER_DEPTH} deep (a symlink loop?)"),
        ));
    }
    let entries = fs::read_dir(folder).map_err(|e| io_error(folder, &e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(folder, &e))?;
        // Hidden entries are skipped: a ConfigMap or Secret mounted as a volume holds every
        // file twice, once under a hidden `..2024_…` folder, and reading both would make
        // every object a duplicate.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        paths.push(entry.path());
    }
    paths.sort();
    for path in paths {
        // `fs::metadata` follows symlinks, as the mounted files above are symlinks.
        let metadata = fs::metadata(&path).map_err(|e| io_error(&path, &e))?;
        if metadata.is_dir() {
            collect_files(&path, depth + 1, files)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
        {
            files.push(path);
        }
    }
    Ok(())
}

fn error(path: &Path, message: impl Into<String>) -> ManifestError {
    // One line, whatever a parser put in its message: the error is read in a log line.
    let message: String = message.into();
    ManifestError {
        path: path.to_owned(),
        message: message.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> ManifestError {
    let message = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    };
    error(path, message)
}

// === impl Position ===

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = r#"
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthService
metadata:
  name: sampleirisservice
spec:
  upstream: {port: 52773}
  routes: [{pathPrefix: /event, stripPath: false}]
  oauth2:
    enablePasswordGrant: true
    provisionKeySecretRef: {name: pk}
"#;

    const APP: &str = r#"
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata: {name: sampleapp}
spec:
  consumerRef: {name: clientapp}
  clientId: clientid
  clientSecretRef: {name: sampleapp-secret}
"#;

    fn load_text(text: &str) -> Result<Resources, String> {
        load_str(Path::new("app.yaml"), text).map_err(|e| e.to_string())
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn unknown_fields_are_refused_in_the_api_server_s_words() {
        // What kube-apiserver 1.28 answers `kubectl apply` for the same document.
        let typo = SERVICE.replace("stripPath: false", "stripPth: false");
        assert_eq!(
            load_text(&typo).unwrap_err(),
            "app.yaml: document 1 (OAuthService default/sampleirisservice): strict decoding \
             error: unknown field \"spec.routes[0].stripPth\""
        );
        let many = format!("{SERVICE}bogus: 2\n")
            .replace(
                "name: sampleirisservice",
                "name: sampleirisservice\n  labelz: {}",
            )
            .replace(
                "enablePasswordGrant: true",
                "enablePasswordGrant: true\n    extra: 1",
            );
        assert_eq!(
            load_text(&many).unwrap_err(),
            "app.yaml: document 1 (OAuthService default/sampleirisservice): strict decoding \
             error: unknown field \"metadata.labelz\", unknown field \"bogus\", unknown field \
             \"spec.oauth2.extra\""
        );
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringdata: {k: v}\n";
        assert!(
            load_text(secret)
                .unwrap_err()
                .ends_with("strict decoding error: unknown field \"stringdata\""),
        );
        // Maps the schema leaves open (labels, a podSelector's matchLabels) take any key,
        // and status is the controller's.
        let open = SERVICE.replace(
            "spec:\n",
            "  labels: {any: thing}\nstatus: {conditions: []}\nspec:\n  podSelector: {matchLabels: {app: iris}}\n",
        );
        assert_eq!(load_text(&open).unwrap().services.len(), 1);
    }

    #[test]
    fn reads_several_documents_and_defaults_the_namespace() {
        let text = format!(
            "{SERVICE}\n---\n---\n# only a comment\n---\n{APP}\n---\n{}",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: other}\nstringData: {k: v}\ndata: {d: Y2xpZW50c2VjcmV0}\n"
        );
        let r = load_text(&text).unwrap();
        assert_eq!(r.services.len(), 1);
        assert_eq!(r.applications.len(), 1);
        assert_eq!(r.secrets.len(), 1);
        assert_eq!(r.services[0].metadata.namespace.as_deref(), Some("default"));
        assert!(!r.services[0].spec.routes[0].strip_path);
        assert_eq!(r.applications[0].spec.client_id, "clientid");
        let secret = &r.secrets[0];
        assert_eq!(secret.metadata.namespace.as_deref(), Some("other"));
        assert_eq!(secret.data.as_ref().unwrap()["d"].0, b"clientsecret");
        assert_eq!(secret.string_data.as_ref().unwrap()["k"], "v");
    }

    #[test]
    fn skips_other_apis_and_reads_lists() {
        let text = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: iris}}\nspec: {{whatever: 1}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: iris}}\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- apiVersion: oauth.tollgate.dev/v1alpha1\n  kind: Consumer\n  metadata: {{name: clientapp}}\n  spec: {{username: ClientApp}}\n---\n{SERVICE}"
        );
        let r = load_text(&text).unwrap();
        assert_eq!(r.consumers.len(), 1);
        assert_eq!(r.consumers[0].spec.username.as_deref(), Some("ClientApp"));
        assert_eq!(r.services.len(), 1);
    }

    #[test]
    fn missing_field_names_file_document_object_and_field() {
        let text = format!(
            "{SERVICE}---\n{}",
            APP.replace("  clientId: clientid\n", "")
        );
        let err = load_text(&text).unwrap_err();
        assert_eq!(
            err,
            "app.yaml: document 2 (OAuthApplication default/sampleapp): spec.clientId: missing field"
        );
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let err = load_text(&SERVICE.replace("pathPrefix: /event", "pathPrefix: [1]")).unwrap_err();
        assert!(
            err.starts_with(
                "app.yaml: document 1 (OAuthService default/sampleirisservice): spec.routes[0].pathPrefix: invalid type"
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_kind_or_version_of_our_group_is_an_error() {
        let err = load_text(
            "apiVersion: oauth.tollgate.dev/v1alpha1\nkind: Route\nmetadata: {name: x}\n",
        )
        .unwrap_err();
        assert!(err.contains("document 1: unknown kind `Route`"), "{err}");
        let err = load_text(&SERVICE.replace("v1alpha1", "v2")).unwrap_err();
        assert!(
            err.contains("unknown version `oauth.tollgate.dev/v2`"),
            "{err}"
        );
    }

    #[test]
    fn missing_name_api_version_and_kind_are_errors() {
        let err = load_text("apiVersion: v1\nkind: Secret\nmetadata: {}\n").unwrap_err();
        assert_eq!(
            err,
            "app.yaml: document 1: Secret: metadata.name: missing field"
        );
        let err = load_text("kind: Secret\n").unwrap_err();
        assert_eq!(err, "app.yaml: document 1: apiVersion: missing field");
        let err = load_text("- a\n- b\n").unwrap_err();
        assert!(err.contains("expected a Kubernetes object"), "{err}");
    }

    #[test]
    fn same_object_twice_is_an_error() {
        let err = load_text(&format!("{APP}---\n{APP}")).unwrap_err();
        assert_eq!(
            err,
            "app.yaml: document 2 (OAuthApplication default/sampleapp): defined twice, first in app.yaml document 1"
        );
        // Same name, another namespace or kind: fine.
        let other = APP.replace("{name: sampleapp}", "{name: sampleapp, namespace: other}");
        load_text(&format!("{APP}---\n{other}")).unwrap();
    }

    #[test]
    fn invalid_base64_in_secret_data_is_an_error() {
        let err =
            load_text("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: '%%%'}\n")
                .unwrap_err();
        assert!(
            err.starts_with("app.yaml: document 1 (Secret default/s): data"),
            "{err}"
        );
    }

    #[test]
    fn folders_are_read_recursively_in_order_skipping_hidden_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b/service.yml", SERVICE);
        write(dir.path(), "a.yaml", APP);
        write(dir.path(), "README.md", "not yaml: [");
        // What a mounted ConfigMap looks like: the real files under a hidden folder.
        write(dir.path(), "..2024_01_01/a.yaml", APP);
        let r = load(&[dir.path().to_owned()]).unwrap();
        assert_eq!(r.applications.len(), 1);
        assert_eq!(r.services.len(), 1);
    }

    #[test]
    fn duplicates_across_files_name_both() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.yaml", APP);
        let b = write(
            dir.path(),
            "b.json",
            &serde_json::to_string(&serde_yaml::from_str::<serde_json::Value>(APP).unwrap())
                .unwrap(),
        );
        let err = load(&[a.clone(), b.clone()]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: document 1", b.display())),
            "{err}"
        );
        assert!(
            err.ends_with(&format!("first in {} document 1", a.display())),
            "{err}"
        );
    }

    #[test]
    fn the_fingerprint_follows_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let paths = [dir.path().to_owned()];
        let a = write(dir.path(), "a.yaml", APP);
        let first = fingerprint(&paths);
        assert_eq!(fingerprint(&paths), first);
        write(dir.path(), "a.yaml", SERVICE);
        let changed = fingerprint(&paths);
        assert_ne!(changed, first);
        write(dir.path(), "README.md", "not read by load");
        assert_eq!(fingerprint(&paths), changed);
        fs::rename(&a, dir.path().join("b.yaml")).unwrap();
        assert_ne!(fingerprint(&paths), changed);
        let missing = [dir.path().join("gone.yaml")];
        assert_eq!(fingerprint(&missing), fingerprint(&missing));
    }

    #[test]
    fn missing_path_and_empty_folder_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let err = load(std::slice::from_ref(&missing))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("{}: no such file or directory", missing.display())
        );
        write(dir.path(), "notes.txt", "hello");
        let err = load(&[dir.path().to_owned()]).unwrap_err().to_string();
        assert!(err.contains("no manifests in this folder"), "{err}");
    }

    #[test]
    fn invalid_yaml_and_non_utf8_are_errors() {
        let err = load_text("a: [\n").unwrap_err();
        assert!(
            err.starts_with("app.yaml: document 1: invalid YAML"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        let err = load(&[path]).unwrap_err().to_string();
        assert!(err.ends_with("not UTF-8 text"), "{err}");
    }

    /// Garbage never panics: every input either loads or gives one line of error.
    #[test]
    fn garbage_never_panics() {
        let seeds = [
            SERVICE.to_owned(),
            APP.to_owned(),
            "apiVersion: v1\nkind: List\nitems: [1, null, {kind: List}]\n".to_owned(),
            "apiVersion: v1\nkind: Secret\nmetadata: 7\n".to_owned(),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: [x]}\n".to_owned(),
            "apiVersion: [v1]\nkind: {a: b}\n".to_owned(),
            "&a [*a]".to_owned(),
            "!!binary AAAA".to_owned(),
            "{".repeat(300),
            "- ".repeat(300),
            "\u{0}\u{feff}---\n...\n---".to_owned(),
        ];
        // A cheap deterministic generator (xorshift) mutating the seeds: byte flips,
        // truncations and splices, to reach states hand-written cases do not.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b" \n:-[]{}'\"#&*!|>?,%@`\\\t0aZ/";
        let mut inputs: Vec<String> = seeds.to_vec();
        for round in 0..3000 {
            let seed = seeds[(next() % seeds.len() as u64) as usize]
                .as_bytes()
                .to_vec();
            let mut bytes = seed;
            for _ in 0..(1 + next() % 8) {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 => bytes.truncate(at),
                    _ => {
                        let other = seeds[round % seeds.len()].as_bytes();
                        bytes.splice(at..at, other.iter().copied());
                    }
                }
            }
            inputs.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        for input in inputs {
            if let Err(err) = load_text(&input) {
                assert!(!err.contains('\n'), "{err}");
            }
        }
    }
}
