//! `tollgate inject -f`: the injected version of a manifest file, as `istioctl kube-inject`
//! prints it. Pods, and the pod template of every workload kind (Deployment, StatefulSet,
//! DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, PodTemplate, and `List`s of
//! them), get the sidecar as an opted-in namespace would give it: unless annotated
//! `tollgate.dev/inject: disabled`. Every other document comes out byte for byte as it went
//! in, comments included; an injected one keeps its key order and its leading comments.

use json_patch::PatchOperation;
use json_patch::jsonptr::Pointer;
use k8s_openapi::api::core::v1::Pod;
use serde_yaml::{Mapping, Value};

use crate::{Decision, InjectConfig, Scope, decide};

/// A document that cannot be read or injected: its position, its object when known, and why.
#[derive(Debug, thiserror::Error)]
#[error("document {document}{}: {message}", object.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
pub struct ManifestError {
    /// 1-based, counting `---` separated documents.
    pub document: usize,
    /// `Kind namespace/name`.
    pub object: Option<String>,
    pub message: String,
}

/// The injected manifest, and what the person running the command should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    pub yaml: String,
    /// One line per injected object with a warning, and per workload left alone and why.
    pub notes: Vec<String>,
}

/// Where the pod template sits in each kind that has one.
fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    match (group, kind) {
        ("", "Pod") => Some(&[]),
        ("", "PodTemplate") => Some(&["template"]),
        ("", "ReplicationController") => Some(&["spec", "template"]),
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some(&["spec", "template"])
        }
        ("batch", "Job") => Some(&["spec", "template"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects every pod and pod template of `text` (one or more YAML documents).
pub fn inject_manifest(text: &str, config: &InjectConfig) -> Result<Injected, ManifestError> {
    let mut yaml = String::with_capacity(text.len() * 2);
    let mut notes = Vec::new();
    for (index, document) in split_documents(text).into_iter().enumerate() {
        let number = index + 1;
        if let Some(separator) = document.separator {
            yaml.push_str(separator);
            yaml.push('\n');
        }
        let fail = |object: Option<String>, message: String| ManifestError {
            document: number,
            object,
            message,
        };
        let mut value: Value = serde_yaml::from_str(document.body)
            .map_err(|e| fail(None, format!("invalid YAML: {e}")))?;
        let changed = inject_value(&mut value, config, &mut notes)
            .map_err(|(object, message)| fail(object, message))?;
        if changed {
            yaml.push_str(leading_comments(document.body));
            let body = serde_yaml::to_string(&value)
                .map_err(|e| fail(None, format!("cannot write YAML: {e}")))?;
            yaml.push_str(&body);
        } else {
            yaml.push_str(document.body);
            if !document.body.is_empty() && !document.body.ends_with('\n') {
                yaml.push('\n');
            }
        }
    }
    Ok(Injected { yaml, notes })
}

/// Injects `value` in place; true when it changed. Errors carry the object's name.
fn inject_value(
    value: &mut Value,
    config: &InjectConfig,
    notes: &mut Vec<String>,
) -> Result<bool, (Option<String>, String)> {
    let Value::Mapping(_) = value else {
        return Ok(false);
    };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind == "List" {
        let mut changed = false;
        if let Some(Value::Sequence(items)) = value.get_mut("items") {
            for item in items {
                changed |= inject_value(item, config, notes)?;
            }
        }
        return Ok(changed);
    }
    let Some(path) = template_path(&api_version, &kind) else {
        return Ok(false);
    };
    let metadata = value.get("metadata");
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let name = metadata
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let object = match (namespace.as_deref(), name) {
        (_, "") => kind.clone(),
        (Some(ns), name) => format!("{kind} {ns}/{name}"),
        (None, name) => format!("{kind} {name}"),
    };
    let fail = |message: String| (Some(object.clone()), message);

    let Some(template) = walk(value, path) else {
        return Err(fail(format!("no {} to inject", path.join("."))));
    };
    let Value::Mapping(template) = template else {
        return Err(fail(format!("{} is not a mapping", path.join("."))));
    };
    let pod_value = Value::Mapping(
        [
            ("metadata", template.get("metadata").cloned()),
            ("spec", template.get("spec").cloned()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (Value::from(k), v)))
        .collect(),
    );
    let mut pod: Pod = serde_yaml::from_value(pod_value)
        .map_err(|e| fail(format!("not a valid pod template: {e}")))?;
    if pod.metadata.namespace.is_none() {
        pod.metadata.namespace = namespace;
    }
    match decide(&pod, config, Scope::Namespace).map_err(|e| fail(e.to_string()))? {
        Decision::Skip(reason) => {
            notes.push(format!("{object}: not injected, {}", reason.describe()));
            Ok(false)
        }
        Decision::Inject { patch, warnings } => {
            notes.extend(warnings.into_iter().map(|w| format!("{object}: {w}")));
            if !template.contains_key("metadata") {
                template.insert("metadata".into(), Value::Mapping(Mapping::new()));
            }
            let mut target = Value::Mapping(std::mem::take(template));
            let applied = apply(&mut target, &patch.0);
            if let Value::Mapping(mapping) = target {
                *template = mapping;
            }
            applied.map_err(fail)?;
            Ok(true)
        }
    }
}

fn walk<'v>(value: &'v mut Value, path: &[&str]) -> Option<&'v mut Value> {
    path.iter()
        .try_fold(value, |value, key| value.as_mapping_mut()?.get_mut(*key))
}

/// Applies the `add` operations [`decide`] makes to a YAML value, keeping its key order.
fn apply(target: &mut Value, ops: &[PatchOperation]) -> Result<(), String> {
    for op in ops {
        let PatchOperation::Add(add) = op else {
            return Err(format!("unexpected patch operation {op}"));
        };
        let mut value = serde_yaml::to_value(&add.value).map_err(|e| e.to_string())?;
        name_first(&mut value);
        add_at(target, &add.path, value)
            .ok_or_else(|| format!("cannot add at {} in the pod template", add.path))?;
    }
    Ok(())
}

fn add_at(target: &mut Value, path: &Pointer, value: Value) -> Option<()> {
    let (parent_path, last) = path.split_back()?;
    let parent = parent_path
        .tokens()
        .try_fold(target, |value, token| match value {
            Value::Mapping(map) => map.get_mut(token.decoded().as_ref()),
            Value::Sequence(items) => items.get_mut(token.decoded().parse::<usize>().ok()?),
            _ => None,
        })?;
    let key = last.decoded();
    match parent {
        Value::Mapping(map) => {
            map.insert(Value::from(key.as_ref()), value);
        }
        Value::Sequence(items) if key == "-" => items.push(value),
        Value::Sequence(items) => {
            let index = key.parse::<usize>().ok().filter(|i| *i <= items.len())?;
            items.insert(index, value);
        }
        _ => return None,
    }
    Some(())
}

/// Puts `name` first in every mapping, as people write Kubernetes YAML (the patch's JSON
/// comes with its keys sorted).
fn name_first(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            if let Some(name) = map.shift_remove("name") {
                let rest = std::mem::take(map);
                map.insert("name".into(), name);
                map.extend(rest);
            }
            map.values_mut().for_each(name_first);
        }
        Value::Sequence(items) => items.iter_mut().for_each(name_first),
        _ => {}
    }
}

/// One document of a multi-document file: its text, and the `---` line before it.
struct Document<'t> {
    separator: Option<&'t str>,
    body: &'t str,
}

/// Splits at `---` lines (a document marker is always at the start of a line, so no scalar
/// can hold one there).
fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut separator = None;
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let is_marker = content == "---"
            || content.starts_with("--- ")
            || content.starts_with("---\t")
            || content.starts_with("---#");
        if is_marker {
            documents.push(Document {
                separator,
                body: &text[start..offset],
            });
            separator = Some(content);
            start = offset + line.len();
        }
        offset += line.len();
    }
    documents.push(Document {
        separator,
        body: &text[start..],
    });
    // A file that starts with `---` has nothing before it: not a document.
    if documents.len() > 1 && documents[0].separator.is_none() && documents[0].body.is_empty() {
        documents.remove(0);
    }
    documents
}

/// The comment and blank lines a document starts with, kept when it is rewritten.
fn leading_comments(body: &str) -> &str {
    let mut end = 0;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            end += line.len();
        } else {
            break;
        }
    }
    &body[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_markers_only() {
        let text = "a: 1\n---\nb: |\n  ---\n  x\n--- # two\nc: 3";
        let docs = split_documents(text);
        let bodies: Vec<_> = docs.iter().map(|d| d.body).collect();
        assert_eq!(bodies, ["a: 1\n", "b: |\n  ---\n  x\n", "c: 3"]);
        assert_eq!(docs[1].separator, Some("---"));
        assert_eq!(docs[2].separator, Some("--- # two"));
        let docs = split_documents("---\na: 1\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].separator, Some("---"));
    }

    #[test]
    fn leading_comments_are_kept() {
        assert_eq!(
            leading_comments("# a\n\n# b\nkind: Pod\n# c\n"),
            "# a\n\n# b\n"
        );
        assert_eq!(leading_comments("kind: Pod\n"), "");
    }
}
