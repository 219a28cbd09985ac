//! The command line: bad flags, files and manifests are one clear message and exit code 64;
//! `crdgen` prints exactly what `crds/` holds. `cargo test --no-default-features --test e2e
//! cli::` runs these against the sidecar-only build (`make build-sidecar`).

use std::process::Output;

use crate::harness::{article_manifests, tollgate};

fn run(args: &[&str]) -> Output {
    tollgate()
        .args(args)
        .env_remove("TOLLGATE_REDIS_URL")
        .env_remove("TOLLGATE_MANIFESTS")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn manifests(dir: &std::path::Path, yaml: &str) -> String {
    let path = dir.join("m.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[cfg(feature = "control-plane")]
#[test]
fn crdgen_prints_exactly_the_checked_in_crds() {
    let output = run(&["crdgen"]);
    assert!(output.status.success());
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/tollgate.yaml"))
            .unwrap();
    assert!(
        String::from_utf8(output.stdout).unwrap() == checked_in,
        "crds/tollgate.yaml is stale: run `cargo run -q -- crdgen > crds/tollgate.yaml`"
    );
}

#[test]
fn unknown_subcommand_is_exit_64_naming_it() {
    let output = run(&["sidecr"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("sidecr"), "{}", stderr(&output));
}

/// The binary injected pods run is the sidecar alone: the control plane's subcommands are
/// refused with exit code 64 and a hint naming the build that has them (the README's step
/// after `make run` is `tollgate controller`).
#[cfg(not(feature = "control-plane"))]
#[test]
fn the_sidecar_only_build_has_no_control_plane_subcommands() {
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let listed = |subcommand: &str| {
        help.lines()
            .any(|l| l.starts_with(&format!("  {subcommand} ")))
    };
    assert!(listed("sidecar"), "{help}");
    for subcommand in ["controller", "crdgen", "inject", "check"] {
        assert!(!listed(subcommand), "{help}");
        let output = run(&[subcommand]);
        assert_eq!(output.status.code(), Some(64), "{subcommand}");
        let said = stderr(&output);
        assert!(
            said.contains(&format!("`{subcommand}` is not in this build")),
            "{said}"
        );
        assert!(said.contains("make build"), "{said}");
        assert!(
            said.contains(&format!("target/release/tollgate {subcommand}")),
            "{said}"
        );
    }
}

#[test]
fn unknown_flag_is_exit_64_naming_it() {
    let output = run(&["sidecar", "--manifests", "x.yaml", "--lisen", "1"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("--lisen"), "{}", stderr(&output));
}

#[test]
fn bad_address_is_exit_64_naming_the_flag() {
    let output = run(&["sidecar", "--manifests", "x.yaml", "--listen", "localhost"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("--listen"), "{}", stderr(&output));
}

#[test]
fn bad_redis_url_is_exit_64() {
    let output = run(&[
        "sidecar",
        "--manifests",
        "x.yaml",
        "--redis-url",
        "http://u:hunter2@h",
    ]);
    assert_eq!(output.status.code(), Some(64));
    let err = stderr(&output);
    assert!(err.contains("--redis-url"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}

#[test]
fn environment_variables_set_flags() {
    let output = tollgate()
        .args(["sidecar", "--manifests", "x.yaml"])
        .env("TOLLGATE_METRICS_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("--metrics-listen"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn missing_manifest_path_is_exit_64_naming_it() {
    let output = run(&["sidecar", "--manifests", "/nonexistent/tollgate.yaml"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("/nonexistent/tollgate.yaml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn invalid_manifest_is_exit_64_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifests(
        dir.path(),
        "apiVersion: oauth.tollgate.dev/v1alpha1\nkind: OAuthService\nmetadata:\n  name: x\nspec:\n  routes: 7\n",
    );
    let output = run(&["sidecar", "--manifests", &path]);
    assert_eq!(output.status.code(), Some(64));
    let err = stderr(&output);
    assert!(err.contains(&path), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear message: {err}");
}

#[test]
fn an_unknown_field_is_exit_64_naming_the_file_and_the_field() {
    // The API server refuses this typo; standalone mode must not serve the route without it.
    let dir = tempfile::tempdir().unwrap();
    let yaml = article_manifests(1, "").replace("stripPath: false", "stripPth: false");
    assert!(yaml.contains("stripPth"));
    let path = manifests(dir.path(), &yaml);
    let output = run(&["sidecar", "--manifests", &path]);
    assert_eq!(output.status.code(), Some(64));
    let err = stderr(&output);
    assert!(err.contains(&path), "{err}");
    assert!(
        err.contains("strict decoding error: unknown field \"spec.routes[0].stripPth\""),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear message: {err}");
}

#[test]
fn missing_secret_is_exit_64_naming_the_resource() {
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        article_manifests(1, "").replace("name: sampleapp-secret\ndata:", "name: renamed\ndata:");
    let path = manifests(dir.path(), &yaml);
    let output = run(&["sidecar", "--manifests", &path]);
    assert_eq!(output.status.code(), Some(64));
    let err = stderr(&output);
    assert!(err.contains("sampleapp-secret"), "{err}");
    assert!(err.contains("OAuthApplication"), "{err}");
}

#[test]
fn no_grant_enabled_is_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = article_manifests(1, "enablePasswordGrant: false");
    let path = manifests(dir.path(), &yaml);
    let output = run(&["sidecar", "--manifests", &path]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("no grant is enabled"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn bad_tls_files_are_exit_64_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifests(dir.path(), &article_manifests(1, ""));
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "garbage").unwrap();
    let bogus = bogus.display().to_string();
    let output = run(&[
        "sidecar",
        "--manifests",
        &path,
        "--tls-cert",
        &bogus,
        "--tls-key",
        &bogus,
    ]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains(&format!("--tls-cert {bogus}")),
        "{}",
        stderr(&output)
    );
    let output = run(&["sidecar", "--manifests", &path, "--tls-cert", &bogus]);
    assert_eq!(output.status.code(), Some(64), "--tls-cert needs --tls-key");
}

/// `--sidecar-env` may set only what `tollgate sidecar` reads: each tunable the injector
/// accepts is one of its flags' variables (TOLLGATE_LOG, read before any flag, aside).
#[cfg(feature = "control-plane")]
#[test]
fn every_tunable_the_injector_passes_is_a_sidecar_variable() {
    let help = run(&["sidecar", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for name in tollgate_inject::TUNABLE_SIDECAR_ENV {
        if *name == "TOLLGATE_LOG" {
            continue;
        }
        assert!(
            help.contains(&format!("[env: {name}=]")),
            "{name} is not in `tollgate sidecar --help`"
        );
    }
}

#[test]
fn help_is_exit_0() {
    let output = run(&["sidecar", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("--redis-url"));
}

#[test]
fn secret_hash_bounds_out_of_range_are_exit_64_and_their_defaults_are_in_help() {
    for (flag, value) in [
        ("--max-concurrent-secret-hashes", "0"),
        ("--max-concurrent-secret-hashes", "65"),
        ("--secret-hash-queue-timeout", "61"),
    ] {
        let output = run(&["sidecar", "--manifests", "x.yaml", flag, value]);
        assert_eq!(output.status.code(), Some(64), "{flag} {value}");
        assert!(stderr(&output).contains(flag), "{}", stderr(&output));
    }
    let help = run(&["sidecar", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for (flag, env) in [
        (
            "--max-concurrent-secret-hashes",
            "TOLLGATE_MAX_CONCURRENT_SECRET_HASHES",
        ),
        (
            "--secret-hash-queue-timeout",
            "TOLLGATE_SECRET_HASH_QUEUE_TIMEOUT",
        ),
    ] {
        // The flag's own entry: from its name to the next flag's.
        let start = help.find(&format!("{flag} <")).expect(flag);
        let entry = &help[start..];
        let entry = &entry[..entry[2..]
            .find("\n      --")
            .map_or(entry.len(), |end| end + 2)];
        assert!(entry.contains(&format!("[env: {env}=]")), "{entry}");
        assert!(entry.contains("[default: 1]"), "{entry}");
    }
}
