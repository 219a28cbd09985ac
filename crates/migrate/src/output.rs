//! Writing a migration: the manifests as YAML (with comments) or a JSON List, and exported
//! tokens as the admin API's import bodies.

use crate::{Migration, Object, TokenImport};

fn value(object: &Object) -> serde_json::Value {
    // Serialising these plain data types fails only on a bug in their derives; a null
    // document would then fail the output's own check.
    match object {
        Object::Service(s) => serde_json::to_value(s),
        Object::Consumer(c) => serde_json::to_value(c),
        Object::Application(a) => serde_json::to_value(a),
        Object::Secret(s) => serde_json::to_value(s),
    }
    .unwrap_or_default()
}

pub fn yaml(migration: &Migration, source: &str) -> String {
    let mut out = format!(
        "# Migrated by `tollgate migrate kong` from {source}.\n\
         # Review the warnings it printed before you apply these.\n"
    );
    for document in &migration.documents {
        out.push_str("---\n");
        if let Some(comment) = &document.comment {
            for line in comment.lines() {
                out.push_str("# ");
                out.push_str(line);
                out.push('\n');
            }
        }
        match serde_yaml::to_string(&value(&document.object)) {
            Ok(yaml) => out.push_str(&yaml),
            Err(error) => out.push_str(&format!("# serialization failed: {error}\n")),
        }
    }
    out
}

pub fn json(migration: &Migration) -> String {
    let items: Vec<serde_json::Value> = migration
        .documents
        .iter()
        .map(|d| value(&d.object))
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let mut text = serde_json::to_string_pretty(&list).unwrap_or_default();
    text.push('\n');
    text
}

pub fn tokens_jsonl(tokens: &[TokenImport]) -> String {
    let mut out = String::new();
    for token in tokens {
        if let Ok(line) = serde_json::to_string(token) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}
