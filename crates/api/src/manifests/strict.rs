//! Strict decoding, as the API server does it: a manifest field that the CRD's schema (or
//! Kubernetes' own type) does not declare is refused, not silently dropped, with the API
//! server's own words (`strict decoding error: unknown field "spec.routes[0].stripPth"`).

use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use serde_yaml::Value;

use super::Kind;
use crate::resources::{Consumer, OAuthApplication, OAuthService};

/// ObjectMeta's fields, as the API server decodes `metadata`.
const OBJECT_META_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];
/// A Secret's fields besides `metadata`.
const SECRET_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "data",
    "stringData",
    "type",
    "immutable",
];
/// The fields every custom resource has besides those its schema declares.
const OBJECT_FIELDS: &[&str] = &["apiVersion", "kind"];

/// The schemas of our kinds, made once.
static SCHEMAS: LazyLock<[JSONSchemaProps; 3]> = LazyLock::new(|| {
    let schema = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        crd.spec
            .versions
            .into_iter()
            .next()
            .and_then(|v| v.schema)
            .and_then(|s| s.open_api_v3_schema)
            .unwrap_or_default()
    };
    [
        schema(OAuthService::crd()),
        schema(Consumer::crd()),
        schema(OAuthApplication::crd()),
    ]
});

/// The API server's error for `value`, a document of `kind`, when it holds fields its type
/// does not declare; `None` when it holds none.
pub(super) fn unknown_fields(kind: Kind, value: &Value) -> Option<String> {
    let mut metadata = Vec::new();
    if let Some(Value::Mapping(meta)) = value.get("metadata") {
        for key in meta.keys() {
            let key = key_name(key);
            if !OBJECT_META_FIELDS.contains(&key.as_str()) {
                metadata.push(format!("metadata.{key}"));
            }
        }
    }
    let mut others = Vec::new();
    let Value::Mapping(root) = value else {
        return None;
    };
    let schema = match kind {
        Kind::OAuthService => Some(&SCHEMAS[0]),
        Kind::Consumer => Some(&SCHEMAS[1]),
        Kind::OAuthApplication => Some(&SCHEMAS[2]),
        Kind::Secret => None,
    };
    for (key, field) in root {
        let key = key_name(key);
        if key == "metadata" {
            continue;
        }
        match schema {
            None if !SECRET_FIELDS.contains(&key.as_str()) => others.push(key),
            None => {}
            Some(_) if OBJECT_FIELDS.contains(&key.as_str()) => {}
            Some(schema) => match schema.properties.as_ref().and_then(|p| p.get(&key)) {
                Some(inner) => walk(inner, field, &key, &mut others),
                None => others.push(key),
            },
        }
    }
    if metadata.is_empty() && others.is_empty() {
        return None;
    }
    others.sort();
    let fields: Vec<String> = metadata
        .iter()
        .chain(&others)
        .map(|path| format!("unknown field \"{path}\""))
        .collect();
    Some(format!("strict decoding error: {}", fields.join(", ")))
}

/// Adds to `out` the paths under `path` that `schema` does not declare, as the API server's
/// pruning finds them.
fn walk(schema: &JSONSchemaProps, value: &Value, path: &str, out: &mut Vec<String>) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    match value {
        Value::Mapping(map) => {
            let additional = match &schema.additional_properties {
                Some(JSONSchemaPropsOrBool::Schema(inner)) => Some(Some(inner.as_ref())),
                Some(JSONSchemaPropsOrBool::Bool(true)) => Some(None),
                _ => None,
            };
            // A schema that lists no properties and says nothing of others is left alone:
            // only what the schema spells out is checked.
            if schema.properties.is_none() && additional.is_none() {
                return;
            }
            for (key, field) in map {
                let key = key_name(key);
                let here = format!("{path}.{key}");
                match schema.properties.as_ref().and_then(|p| p.get(&key)) {
                    Some(inner) => walk(inner, field, &here, out),
                    None => match additional {
                        Some(Some(inner)) => walk(inner, field, &here, out),
                        Some(None) => {}
                        None => out.push(here),
                    },
                }
            }
        }
        Value::Sequence(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(inner)) = &schema.items {
                for (index, item) in items.iter().enumerate() {
                    walk(inner, item, &format!("{path}[{index}]"), out);
                }
            }
        }
        Value::Tagged(tagged) => walk(schema, &tagged.value, path, out),
        _ => {}
    }
}

/// A mapping key as a field name (YAML allows keys that are not strings).
fn key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default(),
    }
}
