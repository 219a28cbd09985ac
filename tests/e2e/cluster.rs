//! Cluster tests, as kube-rs projects write them: marked `#[ignore]`, run by
//! `make e2e-cluster` against whatever cluster `KUBECONFIG` names (Kubernetes 1.28 or later,
//! RBAC on, `kubectl` on the PATH, a user allowed to install CRDs and create namespaces).
//!
//! They must pass against a bare kube-apiserver with no kubelet, scheduler, kube-proxy or
//! controller-manager: pods stay Pending, Services route nowhere, and nothing creates
//! ServiceAccounts or finishes deleting namespaces. So each test creates what it uses in a
//! fresh namespace, runs `tollgate controller` and sidecars as local processes (the
//! controller with the kubeconfig; each sidecar with a pod-bound token made by
//! `kubectl create token`), and leaves the namespace to be deleted.
//!
//! The cluster tests run one at a time (`--test-threads=1`): each starts a controller that
//! watches every namespace, and two controllers would both write status.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    Certs, EVENT_1, PodSidecarBuilder, RedisServer, Upstream, eventually, free_ports, tollgate,
};

/// Status and snapshots follow a change within this long; the API server and watches of a
/// shared cluster can be slow, and this is only ever a ceiling.
const SETTLE: Duration = Duration::from_secs(60);

// --- kubectl ---

fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new("kubectl");
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .expect("kubectl is not on the PATH (make e2e-cluster needs it)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs kubectl and returns its stdout; panics with its stderr when it fails.
fn kubectl_ok(args: &[&str]) -> String {
    let output = kubectl(args, None);
    assert!(
        output.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `kubectl apply -n NS -f -` of `yaml`: its output (success or refusal).
fn apply(namespace: &str, yaml: &str) -> Output {
    kubectl(&["apply", "-n", namespace, "-f", "-"], Some(yaml))
}

fn apply_ok(namespace: &str, yaml: &str) {
    let output = apply(namespace, yaml);
    assert!(
        output.status.success(),
        "kubectl apply refused:\n{yaml}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One field of one object, by JSONPath; empty when absent.
fn field(namespace: &str, object: &str, path: &str) -> String {
    let output = kubectl(
        &[
            "get",
            "-n",
            namespace,
            object,
            "-o",
            &format!("jsonpath={{{path}}}"),
        ],
        None,
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn ready_condition(namespace: &str, object: &str, what: &str) -> String {
    field(
        namespace,
        object,
        &format!(".status.conditions[?(@.type==\"Ready\")].{what}"),
    )
}

/// The CRDs of `crds/`, installed once per test run and established.
fn install_crds() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/tollgate.yaml");
        kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crds.to_str().unwrap(),
        ]);
        for crd in [
            "oauthservices.oauth.tollgate.dev",
            "consumers.oauth.tollgate.dev",
            "oauthapplications.oauth.tollgate.dev",
        ] {
            kubectl_ok(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{crd}"),
            ]);
        }
    });
}

/// A fresh namespace, deleted (without waiting: a bare API server never finishes) at the end.
struct Namespace(String);

impl Namespace {
    fn new() -> Self {
        install_crds();
        let name = format!(
            "tollgate-e2e-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        kubectl_ok(&["create", "namespace", &name]);
        Self(name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"], None);
    }
}

// --- the controller against the cluster ---

struct KubeController {
    child: Child,
    stream: u16,
    admin: u16,
    ca: PathBuf,
    client: reqwest::Client,
    log: PathBuf,
}

impl KubeController {
    /// `tollgate controller` with the kubeconfig, its Lease in `namespace`.
    async fn start(dir: &Path, namespace: &str, redis_url: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let [stream, admin, metrics] = free_ports::<3>();
        let ca = dir.join("controller-ca.pem");
        let log = dir.join("controller.log");
        let child = tollgate()
            .arg("controller")
            .args(["--stream-listen", &format!("127.0.0.1:{stream}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--tls-san", "localhost,127.0.0.1"])
            .arg("--ca-out")
            .arg(&ca)
            .args(["--namespace", namespace])
            .args(["--lease-name", &format!("tollgate-e2e-{namespace}")])
            .args(["--identity", "e2e"])
            .args(["--redis-url", redis_url])
            .env_remove("TOLLGATE_MANIFESTS")
            .env("TOLLGATE_LOG", "info,tollgate_controller=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn tollgate controller");
        let mut controller = Self {
            child,
            stream,
            admin,
            ca: ca.clone(),
            client: reqwest::Client::new(),
            log,
        };
        let plain = reqwest::Client::new();
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Ok(Some(status)) = controller.child.try_wait() {
                panic!(
                    "the controller exited with {status}:\n{}",
                    controller.logs()
                );
            }
            if let Ok(r) = plain
                .get(format!("http://127.0.0.1:{metrics}/readyz"))
                .send()
                .await
                && r.status() == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "controller not ready:\n{}",
                controller.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pem = std::fs::read_to_string(&ca).unwrap();
        controller.client = Certs {
            cert: ca.clone(),
            key: ca,
            pem,
        }
        .client();
        controller
    }

    fn stream_url(&self) -> String {
        format!("https://localhost:{}", self.stream)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.admin)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for KubeController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "--- controller log ---\n{}", self.logs());
        }
    }
}

// --- manifests ---

/// The article's objects, with the Secrets labelled for the controller, a broken
/// application whose Secret is missing, the ServiceAccount of the IRIS pods and two pods.
fn article(upstream_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: iris}}
---
apiVersion: v1
kind: Secret
metadata:
  name: sampleirisservice-provision-key
  labels: {{oauth.tollgate.dev/watch: "true"}}
stringData: {{provisionKey: provisionkey}}
---
apiVersion: v1
kind: Secret
metadata:
  name: sampleapp-secret
  labels: {{oauth.tollgate.dev/watch: "true"}}
stringData: {{clientSecret: clientsecret}}
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthService
metadata: {{name: sampleirisservice}}
spec:
  podSelector: {{matchLabels: {{app: iris}}}}
  upstream: {{port: {upstream_port}}}
  routes: [{{pathPrefix: /event, stripPath: false}}]
  oauth2:
    enablePasswordGrant: true
    provisionKeySecretRef: {{name: sampleirisservice-provision-key}}
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata: {{name: clientapp}}
spec: {{username: ClientApp}}
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata: {{name: sampleapp}}
spec:
  consumerRef: {{name: clientapp}}
  clientId: clientid
  clientSecretRef: {{name: sampleapp-secret}}
  redirectUris: [https://localhost/callback]
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata: {{name: brokenapp}}
spec:
  consumerRef: {{name: clientapp}}
  clientId: brokenid
  clientSecretRef: {{name: missing-secret}}
---
apiVersion: v1
kind: Pod
metadata:
  name: iris-0
  labels: {{app: iris, oauth.tollgate.dev/injected: "true"}}
spec:
  serviceAccountName: iris
  containers: [{{name: iris, image: intersystemsdc/iris-community}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: iris-1
  labels: {{app: iris, oauth.tollgate.dev/injected: "true"}}
spec:
  serviceAccountName: iris
  containers: [{{name: iris, image: intersystemsdc/iris-community}}]
"#
    )
}

/// A token of ServiceAccount `iris` bound to `pod`, for the audience `tollgate`, as the
/// injected sidecar's projected volume holds.
fn pod_token(namespace: &str, pod: &str) -> String {
    let uid = field(namespace, &format!("pod/{pod}"), ".metadata.uid");
    assert!(!uid.is_empty(), "pod {pod} has no uid");
    kubectl_ok(&[
        "create",
        "token",
        "iris",
        "-n",
        namespace,
        "--audience",
        "tollgate",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        pod,
        "--bound-object-uid",
        &uid,
        "--duration",
        "1h",
    ])
    .trim()
    .to_owned()
}

// --- the tests ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn bad_manifests_are_refused_with_messages_a_person_understands() {
    let ns = Namespace::new();
    let service = |oauth2: &str| {
        format!(
            "apiVersion: oauth.tollgate.dev/v1alpha1\nkind: OAuthService\nmetadata: {{name: s}}\n\
             spec:\n  upstream: {{port: 52773}}\n  routes: [{{pathPrefix: /event}}]\n\
             \x20 oauth2:\n    provisionKeySecretRef: {{name: pk}}\n{oauth2}\n"
        )
    };
    let app = |spec: &str| {
        format!(
            "apiVersion: oauth.tollgate.dev/v1alpha1\nkind: OAuthApplication\nmetadata: {{name: a}}\n\
             spec:\n  consumerRef: {{name: c}}\n  clientId: id\n{spec}\n"
        )
    };
    let cases = [
        (service(""), "no grant is enabled"),
        (
            service("    enablePasswordGrant: true\n    pkce: sometimes"),
            "Unsupported value: \"sometimes\"",
        ),
        (
            service("    enablePasswordGrant: true\n    mandatoryScope: true"),
            "mandatoryScope requires a non-empty scopes list",
        ),
        (
            service("    enablePasswordGrant: true").replace("port: 52773", "port: 0"),
            "spec.upstream.port",
        ),
        (
            service("    enablePasswordGrant: true").replace("[{pathPrefix: /event}]", "[]"),
            "spec.routes",
        ),
        (app(""), "a confidential application needs clientSecretRef"),
        (
            app("  clientType: public\n  clientSecretRef: {name: s}"),
            "a public application has no client secret",
        ),
        (
            app(
                "  clientSecretRef: {name: s}\n  redirectUris: ['https://app.example.com/cb#frag']",
            ),
            "every redirect URI must be an absolute URL",
        ),
    ];
    for (yaml, message) in cases {
        let output = apply(&ns.0, &yaml);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted:\n{yaml}");
        assert!(
            stderr.contains(message),
            "refusal of\n{yaml}\nsays:\n{stderr}\nnot: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn the_controller_writes_status_and_feeds_pod_bound_sidecars() {
    let ns = Namespace::new();
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    apply_ok(&ns.0, &article(upstream.port));
    let controller = KubeController::start(work.path(), &ns.0, &redis.url()).await;

    // Status: good objects are ready; the broken one says which Secret is missing, and
    // where the controller looks for Secrets.
    let ns_name = ns.0.clone();
    for object in [
        "oauthservice/sampleirisservice",
        "consumer/clientapp",
        "oauthapplication/sampleapp",
    ] {
        eventually(SETTLE, &format!("{object} is ready"), || {
            let ready = ready_condition(&ns_name, object, "status");
            async move { ready == "True" }
        })
        .await;
    }
    eventually(SETTLE, "brokenapp says SecretNotFound", || {
        let reason = ready_condition(&ns_name, "oauthapplication/brokenapp", "reason");
        async move { reason == "SecretNotFound" }
    })
    .await;
    assert_eq!(
        ready_condition(&ns.0, "oauthapplication/brokenapp", "status"),
        "False"
    );
    let message = ready_condition(&ns.0, "oauthapplication/brokenapp", "message");
    assert!(message.contains("`missing-secret`"), "{message}");
    assert!(
        message.contains("oauth.tollgate.dev/watch=true"),
        "{message}"
    );
    let generation = field(
        &ns.0,
        "oauthservice/sampleirisservice",
        ".metadata.generation",
    );
    assert_eq!(
        field(
            &ns.0,
            "oauthservice/sampleirisservice",
            ".status.observedGeneration"
        ),
        generation
    );
    eventually(SETTLE, "the service counts its two pods", || {
        let selected = field(
            &ns_name,
            "oauthservice/sampleirisservice",
            ".status.selectedPods",
        );
        async move { selected == "2" }
    })
    .await;

    // A sidecar on iris-0's bound token receives its snapshot and serves the flow.
    let token_0 = pod_token(&ns.0, "iris-0");
    let token_1 = pod_token(&ns.0, "iris-1");
    let sidecar = PodSidecarBuilder::new(
        &controller.stream_url(),
        &controller.ca,
        &ns.0,
        "iris-0",
        &token_0,
        &work.path().join("iris-0.snapshot.json"),
    )
    .redis(&redis.url())
    .start()
    .await;
    let access = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = sidecar.get_with_token("/event/1", &access).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), EVENT_1);
    eventually(SETTLE, "the status counts the up-to-date pod", || {
        let up = field(
            &ns_name,
            "oauthservice/sampleirisservice",
            ".status.upToDatePods",
        );
        async move { up == "1" }
    })
    .await;

    // A token bound to another pod gets nothing of iris-0's.
    let stream = |token: &str| {
        controller
            .client
            .get(format!(
                "{}/v1/snapshots/{}/iris-0",
                controller.stream_url(),
                ns.0
            ))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(stream(&token_1).await.unwrap().status(), 403);
    assert_eq!(stream("not-a-token").await.unwrap().status(), 401);

    // The admin API: RBAC decides, through a SubjectAccessReview.
    apply_ok(
        &ns.0,
        &format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: token-admin}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: nobody}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: oauth2tokens-admin}}
rules:
- apiGroups: [oauth.tollgate.dev]
  resources: [oauth2tokens]
  verbs: [list, get, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: oauth2tokens-admin}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: oauth2tokens-admin}}
subjects: [{{kind: ServiceAccount, name: token-admin, namespace: {ns}}}]
"#,
            ns = ns.0
        ),
    );
    let admin_token = kubectl_ok(&["create", "token", "token-admin", "-n", &ns.0])
        .trim()
        .to_owned();
    let nobody_token = kubectl_ok(&["create", "token", "nobody", "-n", &ns.0])
        .trim()
        .to_owned();
    let list_path = format!("/{}/oauth2_tokens", ns.0);
    let refused = controller
        .client
        .get(controller.admin_url(&list_path))
        .bearer_auth(&nobody_token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        controller
            .client
            .get(controller.admin_url(&list_path))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let listed: Value = controller
        .client
        .get(controller.admin_url(&list_path))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = listed["data"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no token listed: {listed}"))
        .to_owned();
    let deleted = controller
        .client
        .delete(controller.admin_url(&format!("{list_path}/{id}")))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    eventually(SETTLE, "the sidecar refuses the deleted token", || async {
        sidecar.get_with_token("/event/1", &access).await.status() == 401
    })
    .await;
}
