//! `tollgate check` where no cluster is needed: a kubeconfig whose API server does not answer,
//! or no kubeconfig at all, is one clear failure and exit code 2, in text and in JSON; a bad
//! flag is exit code 64 naming it. The checks against a cluster are in `cluster.rs`.
#![cfg(feature = "control-plane")]

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::harness::{free_ports, tollgate};

/// A kubeconfig naming an API server at `server`.
fn kubeconfig(dir: &Path, server: &str) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: not-a-real-token}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn check(kubeconfig: &str, home: &Path, args: &[&str]) -> Output {
    tollgate()
        .arg("check")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn no_api_server_answering_is_one_failure_with_a_hint_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let [port] = free_ports::<1>();
    let server = format!("https://127.0.0.1:{port}");
    let config = kubeconfig(dir.path(), &server);

    let output = check(&config, dir.path(), &["--timeout", "5"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("✔ can read the kubeconfig\n"), "{text}");
    assert!(
        text.contains(&format!("✖ can reach the API server at {server}/")),
        "{text}"
    );
    assert!(text.contains("    hint: "), "{text}");
    assert!(text.contains("Status check results are ✖"), "{text}");
    // Nothing past the API server is claimed either way.
    assert!(!text.contains("webhook"), "{text}");
    // The user's token is never shown.
    assert!(!text.contains("not-a-real-token"), "{text}");

    let output = check(&config, dir.path(), &["--output", "json", "--timeout", "5"]);
    assert_eq!(output.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["schemaVersion"], 1);
    assert_eq!(report["success"], false);
    assert_eq!(report["exitCode"], 2);
    let checks = &report["groups"][0]["checks"];
    assert_eq!(report["groups"][0]["name"], "kubernetes-api");
    assert_eq!(checks[0]["result"], "success");
    assert_eq!(checks[1]["result"], "failure");
    assert!(
        checks[1]["hint"]
            .as_str()
            .unwrap()
            .contains("kubectl cluster-info")
    );
    assert!(!checks[1]["details"][0].as_str().unwrap().is_empty());
}

#[test]
fn no_kubeconfig_is_a_failure_naming_it_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    let output = check(missing.to_str().unwrap(), dir.path(), &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("✖ can read the kubeconfig"), "{text}");
    assert!(text.contains("hint: set KUBECONFIG"), "{text}");
}

#[test]
fn bad_check_flags_are_exit_64_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), "https://127.0.0.1:1");
    for (args, named) in [
        (&["--output", "yaml"][..], "--output"),
        (&["--release", "Not_A_Name"][..], "--release"),
        (&["--namespace", "Bad.Name"][..], "--namespace"),
        (&["--timeout", "0"][..], "--timeout"),
        (&["--cert-expiry-days", "99999"][..], "--cert-expiry-days"),
    ] {
        let output = check(&config, dir.path(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}
