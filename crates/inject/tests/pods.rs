//! `decide`/`inject` on many pods: what the API server would store after applying the patch.
//! Pods are built with `mk_pod` and friends, patched the way the API server patches them
//! (json-patch on the pod's JSON), and read back as the user would see them.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};
use tollgate_inject::{
    ConfigMapKey, ControllerCa, Decision, InjectConfig, InjectError, RedisTlsSources,
    RedisUrlSource, Scope, SkipReason, decide, inject,
};

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

fn config() -> InjectConfig {
    InjectConfig::new("registry.example/tollgate:0.1.0")
}

/// A pod as `kubectl` would send it: one IRIS container, the given annotations.
fn mk_pod(ns: &str, name: &str, annotations: &[(&str, &str)]) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "iris"}},
        "spec": {
            "containers": [{
                "name": "iris",
                "image": "intersystemsdc/iris-community:latest",
                "ports": [{"containerPort": 52773, "name": "web"}, {"containerPort": 1972}],
            }],
        },
    });
    if !annotations.is_empty() {
        let map: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        pod["metadata"]["annotations"] = Value::Object(map);
    }
    pod
}

fn enabled(ns: &str, name: &str) -> Value {
    mk_pod(ns, name, &[("tollgate.dev/inject", "enabled")])
}

fn typed(pod: &Value) -> Pod {
    serde_json::from_value(pod.clone()).unwrap()
}

/// Applies the injection as the API server would; `None` when the pod is left alone.
fn injected(pod: &Value, config: &InjectConfig, scope: Scope) -> Option<Value> {
    match decide(&typed(pod), config, scope).unwrap() {
        Decision::Skip(_) => None,
        Decision::Inject { patch, .. } => {
            let mut after = pod.clone();
            json_patch::patch(&mut after, &patch.0).unwrap();
            Some(after)
        }
    }
}

fn inject_ok(pod: &Value) -> Value {
    injected(pod, &config(), Scope::PodAnnotation).expect("the pod is injected")
}

fn sidecar(pod: &Value) -> Container {
    let pod = typed(pod);
    let spec = pod.spec.unwrap();
    spec.containers
        .into_iter()
        .chain(spec.init_containers.unwrap_or_default())
        .find(|c| c.name == "tollgate-sidecar")
        .expect("a tollgate-sidecar container")
}

fn refusal(pod: &Value) -> String {
    decide(&typed(pod), &config(), Scope::PodAnnotation)
        .unwrap_err()
        .to_string()
}

#[test]
fn an_annotated_pod_gets_the_sidecar_the_issue_describes() {
    let after = inject_ok(&enabled("shop", "iris-0"));
    let containers = after["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["name"], "iris", "the application stays first");
    assert_eq!(
        after["metadata"]["labels"]["oauth.tollgate.dev/injected"],
        "true"
    );
    assert_eq!(after["metadata"]["labels"]["app"], "iris");

    let c = sidecar(&after);
    assert_eq!(c.image.as_deref(), Some("registry.example/tollgate:0.1.0"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    // The image's sidecar-only binary, not its entrypoint (the full `tollgate`).
    assert_eq!(
        c.command.as_deref(),
        Some(&["/usr/local/bin/tollgate-sidecar".to_owned()][..])
    );
    assert_eq!(
        c.args.unwrap(),
        [
            "sidecar",
            "--controller",
            "https://tollgate-controller.tollgate-system.svc:8090",
            "--controller-ca",
            "/var/run/tollgate/ca/ca.crt",
            "--token-file",
            "/var/run/secrets/tollgate/token",
            "--snapshot-cache",
            "/var/run/tollgate/cache/snapshot.json",
            "--metrics-listen",
            "0.0.0.0:9090",
            "--tls-from-controller",
        ]
    );
    assert_eq!(c.restart_policy, None);

    let env = serde_json::to_value(c.env.unwrap()).unwrap();
    assert_eq!(
        env,
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ])
    );

    let ports = serde_json::to_value(c.ports.unwrap()).unwrap();
    assert_eq!(
        ports[0],
        json!({"containerPort": 8443, "name": "tollgate-https", "protocol": "TCP"})
    );
    assert_eq!(ports[1]["containerPort"], 9090);

    let readiness = serde_json::to_value(c.readiness_probe.unwrap()).unwrap();
    assert_eq!(readiness["httpGet"]["path"], "/readyz");
    assert_eq!(readiness["httpGet"]["port"], 9090);

    let resources = serde_json::to_value(c.resources.unwrap()).unwrap();
    assert_eq!(
        resources,
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}})
    );

    let security = serde_json::to_value(c.security_context.unwrap()).unwrap();
    assert_eq!(
        security,
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsGroup": 65532,
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );

    let volumes = &after["spec"]["volumes"];
    assert_eq!(
        volumes[0],
        json!({"name": "tollgate-token", "projected": {"sources": [{"serviceAccountToken":
            {"audience": "tollgate", "expirationSeconds": 3600, "path": "token"}}]}})
    );
    // The controller's CA: an annotation the webhook fills in, projected as a file.
    assert_eq!(
        volumes[1],
        json!({"name": "tollgate-ca", "projected": {"sources": [{"downwardAPI": {"items": [{
            "path": "ca.crt",
            "fieldRef": {"fieldPath": "metadata.annotations['tollgate.dev/controller-ca']"}
        }]}}]}})
    );
    assert_eq!(
        after["metadata"]["annotations"]["tollgate.dev/controller-ca"],
        ""
    );
    assert_eq!(
        volumes[2],
        json!({"name": "tollgate-cache", "emptyDir": {"sizeLimit": "32Mi"}})
    );
    assert_eq!(
        volumes.as_array().unwrap().len(),
        3,
        "no TLS volume: the controller's CA signs the sidecar's own key"
    );
    let mounts: Vec<_> = c
        .volume_mounts
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.mount_path, m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            (
                "tollgate-token".into(),
                "/var/run/secrets/tollgate".into(),
                Some(true)
            ),
            (
                "tollgate-ca".into(),
                "/var/run/tollgate/ca".into(),
                Some(true)
            ),
            (
                "tollgate-cache".into(),
                "/var/run/tollgate/cache".into(),
                Some(false)
            ),
        ]
    );
}

#[test]
fn who_gets_a_sidecar() {
    let c = config();
    let plain = mk_pod("shop", "p", &[]);
    let disabled = mk_pod("shop", "p", &[("tollgate.dev/inject", "disabled")]);
    let on = enabled("shop", "p");
    let skip = |pod: &Value, scope| match decide(&typed(pod), &c, scope).unwrap() {
        Decision::Skip(reason) => Some(reason),
        Decision::Inject { .. } => None,
    };
    // Namespace not labelled: the pod's annotation decides.
    assert_eq!(
        skip(&plain, Scope::PodAnnotation),
        Some(SkipReason::NotRequested)
    );
    assert_eq!(
        skip(&disabled, Scope::PodAnnotation),
        Some(SkipReason::Disabled)
    );
    assert_eq!(skip(&on, Scope::PodAnnotation), None);
    // Namespace labelled enabled: every pod unless it says disabled.
    assert_eq!(skip(&plain, Scope::Namespace), None);
    assert_eq!(skip(&on, Scope::Namespace), None);
    assert_eq!(
        skip(&disabled, Scope::Namespace),
        Some(SkipReason::Disabled)
    );
    // `inject` is the annotation webhook's decision, an empty patch when skipped.
    assert!(inject(&typed(&plain), &c).unwrap().0.is_empty());
    assert!(!inject(&typed(&on), &c).unwrap().0.is_empty());
}

#[test]
fn injection_is_idempotent() {
    let once = inject_ok(&enabled("shop", "p"));
    for scope in [Scope::PodAnnotation, Scope::Namespace] {
        assert_eq!(
            decide(&typed(&once), &config(), scope).unwrap(),
            Decision::Skip(SkipReason::AlreadyInjected)
        );
    }
    // Also for a native sidecar, found among the init containers.
    let native = mk_pod(
        "shop",
        "p",
        &[
            ("tollgate.dev/inject", "enabled"),
            ("tollgate.dev/native-sidecar", "true"),
        ],
    );
    let once = inject_ok(&native);
    assert_eq!(
        decide(&typed(&once), &config(), Scope::PodAnnotation).unwrap(),
        Decision::Skip(SkipReason::AlreadyInjected)
    );
}

#[test]
fn an_already_injected_pod_is_left_alone_even_with_bad_annotations() {
    let mut pod = inject_ok(&enabled("shop", "p"));
    pod["metadata"]["annotations"]["tollgate.dev/proxy-cpu"] = json!("lots");
    assert_eq!(
        decide(&typed(&pod), &config(), Scope::PodAnnotation).unwrap(),
        Decision::Skip(SkipReason::AlreadyInjected)
    );
}

#[test]
fn host_network_pods_and_excluded_namespaces_are_skipped() {
    let mut pod = enabled("shop", "p");
    pod["spec"]["hostNetwork"] = json!(true);
    assert_eq!(
        decide(&typed(&pod), &config(), Scope::Namespace).unwrap(),
        Decision::Skip(SkipReason::HostNetwork)
    );
    for ns in ["kube-system", "kube-public", "kube-node-lease"] {
        assert_eq!(
            decide(&typed(&enabled(ns, "p")), &config(), Scope::Namespace).unwrap(),
            Decision::Skip(SkipReason::ExcludedNamespace(ns.into()))
        );
    }
    let mut c = config();
    c.excluded_namespaces.push("tollgate-system".into());
    assert_eq!(
        decide(
            &typed(&enabled("tollgate-system", "p")),
            &c,
            Scope::PodAnnotation
        )
        .unwrap(),
        Decision::Skip(SkipReason::ExcludedNamespace("tollgate-system".into()))
    );
}

#[test]
fn a_pod_that_did_not_ask_is_never_refused_for_its_annotations() {
    let pod = mk_pod("shop", "p", &[("tollgate.dev/proxy-cpu", "lots")]);
    assert_eq!(
        decide(&typed(&pod), &config(), Scope::PodAnnotation).unwrap(),
        Decision::Skip(SkipReason::NotRequested)
    );
}

#[test]
fn bad_annotation_values_are_refused_naming_the_annotation() {
    let cases = [
        (
            "tollgate.dev/inject",
            "yes",
            "must be \"enabled\" or \"disabled\"",
        ),
        (
            "tollgate.dev/native-sidecar",
            "yes",
            "must be \"true\" or \"false\"",
        ),
        ("tollgate.dev/proxy-cpu", "lots", "such as 100m"),
        ("tollgate.dev/proxy-cpu-limit", "-1", "such as 100m"),
        ("tollgate.dev/proxy-memory", "64m", "Mi, not m"),
        ("tollgate.dev/proxy-memory-limit", "1 Gi", "such as 64Mi"),
        (
            "tollgate.dev/tls-secret",
            "My_Secret",
            "is not a Secret name",
        ),
        (
            "tollgate.dev/tls-dns-names",
            "iris.shop.svc,*.shop.svc",
            "`*.shop.svc` is not a DNS name",
        ),
        ("tollgate.dev/upstream-port", "http", "1 to 65535"),
        ("tollgate.dev/upstream-port", "70000", "1 to 65535"),
        (
            "tollgate.dev/upstream-port",
            "8443",
            "sidecar's own proxy port",
        ),
        (
            "tollgate.dev/upstream-port",
            "9090",
            "sidecar's own metrics",
        ),
    ];
    for (annotation, value, expected) in cases {
        let mut annotations = vec![(annotation, value)];
        if annotation != "tollgate.dev/inject" {
            annotations.push(("tollgate.dev/inject", "enabled"));
        }
        let message = refusal(&mk_pod("shop", "p", &annotations));
        assert!(
            message.starts_with(&format!("annotation {annotation}: \"{value}\" ")),
            "{message}"
        );
        assert!(
            message.contains(expected),
            "{annotation}={value}: {message}"
        );
    }
}

#[test]
fn resources_follow_the_annotations() {
    let resources = |annotations: &[(&str, &str)]| {
        let mut all = vec![("tollgate.dev/inject", "enabled")];
        all.extend_from_slice(annotations);
        let c = sidecar(&inject_ok(&mk_pod("shop", "p", &all)));
        serde_json::to_value(c.resources.unwrap()).unwrap()
    };
    assert_eq!(
        resources(&[
            ("tollgate.dev/proxy-cpu", "200m"),
            ("tollgate.dev/proxy-memory", "96Mi")
        ]),
        json!({"requests": {"cpu": "200m", "memory": "96Mi"}, "limits": {"memory": "128Mi"}})
    );
    // A request above the default limit takes the limit up with it.
    assert_eq!(
        resources(&[("tollgate.dev/proxy-memory", "256Mi")]),
        json!({"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}})
    );
    // Limits as asked.
    assert_eq!(
        resources(&[
            ("tollgate.dev/proxy-cpu-limit", "1"),
            ("tollgate.dev/proxy-memory-limit", "1Gi")
        ]),
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
    );
    // Only a limit below the default request: the request follows it down.
    assert_eq!(
        resources(&[("tollgate.dev/proxy-memory-limit", "32Mi")]),
        json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "32Mi"}})
    );
    // A limit below an annotated request is a contradiction.
    let message = refusal(&mk_pod(
        "shop",
        "p",
        &[
            ("tollgate.dev/inject", "enabled"),
            ("tollgate.dev/proxy-cpu", "500m"),
            ("tollgate.dev/proxy-cpu-limit", "100m"),
        ],
    ));
    assert_eq!(
        message,
        "annotation tollgate.dev/proxy-cpu-limit: \"100m\" is below the request \
         tollgate.dev/proxy-cpu (500m)"
    );
}

#[test]
fn a_tls_secret_is_mounted_and_served() {
    let pod = mk_pod(
        "shop",
        "p",
        &[
            ("tollgate.dev/inject", "enabled"),
            ("tollgate.dev/tls-secret", "iris-tls"),
        ],
    );
    let after = inject_ok(&pod);
    let c = sidecar(&after);
    let args = c.args.unwrap();
    assert_eq!(
        args[args.len() - 4..],
        [
            "--tls-cert",
            "/var/run/tollgate/tls/tls.crt",
            "--tls-key",
            "/var/run/tollgate/tls/tls.key"
        ]
    );
    assert!(after["spec"]["volumes"].as_array().unwrap().contains(
        &json!({"name": "tollgate-tls", "secret": {"secretName": "iris-tls", "optional": false}})
    ));
    assert!(
        c.volume_mounts
            .unwrap()
            .iter()
            .any(|m| m.name == "tollgate-tls"
                && m.mount_path == "/var/run/tollgate/tls"
                && m.read_only == Some(true))
    );
}

#[test]
fn native_sidecars_go_first_among_init_containers() {
    let mut pod = mk_pod(
        "shop",
        "p",
        &[
            ("tollgate.dev/inject", "enabled"),
            ("tollgate.dev/native-sidecar", "true"),
        ],
    );
    let after = inject_ok(&pod);
    assert_eq!(after["spec"]["containers"].as_array().unwrap().len(), 1);
    assert_eq!(
        after["spec"]["initContainers"][0]["name"],
        "tollgate-sidecar"
    );
    assert_eq!(
        after["spec"]["initContainers"][0]["restartPolicy"],
        "Always"
    );

    pod["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]);
    let after = inject_ok(&pod);
    let names: Vec<_> = after["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tollgate-sidecar", "setup"]);

    // The config's default, overridden per pod.
    let mut c = config();
    c.native_sidecar = true;
    let after = injected(&enabled("shop", "p"), &c, Scope::PodAnnotation).unwrap();
    assert_eq!(
        after["spec"]["initContainers"][0]["name"],
        "tollgate-sidecar"
    );
    let opt_out = mk_pod(
        "shop",
        "p",
        &[
            ("tollgate.dev/inject", "enabled"),
            ("tollgate.dev/native-sidecar", "false"),
        ],
    );
    let after = injected(&opt_out, &c, Scope::PodAnnotation).unwrap();
    assert!(after["spec"].get("initContainers").is_none());
}

#[test]
fn the_controller_ca_travels_in_an_annotation() {
    let c = config().with_controller_ca_pem(CA_PEM);
    let after = injected(&enabled("shop", "p"), &c, Scope::PodAnnotation).unwrap();
    assert_eq!(
        after["metadata"]["annotations"]["tollgate.dev/controller-ca"],
        CA_PEM
    );
    assert_eq!(
        after["spec"]["volumes"][1],
        json!({"name": "tollgate-ca", "projected": {"sources": [{"downwardAPI": {"items": [{
            "path": "ca.crt",
            "fieldRef": {"fieldPath": "metadata.annotations['tollgate.dev/controller-ca']"}
        }]}}]}})
    );
    // A pod with no annotations at all gets the map created.
    let after = injected(&mk_pod("shop", "p", &[]), &c, Scope::Namespace).unwrap();
    assert_eq!(
        after["metadata"]["annotations"]["tollgate.dev/controller-ca"],
        CA_PEM
    );
    assert!(matches!(c.controller_ca, ControllerCa::Pem(_)));
}

#[test]
fn a_pod_injected_ahead_of_time_gets_the_webhook_s_ca_and_nothing_else() {
    // `tollgate inject -f` without a CA file: the annotation is left empty...
    let ahead = inject_ok(&enabled("shop", "p"));
    assert_eq!(
        ahead["metadata"]["annotations"]["tollgate.dev/controller-ca"],
        ""
    );
    // ...and the webhook fills it in, touching nothing else.
    let webhook = config().with_controller_ca_pem(CA_PEM);
    let Decision::Inject { patch, warnings } =
        decide(&typed(&ahead), &webhook, Scope::PodAnnotation).unwrap()
    else {
        panic!("the CA is filled in")
    };
    assert!(warnings.is_empty());
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([{"op": "add", "path": "/metadata/annotations/tollgate.dev~1controller-ca", "value": CA_PEM}])
    );
    let mut filled = ahead.clone();
    json_patch::patch(&mut filled, &patch.0).unwrap();
    assert_eq!(
        decide(&typed(&filled), &webhook, Scope::PodAnnotation).unwrap(),
        Decision::Skip(SkipReason::AlreadyInjected)
    );
    // A webhook without a CA of its own has nothing to fill it with.
    assert_eq!(
        decide(&typed(&ahead), &config(), Scope::Namespace).unwrap(),
        Decision::Skip(SkipReason::AlreadyInjected)
    );
}

#[test]
fn the_ca_can_come_from_a_config_map_instead() {
    let mut c = config();
    c.controller_ca = ControllerCa::ConfigMap("trust-bundle".into());
    let after = injected(&enabled("shop", "p"), &c, Scope::PodAnnotation).unwrap();
    assert_eq!(
        after["spec"]["volumes"][1],
        json!({"name": "tollgate-ca", "projected": {"sources": [{"configMap":
            {"name": "trust-bundle", "items": [{"key": "ca.crt", "path": "ca.crt"}], "optional": false}}]}})
    );
    assert!(
        after["metadata"]["annotations"]
            .get("tollgate.dev/controller-ca")
            .is_none()
    );
    // The controller's own CA does not override a choice made by flags.
    let c = c.with_default_controller_ca_pem(CA_PEM);
    assert_eq!(
        c.controller_ca,
        ControllerCa::ConfigMap("trust-bundle".into())
    );
    let c = config().with_default_controller_ca_pem(CA_PEM);
    assert_eq!(c.controller_ca, ControllerCa::Pem(CA_PEM.into()));
}

#[test]
fn redis_url_comes_from_a_secret_or_a_plain_url() {
    let mut c = config();
    c.redis = Some(RedisUrlSource::Secret {
        name: "tollgate-redis".into(),
        key: "url".into(),
    });
    let after = injected(&enabled("shop", "p"), &c, Scope::PodAnnotation).unwrap();
    let env = serde_json::to_value(sidecar(&after).env.unwrap()).unwrap();
    assert_eq!(
        env[2],
        json!({"name": "TOLLGATE_REDIS_URL", "valueFrom": {"secretKeyRef":
            {"name": "tollgate-redis", "key": "url", "optional": false}}})
    );
    c.redis = Some(RedisUrlSource::Url(
        "redis://tollgate-redis.tollgate-system.svc:6379".into(),
    ));
    let after = injected(&enabled("shop", "p"), &c, Scope::PodAnnotation).unwrap();
    let env = serde_json::to_value(sidecar(&after).env.unwrap()).unwrap();
    assert_eq!(
        env[2],
        json!({"name": "TOLLGATE_REDIS_URL", "value": "redis://tollgate-redis.tollgate-system.svc:6379"})
    );
}

/// The flags after `--redis-ca`, if any, and the Redis TLS volume, if any.
fn redis_tls_of(after: &Value) -> (Vec<String>, Option<Value>) {
    let args = sidecar(after).args.unwrap();
    let from = args
        .iter()
        .position(|a| a.starts_with("--redis-"))
        .unwrap_or(args.len());
    let volume = after["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tollgate-redis-tls")
        .cloned();
    (args[from..].to_vec(), volume)
}

#[test]
fn redis_tls_files_come_from_the_pod_s_namespace_when_configured() {
    // Not configured: nothing of Redis TLS in the pod, whatever the Redis URL.
    let mut c = config();
    c.redis = Some(RedisUrlSource::Url("rediss://redis:6380".into()));
    let after = injected(&enabled("shop", "p"), &c, Scope::PodAnnotation).unwrap();
    assert_eq!(redis_tls_of(&after), (vec![], None));
    assert!(
        !sidecar(&after)
            .volume_mounts
            .unwrap()
            .iter()
            .any(|m| m.name == "tollgate-redis-tls")
    );

    // The CA alone: a ConfigMap's key, as ca.crt.
    c.redis_tls = RedisTlsSources {
        ca: Some(ConfigMapKey {
            name: "tollgate-ca.crt".into(),
            key: "redis-ca.crt".into(),
        }),
        client_secret: None,
    };
    let after = injected(&enabled("shop", "p"), &c, Scope::PodAnnotation).unwrap();
    let (args, volume) = redis_tls_of(&after);
    assert_eq!(args, ["--redis-ca", "/var/run/tollgate/redis-tls/ca.crt"]);
    assert_eq!(
        volume.unwrap(),
        json!({"name": "tollgate-redis-tls", "projected": {"sources": [
            {"configMap": {"name": "tollgate-ca.crt", "optional": false,
                           "items": [{"key": "redis-ca.crt", "path": "ca.crt"}]}}]}})
    );

    // And the client certificate: a kubernetes.io/tls Secret's two keys, beside the CA.
    c.redis_tls.client_secret = Some("redis-client".into());
    let after = injected(&enabled("shop", "p"), &c, Scope::PodAnnotation).unwrap();
    let (args, volume) = redis_tls_of(&after);
    assert_eq!(
        args,
        [
            "--redis-ca",
            "/var/run/tollgate/redis-tls/ca.crt",
            "--redis-client-cert",
            "/var/run/tollgate/redis-tls/tls.crt",
            "--redis-client-key",
            "/var/run/tollgate/redis-tls/tls.key",
        ]
    );
    assert_eq!(
        volume.unwrap()["projected"]["sources"][1],
        json!({"secret": {"name": "redis-client", "optional": false, "items": [
            {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}})
    );
    let mounts = sidecar(&after).volume_mounts.unwrap();
    let mount = mounts
        .iter()
        .find(|m| m.name == "tollgate-redis-tls")
        .unwrap();
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/var/run/tollgate/redis-tls", Some(true))
    );
    // Only the sidecar mounts the client key: the application's container does not.
    let iris = &after["spec"]["containers"][0];
    assert_eq!(iris["name"], "iris");
    assert!(iris.get("volumeMounts").is_none(), "{iris}");

    // A pod with a volume of that name is refused rather than given someone else's files.
    let mut pod = enabled("shop", "p");
    pod["spec"]["volumes"] = json!([{"name": "tollgate-redis-tls", "emptyDir": {}}]);
    let refused = decide(&typed(&pod), &c, Scope::PodAnnotation).unwrap_err();
    assert!(
        refused.to_string().contains("tollgate-redis-tls"),
        "{refused}"
    );
}

#[test]
fn the_controller_s_published_redis_ca_is_the_default_for_sidecars_using_redis() {
    let published = ConfigMapKey {
        name: "tollgate-ca.crt".into(),
        key: "redis-ca.crt".into(),
    };
    // No Redis: no CA, which a sidecar would refuse without a rediss:// URL.
    let c = config().with_default_redis_ca(published.clone());
    assert_eq!(c.redis_tls.ca, None);
    let mut c = config();
    c.redis = Some(RedisUrlSource::Secret {
        name: "tollgate-redis".into(),
        key: "url".into(),
    });
    let with_redis = c.clone().with_default_redis_ca(published.clone());
    assert_eq!(with_redis.redis_tls.ca, Some(published.clone()));
    let after = injected(&enabled("shop", "p"), &with_redis, Scope::PodAnnotation).unwrap();
    assert_eq!(
        redis_tls_of(&after).0,
        ["--redis-ca", "/var/run/tollgate/redis-tls/ca.crt"]
    );
    // A ConfigMap the flags named wins.
    c.redis_tls.ca = Some(ConfigMapKey {
        name: "trust-bundle".into(),
        key: "ca.crt".into(),
    });
    let chosen = c.clone().with_default_redis_ca(published);
    assert_eq!(chosen.redis_tls.ca, c.redis_tls.ca);
}

#[test]
fn sidecar_env_reaches_the_container_after_the_injector_s_own() {
    let mut c = config();
    c.sidecar_env = vec![
        ("TOLLGATE_MAX_CONNECTIONS".into(), "5000".into()),
        ("TOLLGATE_CLIENT_IDLE_TIMEOUT".into(), "30".into()),
    ];
    let after = injected(&enabled("shop", "p"), &c, Scope::PodAnnotation).unwrap();
    let env = serde_json::to_value(sidecar(&after).env.unwrap()).unwrap();
    let names: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "TOLLGATE_MAX_CONNECTIONS",
            "TOLLGATE_CLIENT_IDLE_TIMEOUT"
        ]
    );
    assert_eq!(
        env[2],
        json!({"name": "TOLLGATE_MAX_CONNECTIONS", "value": "5000"})
    );
}

#[test]
fn conflicts_are_refused() {
    let mut pod = enabled("shop", "p");
    pod["spec"]["volumes"] = json!([{"name": "tollgate-cache", "emptyDir": {}}]);
    assert_eq!(
        refusal(&pod),
        "the pod already has a volume named \"tollgate-cache\", a name the tollgate sidecar needs"
    );
    let mut pod = enabled("shop", "p");
    pod["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8443}]);
    assert_eq!(
        refusal(&pod),
        "container \"iris\" declares port 8443, the tollgate sidecar's proxy port"
    );
    let no_spec =
        json!({"metadata": {"name": "p", "annotations": {"tollgate.dev/inject": "enabled"}}});
    assert_eq!(
        decide(&typed(&no_spec), &config(), Scope::PodAnnotation),
        Err(InjectError::NoSpec)
    );
    // Found by the admission_review fuzz target: a null list once gave a patch that failed
    // to apply, instead of a reason.
    let mut no_containers = enabled("shop", "p");
    no_containers["spec"]["containers"] = Value::Null;
    assert_eq!(refusal(&no_containers), "the pod has no containers");
}

#[test]
fn warnings_for_pods_that_would_never_complete_and_for_typos() {
    let mut pod = mk_pod(
        "shop",
        "job-x",
        &[
            ("tollgate.dev/inject", "enabled"),
            ("tollgate.dev/proxy-cpus", "1"),
        ],
    );
    pod["spec"]["restartPolicy"] = json!("Never");
    let Decision::Inject { warnings, .. } =
        decide(&typed(&pod), &config(), Scope::PodAnnotation).unwrap()
    else {
        panic!("injected")
    };
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings[0].contains("unknown annotation tollgate.dev/proxy-cpus"));
    assert!(warnings[1].contains("restartPolicy Never"));
    assert!(warnings[1].contains("tollgate.dev/native-sidecar"));
}

#[test]
fn the_patch_only_adds_and_escapes_label_keys() {
    let patch = inject(&typed(&enabled("shop", "p")), &config()).unwrap();
    let patch = serde_json::to_value(&patch).unwrap();
    for op in patch.as_array().unwrap() {
        assert_eq!(op["op"], "add", "{op}");
    }
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/metadata/labels/oauth.tollgate.dev~1injected"),
        "{patch:#}"
    );
}

/// Pods of many shapes: each comes out with exactly one sidecar, every original field
/// (including ones this crate's types do not know) intact, and every mount backed by a volume.
#[test]
fn many_pods_keep_what_they_had() {
    let shapes = [
        // No labels, no annotations map beyond the request, no volumes.
        json!({"metadata": {"generateName": "iris-7d9c-", "namespace": "shop",
               "annotations": {"tollgate.dev/inject": "enabled"}},
               "spec": {"containers": [{"name": "iris", "image": "iris"}]}}),
        // A StatefulSet-style IRIS pod: init containers, volumes, pod security context,
        // tolerations, several containers, and fields from a newer Kubernetes.
        json!({"metadata": {"name": "iris-0", "namespace": "shop",
         "labels": {"app": "iris", "statefulset.kubernetes.io/pod-name": "iris-0"},
         "annotations": {"tollgate.dev/inject": "enabled", "kubectl.kubernetes.io/default-container": "iris"},
         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "iris", "uid": "u1", "controller": true}]},
        "spec": {
          "securityContext": {"fsGroup": 51773, "runAsUser": 51773},
          "initContainers": [{"name": "chown", "image": "busybox", "command": ["true"]}],
          "containers": [
            {"name": "iris", "image": "iris", "volumeMounts": [{"name": "data", "mountPath": "/durable"}]},
            {"name": "webgateway", "image": "webgateway", "ports": [{"containerPort": 80}]}
          ],
          "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-iris-0"}},
                      {"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
          "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "iris", "effect": "NoSchedule"}],
          "resourceClaimsFromTheFuture": [{"name": "x"}]
        }}),
        // Namespace-enabled with a TLS secret and native mode.
        json!({"metadata": {"name": "p", "namespace": "shop", "labels": {},
                "annotations": {"tollgate.dev/tls-secret": "iris-tls", "tollgate.dev/native-sidecar": "true"}},
               "spec": {"initContainers": [], "containers": [{"name": "iris", "image": "iris"}], "volumes": []}}),
        // Upstream port annotated, resources annotated, restartPolicy OnFailure.
        json!({"metadata": {"name": "p", "namespace": "shop",
                "annotations": {"tollgate.dev/inject": "enabled", "tollgate.dev/upstream-port": "8080",
                                "tollgate.dev/proxy-cpu": "0.1", "tollgate.dev/proxy-memory": "100M"}},
               "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "app", "image": "app"}]}}),
    ];
    let config = config().with_controller_ca_pem(CA_PEM);
    for (index, pod) in shapes.iter().enumerate() {
        let after = injected(pod, &config, Scope::Namespace)
            .unwrap_or_else(|| panic!("shape {index} was not injected"));
        let spec = &after["spec"];
        let all: Vec<&Value> = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(spec["initContainers"].as_array().into_iter().flatten())
            .collect();
        let sidecars = all
            .iter()
            .filter(|c| c["name"] == "tollgate-sidecar")
            .count();
        assert_eq!(sidecars, 1, "shape {index}");

        // Everything that was there is still there, unchanged.
        let before = &pod["spec"];
        for (key, value) in before.as_object().unwrap() {
            if !["containers", "initContainers", "volumes"].contains(&key.as_str()) {
                assert_eq!(&spec[key], value, "shape {index}: spec.{key}");
            }
        }
        for container in before["containers"].as_array().unwrap() {
            assert!(
                spec["containers"].as_array().unwrap().contains(container),
                "shape {index}"
            );
        }
        for volume in before["volumes"].as_array().into_iter().flatten() {
            assert!(
                spec["volumes"].as_array().unwrap().contains(volume),
                "shape {index}"
            );
        }
        for (key, value) in pod["metadata"].as_object().unwrap() {
            if key == "labels" || key == "annotations" {
                for (k, v) in value.as_object().unwrap() {
                    assert_eq!(&after["metadata"][key][k], v, "shape {index}: {key} {k}");
                }
            } else {
                assert_eq!(
                    &after["metadata"][key], value,
                    "shape {index}: metadata.{key}"
                );
            }
        }
        assert_eq!(
            after["metadata"]["labels"]["oauth.tollgate.dev/injected"],
            "true"
        );

        // Every mount of the sidecar is backed by exactly one volume.
        let volumes: Vec<&str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        let unique: BTreeSet<_> = volumes.iter().collect();
        assert_eq!(unique.len(), volumes.len(), "shape {index}: {volumes:?}");
        for mount in sidecar(&after).volume_mounts.unwrap() {
            assert!(
                volumes.contains(&mount.name.as_str()),
                "shape {index}: {}",
                mount.name
            );
        }
        // And the result is still a valid Pod for the API's types.
        let _: Pod = typed(&after);
    }
}

/// The controller serves the admin API behind RBAC; an injected sidecar serves none, so the
/// pod's other containers cannot list, revoke or mint tokens through it.
#[test]
fn the_injected_sidecar_is_never_given_an_admin_api() {
    let mut config = config();
    config.redis = Some(RedisUrlSource::Url("redis://redis:6379".to_owned()));
    for annotations in [
        &[("tollgate.dev/inject", "enabled")][..],
        &[
            ("tollgate.dev/inject", "enabled"),
            ("tollgate.dev/tls-secret", "iris-tls"),
        ],
    ] {
        let pod = injected(
            &mk_pod("default", "iris-0", annotations),
            &config,
            Scope::PodAnnotation,
        )
        .unwrap();
        let sidecar = sidecar(&pod);
        let args = sidecar.args.unwrap_or_default();
        assert!(args.iter().all(|a| !a.contains("admin")), "{args:?}");
        let env = sidecar.env.unwrap_or_default();
        assert!(env.iter().all(|e| !e.name.contains("ADMIN")), "{env:?}");
        let ports: Vec<i32> = sidecar
            .ports
            .unwrap_or_default()
            .iter()
            .map(|p| p.container_port)
            .collect();
        assert!(!ports.contains(&8444), "{ports:?}");
    }
}

/// The sidecar's securityContext comes from the configuration (the chart's
/// `injection.securityContext`); OpenShift assigns UIDs, so `runAsUser` may be left out.
#[test]
fn the_sidecar_security_context_is_the_configured_one() {
    let sidecar_of = |config: &InjectConfig| {
        let pod = typed(&enabled("shop", "p"));
        let patch = inject(&pod, config).unwrap();
        let mut pod = enabled("shop", "p");
        json_patch::patch(&mut pod, &patch.0).unwrap();
        pod["spec"]["containers"][1]["securityContext"].clone()
    };
    let default = sidecar_of(&config());
    assert_eq!(default["runAsUser"], 65532);
    assert_eq!(default["readOnlyRootFilesystem"], true);

    let args = |json: &str| {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            inject: tollgate_inject::InjectArgs,
        }
        Cli::try_parse_from(["t", "--sidecar-security-context", json])
            .unwrap()
            .inject
            .to_config()
    };
    let openshift = args(
        r#"{"runAsNonRoot": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}"#,
    )
    .unwrap();
    assert_eq!(
        sidecar_of(&openshift),
        json!({"runAsNonRoot": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    );
    // A typo would silently drop a setting: refused, naming the flag and the field.
    let errors = args(r#"{"runAsNonroot": true}"#).unwrap_err();
    assert_eq!(
        errors,
        ["--sidecar-security-context: unknown field(s) runAsNonroot of a SecurityContext"]
    );
    assert!(
        args("runAsUser: 1").unwrap_err()[0].starts_with("--sidecar-security-context: not JSON")
    );
}
