//! `tollgate inject -f`: manifests in, injected manifests out.

use std::path::{Path, PathBuf};

use serde_yaml::Value;
use tollgate_inject::cli::{InjectCommand, run};
use tollgate_inject::{InjectConfig, inject_manifest};

fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative)).unwrap()
}

fn config() -> InjectConfig {
    InjectConfig::new("tollgate:0.1.0")
}

/// The documents of a multi-document YAML text.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn containers(template: &Value, list: &str) -> Vec<String> {
    template["spec"][list]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn workloads_are_injected_and_everything_else_passes_through() {
    let input = read("tests/fixtures/manifests/workloads.yaml");
    let injected = inject_manifest(&input, &config()).unwrap();
    let docs = documents(&injected.yaml);
    let originals = documents(&input);
    assert_eq!(docs.len(), originals.len());

    // Deployment: annotated, with a TLS Secret.
    let deployment = &docs[0]["spec"]["template"];
    assert_eq!(
        containers(deployment, "containers"),
        ["iris", "tollgate-sidecar"]
    );
    let sidecar = &deployment["spec"]["containers"][1];
    assert_eq!(sidecar["command"][0], "/usr/local/bin/tollgate-sidecar");
    assert_eq!(sidecar["args"][0], "sidecar");
    assert_eq!(
        deployment["metadata"]["labels"]["oauth.tollgate.dev/injected"],
        "true"
    );
    let volumes: Vec<&str> = deployment["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "tollgate-token",
            "tollgate-ca",
            "tollgate-cache",
            "tollgate-tls"
        ]
    );
    // Service, ConfigMap, Consumer: untouched.
    assert_eq!(docs[1], originals[1]);
    assert_eq!(docs[2], originals[2]);
    assert_eq!(docs[6], originals[6]);
    // StatefulSet without annotations: injected, as the user asked for this file.
    assert_eq!(
        containers(&docs[3]["spec"]["template"], "containers"),
        ["iris", "tollgate-sidecar"]
    );
    // A pod that says disabled stays as it is.
    assert_eq!(docs[4], originals[4]);
    // CronJob: its pod template, as a native sidecar.
    let job = &docs[5]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(containers(job, "initContainers"), ["tollgate-sidecar"]);
    assert_eq!(containers(job, "containers"), ["export"]);
    // List items too.
    assert_eq!(
        containers(&docs[7]["items"][0], "containers"),
        ["app", "tollgate-sidecar"]
    );

    assert_eq!(
        injected.notes,
        ["Pod shop/debug: not injected, annotated disabled"]
    );
}

#[test]
fn untouched_documents_are_byte_for_byte_and_injected_ones_keep_their_order() {
    let input = read("tests/fixtures/manifests/workloads.yaml");
    let output = inject_manifest(&input, &config()).unwrap().yaml;
    // The comment header of the first (rewritten) document survives.
    assert!(output.starts_with(
        "# IRIS and its neighbours, as a GitOps repository would hold them.\n\
         # Only pods and pod templates change; everything else comes out byte for byte.\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: iris\n"
    ));
    for untouched in [
        "      targetPort: tollgate-https   # the sidecar's named port\n",
        "  readme: |\n    ---\n    not a document marker: it is indented\n\
         --- # a StatefulSet without annotations",
        "apiVersion: oauth.tollgate.dev/v1alpha1\nkind: Consumer\nmetadata:\n  name: clientapp\n  namespace: shop\nspec:\n  username: ClientApp\n",
    ] {
        assert!(
            output.contains(untouched),
            "{untouched:?} missing from:\n{output}"
        );
    }
}

#[test]
fn injecting_twice_changes_nothing() {
    let input = read("tests/fixtures/manifests/workloads.yaml");
    let once = inject_manifest(&input, &config()).unwrap();
    let twice = inject_manifest(&once.yaml, &config()).unwrap();
    assert_eq!(once.yaml, twice.yaml);
    assert!(
        twice
            .notes
            .iter()
            .any(|n| n == "Deployment shop/iris: not injected, already injected"),
        "{:#?}",
        twice.notes
    );
}

#[test]
fn a_bad_document_is_named() {
    let error = inject_manifest(
        &read("tests/fixtures/manifests/bad-annotation.yaml"),
        &config(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "document 2 (Deployment shop/iris): annotation tollgate.dev/proxy-cpu: \"lots\" \
         is not a CPU quantity such as 100m or 0.5"
    );
    let error = inject_manifest("kind: Service\n---\nkind: [unclosed\n", &config()).unwrap_err();
    assert!(
        error.to_string().starts_with("document 2: invalid YAML: "),
        "{error}"
    );
    let error = inject_manifest(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n",
        &config(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "document 1 (Deployment x): no spec.template to inject"
    );
}

#[test]
fn the_command_reads_the_file_and_names_it_in_errors() {
    let command = |file: PathBuf, extra: &[&str]| {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            inject: InjectCommand,
        }
        let file = file.to_str().unwrap().to_owned();
        let args = ["tollgate-inject", "-f", &file]
            .into_iter()
            .chain(extra.iter().copied());
        Cli::try_parse_from(args).unwrap().inject
    };
    let ok = run(&command(
        path("tests/fixtures/manifests/workloads.yaml"),
        &["--sidecar-image", "registry.example/tollgate:9"],
    ))
    .unwrap();
    assert!(ok.yaml.contains("image: registry.example/tollgate:9"));

    let missing = path("tests/fixtures/manifests/missing.yaml");
    let errors = run(&command(missing.clone(), &[])).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(&format!("{}: ", missing.display())),
        "{errors:?}"
    );

    let errors = run(&command(
        path("tests/fixtures/manifests/bad-annotation.yaml"),
        &["--sidecar-cpu", "x"],
    ))
    .unwrap_err();
    assert_eq!(errors.len(), 1, "flags are checked first: {errors:?}");
    assert!(errors[0].starts_with("--sidecar-cpu: "), "{errors:?}");
}

/// The README's IRIS Deployment is what `tollgate inject -f` and the webhook expect.
#[test]
fn the_example_iris_deployment_is_injected() {
    let file = path("../../deploy/examples/iris-deployment.yaml");
    let Ok(text) = std::fs::read_to_string(&file) else {
        panic!("{} is missing", file.display());
    };
    let injected = inject_manifest(&text, &config()).unwrap();
    let docs = documents(&injected.yaml);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let template = &deployment["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["app"], "iris");
    assert_eq!(
        template["metadata"]["annotations"]["tollgate.dev/inject"],
        "enabled"
    );
    assert_eq!(
        containers(template, "containers")
            .last()
            .map(String::as_str),
        Some("tollgate-sidecar")
    );
    // Its certificate comes from the controller's CA, for the names the pod declares.
    let names = template["metadata"]["annotations"]["tollgate.dev/tls-dns-names"]
        .as_str()
        .unwrap();
    assert!(tollgate_inject::parse_tls_dns_names(names).is_ok());
    let sidecar = template["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tollgate-sidecar")
        .unwrap();
    assert!(
        sidecar["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|a| a == "--tls-from-controller")
    );
}
