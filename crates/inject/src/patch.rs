//! The JSON Patch that adds the sidecar. Only `add` operations, aimed at the exact places
//! they change, so the API server keeps every field of the pod this crate does not know.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde::Serialize;
use serde_json::Value;

use crate::{
    ANNOTATION_CONTROLLER_CA, ANNOTATION_PROXY_VERSION, ControllerCa, InjectConfig, LABEL_INJECTED,
    Overrides, sidecar,
};

pub(crate) fn build(
    pod: &Pod,
    spec: &PodSpec,
    config: &InjectConfig,
    overrides: &Overrides,
) -> Patch {
    let mut ops = Vec::new();
    let container = to_value(&sidecar::container(config, overrides));
    if overrides.native_sidecar {
        // First of the init containers: it is up before any other one runs, and kept running.
        match &spec.init_containers {
            Some(_) => add(&mut ops, &["spec", "initContainers", "0"], container),
            None => add(
                &mut ops,
                &["spec", "initContainers"],
                Value::Array(vec![container]),
            ),
        }
    } else {
        // Last of the containers: `kubectl logs` and `exec` keep choosing the application.
        add(&mut ops, &["spec", "containers", "-"], container);
    }

    let volumes = sidecar::volumes(config, overrides);
    match &spec.volumes {
        Some(_) => {
            for volume in &volumes {
                add(&mut ops, &["spec", "volumes", "-"], to_value(volume));
            }
        }
        None => add(&mut ops, &["spec", "volumes"], to_value(&volumes)),
    }

    add_to_map(
        &mut ops,
        "labels",
        pod.metadata.labels.as_ref(),
        LABEL_INJECTED,
        "true",
    );
    let ca = match &config.controller_ca {
        ControllerCa::Pem(pem) => Some(pem.as_str()),
        // Left for the webhook to fill in (see `fill_controller_ca`).
        ControllerCa::FromWebhook => Some(""),
        ControllerCa::ConfigMap(_) => None,
    };
    // The second key of a map the patch may have just created is added inside it.
    let mut annotations = pod.metadata.annotations.clone();
    add_to_map(
        &mut ops,
        "annotations",
        annotations.as_ref(),
        ANNOTATION_PROXY_VERSION,
        &proxy_version(&config.image),
    );
    annotations.get_or_insert_with(BTreeMap::new);
    if let Some(ca) = ca {
        add_to_map(
            &mut ops,
            "annotations",
            annotations.as_ref(),
            ANNOTATION_CONTROLLER_CA,
            ca,
        );
    }
    Patch(ops)
}

/// The sidecar's version as its image names it: the tag (`tollgate:0.1.0` → `0.1.0`), else
/// the digest, else `latest`, which is what a bare name pulls.
pub(crate) fn proxy_version(image: &str) -> String {
    let name = image.rsplit('/').next().unwrap_or(image);
    if let Some((_, digest)) = name.split_once('@') {
        return digest.to_owned();
    }
    match name.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag.to_owned(),
        _ => "latest".to_owned(),
    }
}

/// For a pod injected ahead of time with an empty CA annotation: the patch that fills it in
/// with the webhook's CA. `None` when there is nothing to fill or nothing to fill it with.
pub(crate) fn fill_controller_ca(pod: &Pod, config: &InjectConfig) -> Option<Patch> {
    let ControllerCa::Pem(pem) = &config.controller_ca else {
        return None;
    };
    let current = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_CONTROLLER_CA)?;
    if !current.trim().is_empty() {
        return None;
    }
    let mut ops = Vec::new();
    add(
        &mut ops,
        &["metadata", "annotations", ANNOTATION_CONTROLLER_CA],
        Value::from(pem.as_str()),
    );
    Some(Patch(ops))
}

/// Sets `metadata.<map>.<key>`, creating the map when the pod has none (`add` on an existing
/// key replaces its value, RFC 6902 §4.1).
fn add_to_map(
    ops: &mut Vec<PatchOperation>,
    map: &str,
    current: Option<&BTreeMap<String, String>>,
    key: &str,
    value: &str,
) {
    match current {
        Some(_) => add(ops, &["metadata", map, key], Value::from(value)),
        None => {
            let mut object = serde_json::Map::new();
            object.insert(key.to_owned(), Value::from(value));
            add(ops, &["metadata", map], Value::Object(object));
        }
    }
}

fn add(ops: &mut Vec<PatchOperation>, path: &[&str], value: Value) {
    ops.push(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    }));
}

/// k8s-openapi's types serialize infallibly (plain structs of strings, numbers and maps).
fn to_value(object: &impl Serialize) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::proxy_version;

    #[test]
    fn the_proxy_version_is_the_image_s_tag() {
        assert_eq!(proxy_version("tollgate:0.1.0"), "0.1.0");
        assert_eq!(
            proxy_version("registry.example.com:5000/tollgate:0.2.0-rc1"),
            "0.2.0-rc1"
        );
        assert_eq!(
            proxy_version("registry.example.com:5000/tollgate"),
            "latest"
        );
        assert_eq!(proxy_version("tollgate@sha256:abc"), "sha256:abc");
    }
}
