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
//! The injection webhook's tests also create a MutatingWebhookConfiguration (the chart's,
//! limited to their own pods) and a ServiceAccount and a pod in kube-system, and delete them
//! at the end. The API server calls the webhook at https://127.0.0.1:PORT, which works when it
//! runs on this machine; for a cluster in containers, set TOLLGATE_E2E_WEBHOOK_HOST to this
//! machine's address as the cluster sees it.
//!
//! The cluster tests run one at a time (`--test-threads=1`): each starts a controller that
//! watches every namespace, and two controllers would both write status.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

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
    condition(namespace, object, "Ready", what)
}

/// One field (`status`, `reason`, `message`…) of the condition `type_` of one object.
fn condition(namespace: &str, object: &str, type_: &str, what: &str) -> String {
    field(
        namespace,
        object,
        &format!(".status.conditions[?(@.type==\"{type_}\")].{what}"),
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
        Self::start_with(dir, namespace, &["--redis-url", redis_url]).await
    }

    /// The sidecar of pod `pod` in `namespace` as injected, fed by this controller: its
    /// stream URL and CA, the pod's bound token, its snapshot cached in `dir`.
    fn sidecar_for(&self, namespace: &str, pod: &str, dir: &Path) -> PodSidecarBuilder {
        PodSidecarBuilder::new(
            &self.stream_url(),
            &self.ca,
            namespace,
            pod,
            &pod_token(namespace, pod),
            &dir.join(format!("{pod}.snapshot.json")),
        )
    }

    /// [`KubeController::start`] with other flags instead of `--redis-url`.
    async fn start_with(dir: &Path, namespace: &str, flags: &[&str]) -> Self {
        Self::start_as(dir, namespace, flags, None).await
    }

    /// [`KubeController::start_with`], with the credentials of `kubeconfig` when given.
    async fn start_as(
        dir: &Path,
        namespace: &str,
        flags: &[&str],
        kubeconfig: Option<&Path>,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let [stream, admin, metrics] = free_ports::<3>();
        let ca = dir.join("controller-ca.pem");
        let log = dir.join("controller.log");
        let mut command = tollgate();
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let child = command
            .arg("controller")
            .args(["--stream-listen", &format!("127.0.0.1:{stream}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--tls-san", "localhost,127.0.0.1"])
            .arg("--ca-out")
            .arg(&ca)
            .args(["--namespace", namespace])
            // A test that names its own Lease (as the chart does) passes --lease-name.
            .args(if flags.contains(&"--lease-name") {
                vec![]
            } else {
                vec![
                    "--lease-name".to_owned(),
                    format!("tollgate-e2e-{namespace}"),
                ]
            })
            .args(["--identity", "e2e"])
            .args(flags)
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

    /// Kills the controller, as a crash or a lost node would: no graceful shutdown.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

    // Status: good objects are accepted (not ready: no sidecar holds them yet); the broken
    // one says which Secret is missing, and where the controller looks for Secrets.
    let ns_name = ns.0.clone();
    for object in [
        "oauthservice/sampleirisservice",
        "consumer/clientapp",
        "oauthapplication/sampleapp",
    ] {
        eventually(SETTLE, &format!("{object} is accepted"), || {
            let accepted = condition(&ns_name, object, "Accepted", "status");
            async move { accepted == "True" }
        })
        .await;
        assert_eq!(
            ready_condition(&ns.0, object, "reason"),
            "Pending",
            "{object}"
        );
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
    let token_1 = pod_token(&ns.0, "iris-1");
    let sidecar = controller
        .sidecar_for(&ns.0, "iris-0", work.path())
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
    // iris-1 has no sidecar: the service is not ready, and says which pod it waits for.
    assert_eq!(
        ready_condition(&ns.0, "oauthservice/sampleirisservice", "status"),
        "False"
    );
    let message = ready_condition(&ns.0, "oauthservice/sampleirisservice", "message");
    assert!(message.contains("iris-1 (no snapshot yet)"), "{message}");
    assert!(!message.contains("iris-0"), "{message}");

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
metadata: {{name: oauthtokens-admin}}
rules:
- apiGroups: [tokens.oauth.tollgate.dev]
  resources: [oauthtokens]
  verbs: [list, get, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: oauthtokens-admin}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: oauthtokens-admin}}
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

/// The controller's admin API, one verb at a time: a ServiceAccount granted only that verb on
/// oauthtokens may make exactly the request that needs it, and gets 403 for every other.
/// Bulk delete and import go through the controller like the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn each_admin_verb_is_granted_alone_by_rbac() {
    let ns = Namespace::new();
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    apply_ok(&ns.0, &article(upstream.port));
    let controller = KubeController::start(work.path(), &ns.0, &redis.url()).await;
    let ns_name = ns.0.clone();
    eventually(SETTLE, "the application is accepted", || {
        let accepted = condition(&ns_name, "oauthapplication/sampleapp", "Accepted", "status");
        async move { accepted == "True" }
    })
    .await;
    let verbs = ["list", "get", "delete", "deletecollection", "create"];
    let mut rbac = String::new();
    for verb in verbs {
        rbac.push_str(&format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: only-{verb}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: only-{verb}}}
rules:
- apiGroups: [tokens.oauth.tollgate.dev]
  resources: [oauthtokens]
  verbs: [{verb}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: only-{verb}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: only-{verb}}}
subjects: [{{kind: ServiceAccount, name: only-{verb}, namespace: {ns}}}]
---
"#,
            ns = ns.0
        ));
    }
    apply_ok(&ns.0, &rbac);
    let token_of = |verb: &str| {
        kubectl_ok(&["create", "token", &format!("only-{verb}"), "-n", &ns.0])
            .trim()
            .to_owned()
    };
    let tokens: Vec<(&str, String)> = verbs.iter().map(|v| (*v, token_of(v))).collect();
    let token = |verb: &str| tokens.iter().find(|(v, _)| *v == verb).unwrap().1.clone();

    let base = format!("/{}/oauth2_tokens", ns.0);
    let import_body = |access: &str, user: &str| {
        json!({"access_token": access, "client_id": "clientid",
               "service_name": "sampleirisservice", "authenticated_userid": user})
    };
    let send = |verb: &str, token: &str, id: &str| {
        let client = &controller.client;
        let request = match verb {
            "list" => client.get(controller.admin_url(&base)),
            "get" => client.get(controller.admin_url(&format!("{base}/{id}"))),
            "delete" => client.delete(controller.admin_url(&format!("{base}/{id}"))),
            "deletecollection" => client
                .delete(controller.admin_url(&format!("{base}?authenticated_userid=bulk-user"))),
            "create" => client
                .post(controller.admin_url(&base))
                .json(&import_body("imported-by-create-0001", "bulk-user")),
            _ => unreachable!(),
        };
        request.bearer_auth(token).send()
    };

    // Every account is refused every verb but its own.
    let unknown_id = "0b7c1f0e-58a5-4c4e-9a3c-000000000001";
    for (holder, held) in &tokens {
        for verb in verbs {
            if verb == *holder {
                continue;
            }
            let response = send(verb, held, unknown_id).await.unwrap();
            assert_eq!(
                response.status(),
                403,
                "{holder} must not {verb}: {:?}",
                response.text().await
            );
        }
    }

    // create: an import through the controller mints a token the sidecar accepts.
    let response = send("create", &token("create"), "").await.unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let redis_url = redis.url();
    let sidecar = controller
        .sidecar_for(&ns.0, "iris-0", work.path())
        .redis(&redis_url)
        .start()
        .await;
    let response = sidecar
        .get_with_token("/event/1", "imported-by-create-0001")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        upstream.last().header("x-authenticated-userid"),
        Some("bulk-user")
    );

    // list and get see it.
    let listed: Value = send("list", &token("list"), "")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = listed["data"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("nothing listed: {listed}"))
        .to_owned();
    let response = send("get", &token("get"), &id).await.unwrap();
    assert_eq!(response.status(), 200);

    // deletecollection revokes it with every other token of the user.
    let response = send("deletecollection", &token("deletecollection"), "")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["deleted"], 1, "{body}");
    eventually(
        SETTLE,
        "the sidecar refuses the bulk-deleted token",
        || async {
            sidecar
                .get_with_token("/event/1", "imported-by-create-0001")
                .await
                .status()
                == 401
        },
    )
    .await;

    // delete, one token by id.
    let access = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed: Value = send("list", &token("list"), "")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let response = send("delete", &token("delete"), &id).await.unwrap();
    assert_eq!(response.status(), 204);
    eventually(SETTLE, "the sidecar refuses the deleted token", || async {
        sidecar.get_with_token("/event/1", &access).await.status() == 401
    })
    .await;
}

/// The injected pods' NetworkPolicy appears in a namespace with its first injected pod, made
/// by the controller with server-side apply; a namespace without one gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn the_network_policy_follows_the_first_injected_pod() {
    let ns = Namespace::new();
    let quiet = Namespace::new();
    let work = tempfile::tempdir().unwrap();
    let _controller = KubeController::start_with(
        work.path(),
        &ns.0,
        &[
            "--network-policy-name",
            "tollgate-e2e-injected-pods",
            "--network-policy-metrics-from",
            r#"[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]"#,
        ],
    )
    .await;
    let policy = |namespace: &str| get(Some(namespace), "networkpolicy/tollgate-e2e-injected-pods");
    assert!(policy(&ns.0).is_none(), "no injected pod yet");
    apply_ok(
        &ns.0,
        r#"apiVersion: v1
kind: Pod
metadata:
  name: iris-0
  labels: {app: iris, oauth.tollgate.dev/injected: "true"}
spec:
  containers: [{name: iris, image: intersystemsdc/iris-community}]
"#,
    );
    let ns_name = ns.0.clone();
    eventually(SETTLE, "the NetworkPolicy appears", || {
        let found = policy(&ns_name).is_some();
        async move { found }
    })
    .await;
    let made = policy(&ns.0).unwrap();
    assert_eq!(
        made["spec"]["podSelector"],
        json!({"matchLabels": {"oauth.tollgate.dev/injected": "true"}})
    );
    assert_eq!(
        made["spec"]["ingress"][0],
        json!({"ports": [{"port": 8443, "protocol": "TCP"}]})
    );
    assert_eq!(made["spec"]["ingress"][1]["ports"][0]["port"], 9090);
    let managers = kubectl_ok(&[
        "get",
        "networkpolicy/tollgate-e2e-injected-pods",
        "-n",
        &ns.0,
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}:{.metadata.managedFields[*].operation}",
    ]);
    assert_eq!(managers.trim(), "tollgate-controller:Apply");
    assert!(
        policy(&quiet.0).is_none(),
        "a namespace without injected pods"
    );
}

/// An injected pod's sidecar asks the controller for its certificate: the CSR is signed for
/// the names the controller takes from the pod (the IP the kubelet reported, `localhost`, its
/// annotation's Service names), and the certificate chains to the CA the controller publishes
/// in the ConfigMap `tollgate-ca.crt`, which appears with the namespace's first injected pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn a_pod_s_csr_is_signed_and_chains_to_the_published_ca() {
    let ns = Namespace::new();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    apply_ok(&ns.0, &article(upstream.port));
    let service_name = format!("iris.{}.svc", ns.0);
    kubectl_ok(&[
        "annotate",
        "pod",
        "iris-0",
        "-n",
        &ns.0,
        &format!("tollgate.dev/tls-dns-names={service_name}"),
    ]);
    // No kubelet: report the pod's IP as one would.
    kubectl_ok(&[
        "patch",
        "pod",
        "iris-0",
        "-n",
        &ns.0,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status": {"podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}"#,
    ]);
    let controller = KubeController::start_with(work.path(), &ns.0, &[]).await;

    let ns_name = ns.0.clone();
    eventually(SETTLE, "the CA's ConfigMap appears", || {
        let found = get(Some(&ns_name), "configmap/tollgate-ca.crt").is_some();
        async move { found }
    })
    .await;
    let published = get(Some(&ns.0), "configmap/tollgate-ca.crt").unwrap();
    let ca_pem = published["data"]["ca.crt"].as_str().unwrap().to_owned();
    assert_eq!(ca_pem, std::fs::read_to_string(&controller.ca).unwrap());
    let managers = kubectl_ok(&[
        "get",
        "configmap/tollgate-ca.crt",
        "-n",
        &ns.0,
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}:{.metadata.managedFields[*].operation}",
    ]);
    assert_eq!(managers.trim(), "tollgate-controller:Apply");

    let sidecar = controller
        .sidecar_for(&ns.0, "iris-0", work.path())
        .tls_from_controller()
        .start()
        .await;
    for name in ["localhost", "127.0.0.1", service_name.as_str()] {
        let chain = crate::pod_certs::served_chain(sidecar.proxy, name, &ca_pem)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{name}: {e}
{}",
                    sidecar.logs()
                )
            });
        assert_eq!(
            crate::pod_certs::sans(&chain[0]),
            ["localhost", "127.0.0.1", service_name.as_str()]
        );
    }
    assert!(
        crate::pod_certs::served_chain(sidecar.proxy, "iris.default.svc", &ca_pem)
            .await
            .is_err()
    );

    // iris-1's bound token gets no certificate for iris-0.
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let refused = controller
        .client
        .post(format!(
            "{}/v1/certificates/{}/iris-0",
            controller.stream_url(),
            ns.0
        ))
        .bearer_auth(pod_token(&ns.0, "iris-1"))
        .body(csr.der().to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    drop(sidecar);
    drop(controller);
    let _ = kubectl(
        &[
            "delete",
            "pods,configmaps,secrets,serviceaccounts,oauthservices,consumers,oauthapplications",
            "--all",
            "-n",
            &ns.0,
            "--wait=false",
        ],
        None,
    );
}

/// A kubeconfig for ServiceAccount `account` of `namespace`: the test cluster's server and CA,
/// with a token of that account.
fn service_account_kubeconfig(dir: &Path, namespace: &str, account: &str) -> PathBuf {
    let view = |path: &str| {
        kubectl_ok(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            &format!("jsonpath={{{path}}}"),
        ])
    };
    let server = view(".clusters[0].cluster.server");
    let ca = view(".clusters[0].cluster.certificate-authority-data");
    let token = kubectl_ok(&[
        "create",
        "token",
        account,
        "-n",
        namespace,
        "--duration",
        "1h",
    ]);
    let ca_line = if ca.is_empty() {
        "insecure-skip-tls-verify: true".to_owned()
    } else {
        format!("certificate-authority-data: {ca}")
    };
    let path = dir.join(format!("{account}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    {ca_line}\nusers:\n- name: u\n  user:\n    token: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: {namespace}}}\ncurrent-context: x\n",
            token.trim()
        ),
    )
    .unwrap();
    path
}

/// watchNamespaces: a controller holding only the chart's namespaced Role in one namespace
/// (and the cluster-scoped review rights) watches that namespace alone, becomes ready, and
/// writes status there; another namespace's objects are never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn watch_namespaces_reads_only_its_namespaces() {
    let inside = Namespace::new();
    let outside = Namespace::new();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    apply_ok(&inside.0, &article(upstream.port));
    apply_ok(&outside.0, &article(upstream.port));
    // The chart's rights with watchNamespaces: a Role of reads in the watched namespace, the
    // Lease and CA rights in the controller's own, and only the reviews cluster-wide.
    let reviews = format!("tollgate-e2e-reviews-{}", inside.0);
    apply_ok(
        &inside.0,
        &format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: controller}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: controller-watch}}
rules:
- apiGroups: [oauth.tollgate.dev]
  resources: [oauthservices, consumers, oauthapplications]
  verbs: [get, list, watch]
- apiGroups: [oauth.tollgate.dev]
  resources: [oauthservices/status, consumers/status, oauthapplications/status]
  verbs: [get, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [pods, secrets]
  verbs: [get, list, watch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create, get, update]
- apiGroups: [""]
  resources: [configmaps]
  resourceNames: [tollgate-ca.crt]
  verbs: [get, patch, create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: controller-watch}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: controller-watch}}
subjects: [{{kind: ServiceAccount, name: controller, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {reviews}}}
rules:
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
- apiGroups: [authorization.k8s.io]
  resources: [subjectaccessreviews]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {reviews}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {reviews}}}
subjects: [{{kind: ServiceAccount, name: controller, namespace: {ns}}}]
"#,
            ns = inside.0
        ),
    );
    // As the chart binds it: the front proxy's settings, for the tokens API.
    apply_ok(
        "kube-system",
        &format!(
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {reviews}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}}
subjects: [{{kind: ServiceAccount, name: controller, namespace: {ns}}}]
"#,
            ns = inside.0
        ),
    );
    let kubeconfig = service_account_kubeconfig(work.path(), &inside.0, "controller");
    // Without the flag, that account cannot list cluster-wide: the controller never lists.
    let denied = kubectl(
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "get",
            "pods",
            "-n",
            &outside.0,
        ],
        None,
    );
    assert!(
        !denied.status.success(),
        "the account reads nothing outside"
    );

    let controller = KubeController::start_as(
        work.path(),
        &inside.0,
        &["--watch-namespaces", &inside.0],
        Some(&kubeconfig),
    )
    .await;
    let inside_name = inside.0.clone();
    eventually(SETTLE, "status is written in the watched namespace", || {
        let accepted = condition(
            &inside_name,
            "oauthapplication/sampleapp",
            "Accepted",
            "status",
        );
        async move { accepted == "True" }
    })
    .await;
    // The chart's Role lets it record Events there too.
    eventually(SETTLE, "a refusal is recorded as an Event", || {
        let reasons = kubectl_ok(&[
            "get",
            "events",
            "-n",
            &inside_name,
            "--field-selector",
            "involvedObject.name=brokenapp",
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        async move { reasons.contains("SecretNotFound") }
    })
    .await;
    // Status writes took well under SETTLE; the other namespace's objects have none.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        field(&outside.0, "oauthapplication/sampleapp", ".status"),
        "",
        "an object outside watchNamespaces was read"
    );
    let logs = controller.logs();
    assert!(!logs.contains("forbidden"), "{logs}");
    let _ = kubectl(&["delete", "clusterrolebinding", &reviews], None);
    let _ = kubectl(&["delete", "clusterrole", &reviews], None);
    let _ = kubectl(
        &["delete", "rolebinding", "-n", "kube-system", &reviews],
        None,
    );
}

/// The root store key lives in its Secret (`--store-key-secret`): made once by the first
/// controller, kept across a restart so that tokens outlive the controller, and rotated by
/// moving `current` to `previous`, after which tokens sealed under the old key still verify
/// and new ones are sealed under the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn the_store_key_secret_outlives_the_controller_and_rotates() {
    let ns = Namespace::new();
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    apply_ok(&ns.0, &article(upstream.port));
    let secret = format!("{}/tollgate-store-key", ns.0);
    let flags = ["--redis-url", &redis.url(), "--store-key-secret", &secret];
    let key_field =
        |name: &str| field(&ns.0, "secret/tollgate-store-key", &format!(".data.{name}"));
    // Each stage's sidecar starts without a cached snapshot: what it serves is the new
    // controller's.
    let pod_sidecar = |controller: &KubeController, pod: &str, stage: &str| {
        let cache = work.path().join(stage);
        std::fs::create_dir_all(&cache).unwrap();
        controller
            .sidecar_for(&ns.0, pod, &cache)
            .redis(&redis.url())
    };

    // The first controller makes the key and keeps it in the Secret.
    let mut controller = KubeController::start_with(work.path(), &ns.0, &flags).await;
    let first_key = key_field("current");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&first_key)
        .unwrap_or_else(|e| panic!("the Secret's `current` is not base64 ({e}): {first_key:?}"));
    assert!(decoded.len() >= 32, "a {}-byte key", decoded.len());
    assert_eq!(key_field("previous"), "", "no rotation yet");
    let sidecar = pod_sidecar(&controller, "iris-0", "first").start().await;
    let before_restart = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sidecar
            .get_with_token("/event/1", &before_restart)
            .await
            .status(),
        200
    );
    drop(sidecar);

    // A restarted controller reads the same key back: a sidecar it feeds accepts the token
    // sealed before the restart.
    controller.kill();
    let mut controller = KubeController::start_with(work.path(), &ns.0, &flags).await;
    assert_eq!(key_field("current"), first_key, "the restart kept the key");
    let sidecar = pod_sidecar(&controller, "iris-1", "second").start().await;
    assert_eq!(
        sidecar
            .get_with_token("/event/1", &before_restart)
            .await
            .status(),
        200,
        "a token sealed before the controller's restart"
    );
    drop(sidecar);

    // Rotation, as the README describes it: `current` moves to `previous`, and a restart
    // makes a new `current`.
    let patch = json!([
        {"op": "add", "path": "/data/previous", "value": first_key},
        {"op": "remove", "path": "/data/current"},
    ])
    .to_string();
    kubectl_ok(&[
        "patch",
        "secret",
        "tollgate-store-key",
        "-n",
        &ns.0,
        "--type=json",
        "-p",
        &patch,
    ]);
    controller.kill();
    let controller = KubeController::start_with(work.path(), &ns.0, &flags).await;
    let second_key = key_field("current");
    assert!(
        !second_key.is_empty() && second_key != first_key,
        "the restart made a new current key"
    );
    assert_eq!(
        key_field("previous"),
        first_key,
        "the old key still verifies"
    );
    let sidecar = pod_sidecar(&controller, "iris-0", "third").start().await;
    assert_eq!(
        sidecar
            .get_with_token("/event/1", &before_restart)
            .await
            .status(),
        200,
        "a token sealed under the previous key"
    );
    let after_rotation = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sidecar
            .get_with_token("/event/1", &after_rotation)
            .await
            .status(),
        200,
        "a token sealed under the new key"
    );
}

// --- the injection webhook ---

/// Every pod of a webhook test carries this label, valued with the test's run id, and the
/// test's webhook configuration selects only such pods (an objectSelector added to the
/// chart's): it never touches anyone else's pods on a shared cluster, and a configuration left
/// behind by an interrupted run touches nothing at all.
const RUN_LABEL: &str = "e2e.tollgate.dev/run";

/// What injected sidecars are made of, set on the controller so the tests can recognise it.
const SIDECAR_IMAGE: &str = "tollgate:e2e";
const SIDECAR_CONTROLLER_URL: &str = "https://tollgate-controller.e2e.svc:8090";

/// The address the API server reaches the webhook at: 127.0.0.1 when it runs on this machine,
/// as a bare kube-apiserver does, so no Service or kube-proxy is involved. For a cluster in
/// containers (kind), set TOLLGATE_E2E_WEBHOOK_HOST to this machine's address on their network
/// (for example 172.18.0.1).
fn webhook_host() -> IpAddr {
    match std::env::var("TOLLGATE_E2E_WEBHOOK_HOST") {
        Ok(host) => host.parse().unwrap_or_else(|_| {
            panic!("TOLLGATE_E2E_WEBHOOK_HOST={host:?} is not an IP address of this machine")
        }),
        Err(_) => IpAddr::from([127, 0, 0, 1]),
    }
}

/// An object outside the test's namespaces (cluster-scoped, or in kube-system), deleted at the
/// end whatever happens: namespaces are the only thing the other tests leave to clean up.
struct Owned {
    namespace: Option<String>,
    object: String,
}

impl Drop for Owned {
    fn drop(&mut self) {
        let mut args = vec![
            "delete",
            self.object.as_str(),
            "--ignore-not-found",
            "--wait=false",
        ];
        if let Some(namespace) = &self.namespace {
            args.extend(["-n", namespace.as_str()]);
        }
        let _ = kubectl(&args, None);
    }
}

/// An object as the API server stored it; `None` when it does not exist.
fn get(namespace: Option<&str>, object: &str) -> Option<Value> {
    let mut args = vec!["get", object, "-o", "json"];
    if let Some(namespace) = namespace {
        args.extend(["-n", namespace]);
    }
    let output = kubectl(&args, None);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("kubectl get -o json"))
}

/// `kubectl create -n NAMESPACE -f - -o json` of `object`, with `flags`: its output.
fn create(namespace: &str, object: &Value, flags: &[&str]) -> Output {
    let mut args = vec!["create", "-n", namespace, "-f", "-", "-o", "json"];
    args.extend(flags);
    kubectl(&args, Some(&object.to_string()))
}

/// Creates `pod` and returns what the API server stored; panics when it is refused.
fn create_pod(namespace: &str, pod: &Value) -> Value {
    let output = create(namespace, pod, &[]);
    assert!(
        output.status.success(),
        "pod refused in {namespace}:\n{pod:#}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    let name = created["metadata"]["name"].as_str().unwrap();
    get(Some(namespace), &format!("pod/{name}")).expect("the created pod is stored")
}

/// Creates `pod` expecting a refusal: returns the API server's message, after checking that
/// nothing was stored.
fn refused_pod(namespace: &str, pod: &Value) -> String {
    let output = create(namespace, pod, &[]);
    assert!(
        !output.status.success(),
        "pod accepted in {namespace}:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert!(
        get(Some(namespace), &format!("pod/{name}")).is_none(),
        "the refused pod {name} was stored"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What the API server would store for `pod`, admission webhooks included (a server-side dry
/// run, which stores nothing); `None` when it would refuse it.
fn dry_run_pod(namespace: &str, pod: &Value) -> Option<Value> {
    let output = create(namespace, pod, &["--dry-run=server"]);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).unwrap())
}

/// The spec of the IRIS pods, under the ServiceAccount `iris` each test namespace has (a bare
/// API server makes no `default` one, and refuses pods whose ServiceAccount is missing).
fn iris_pod_spec() -> Value {
    json!({
        "serviceAccountName": "iris",
        "containers": [{
            "name": "iris",
            "image": "intersystemsdc/iris-community",
            "ports": [{"containerPort": 52773}],
        }],
    })
}

/// A pod of test run `run` with `annotations`. Its scheduling gate keeps it from ever being
/// scheduled, on a full cluster too: the tests look only at what the API server stored.
fn iris_pod(name: &str, run: &str, annotations: &[(&str, &str)]) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "iris", RUN_LABEL: run}},
        "spec": iris_pod_spec(),
    });
    if !annotations.is_empty() {
        pod["metadata"]["annotations"] = annotations
            .iter()
            .map(|(key, value)| ((*key).to_owned(), Value::from(*value)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    never_scheduled(&mut pod);
    pod
}

fn never_scheduled(pod: &mut Value) {
    pod["spec"]["schedulingGates"] = json!([{"name": "e2e.tollgate.dev/never-scheduled"}]);
}

/// An IRIS Deployment of run `run` whose pod template carries `annotations`. No replicas:
/// a bare API server would make no pods anyway, and a full cluster must not run any.
fn iris_deployment(name: &str, run: &str, annotations: &[(&str, &str)]) -> Value {
    let template = iris_pod("unused", run, annotations);
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "iris"}},
            "template": {
                "metadata": {
                    "labels": template["metadata"]["labels"],
                    "annotations": template["metadata"]["annotations"],
                },
                "spec": iris_pod_spec(),
            },
        },
    })
}

/// Creates the pod a ReplicaSet of the stored Deployment `deployment` would create from its
/// template (no controller-manager runs on a bare API server, so the test stands in for
/// it), and returns what the API server stored.
fn create_pod_from_template(namespace: &str, deployment: &str) -> Value {
    let stored = get(Some(namespace), &format!("deployment/{deployment}"))
        .unwrap_or_else(|| panic!("deployment {deployment} is not stored"));
    let template = &stored["spec"]["template"];
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template["metadata"],
        "spec": template["spec"],
    });
    pod["metadata"]["generateName"] = json!(format!("{deployment}-"));
    never_scheduled(&mut pod);
    create_pod(namespace, &pod)
}

/// The containers and init containers named `tollgate-sidecar` of a pod, or of a pod
/// template.
fn sidecars(pod: &Value) -> Vec<&Value> {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|list| pod["spec"][*list].as_array().into_iter().flatten())
        .filter(|container| container["name"] == "tollgate-sidecar")
        .collect()
}

/// Asserts that the API server stored `pod` with one sidecar, as the issue describes it, that
/// trusts the controller's CA `ca_pem`.
fn assert_injected(pod: &Value, ca_pem: &str) {
    let name = &pod["metadata"]["name"];
    let sidecars = sidecars(pod);
    assert_eq!(
        sidecars.len(),
        1,
        "pod {name} should have one tollgate-sidecar:\n{pod:#}"
    );
    let sidecar = sidecars[0];
    assert_eq!(
        pod["spec"]["containers"][0]["name"], "iris",
        "the application stays the first container of {name}"
    );
    assert_eq!(sidecar["image"], SIDECAR_IMAGE, "{sidecar:#}");
    assert_eq!(
        sidecar["command"],
        json!(["/usr/local/bin/tollgate-sidecar"]),
        "the image's sidecar-only binary: {sidecar:#}"
    );

    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"sidecar"), "{args:?}");
    let controller = args.iter().position(|arg| *arg == "--controller");
    assert_eq!(
        controller.and_then(|at| args.get(at + 1)),
        Some(&SIDECAR_CONTROLLER_URL),
        "{args:?}"
    );

    for (variable, field_path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let env = sidecar["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|env| env["name"] == variable);
        assert_eq!(
            env.map(|env| &env["valueFrom"]["fieldRef"]["fieldPath"]),
            Some(&json!(field_path)),
            "{sidecar:#}"
        );
    }
    let ports = sidecar["ports"].as_array().cloned().unwrap_or_default();
    assert!(
        ports.iter().any(|port| port["containerPort"] == 8443),
        "{sidecar:#}"
    );
    assert_eq!(
        sidecar["readinessProbe"]["httpGet"]["path"], "/readyz",
        "{sidecar:#}"
    );
    let security = &sidecar["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "{sidecar:#}");
    assert_eq!(security["readOnlyRootFilesystem"], true, "{sidecar:#}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{sidecar:#}");

    // The sidecar's token is for the controller only: audience `tollgate`.
    let token_audiences: Vec<&Value> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|volume| {
            volume["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .map(|source| &source["serviceAccountToken"]["audience"])
        .collect();
    assert!(
        token_audiences.contains(&&json!("tollgate")),
        "no projected token for audience tollgate in {name}:\n{pod:#}"
    );
    assert_eq!(
        pod["metadata"]["labels"]["oauth.tollgate.dev/injected"], "true",
        "{name}"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["tollgate.dev/controller-ca"], ca_pem,
        "{name} does not trust the controller's CA"
    );
}

/// Asserts that the API server stored `pod` as it was sent: no sidecar, no injected label.
fn assert_not_injected(pod: &Value) {
    let name = &pod["metadata"]["name"];
    assert!(sidecars(pod).is_empty(), "{name} was injected:\n{pod:#}");
    assert!(
        pod["metadata"]["labels"]
            .get("oauth.tollgate.dev/injected")
            .is_none(),
        "{name} is labelled injected:\n{pod:#}"
    );
    assert_eq!(
        pod["spec"]["containers"].as_array().map(Vec::len),
        Some(1),
        "{pod:#}"
    );
}

/// The chart's MutatingWebhookConfiguration, as deploy/tollgate.yaml renders it with the
/// default values (a test keeps that file in step with the chart), named `name` and limited
/// to the pods of test run `run`. Everything else is the chart's: rules, namespaceSelectors,
/// the match condition, the failurePolicy, and a clientConfig aimed at the chart's Service,
/// which the controller replaces with its URL and CA.
fn chart_webhook_configuration(name: &str, run: &str) -> Value {
    let rendered = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tollgate.yaml");
    let rendered = std::fs::read_to_string(rendered).unwrap();
    let mut configuration = rendered
        .split("\n---")
        .filter_map(|document| serde_yaml::from_str::<Value>(document).ok())
        .find(|object| object["kind"] == "MutatingWebhookConfiguration")
        .expect("deploy/tollgate.yaml holds no MutatingWebhookConfiguration");
    configuration["metadata"] = json!({"name": name, "labels": {RUN_LABEL: run}});
    let webhooks = configuration["webhooks"].as_array_mut().unwrap();
    let names: Vec<&Value> = webhooks.iter().map(|webhook| &webhook["name"]).collect();
    assert_eq!(
        names,
        [
            "annotated.inject.tollgate.dev",
            "namespace.inject.tollgate.dev"
        ],
        "the chart's webhooks changed: update these tests"
    );
    for webhook in webhooks {
        let selector = webhook
            .as_object_mut()
            .unwrap()
            .entry("objectSelector")
            .or_insert_with(|| json!({}));
        let labels = selector
            .as_object_mut()
            .unwrap()
            .entry("matchLabels")
            .or_insert_with(|| json!({}));
        labels[RUN_LABEL] = json!(run);
    }
    configuration
}

/// Two namespaces, the chart's webhook configuration, and a controller that serves the webhook
/// and keeps that configuration pointing at itself, with the API server already calling it.
struct Injection {
    // Fields drop in this order: the configuration first, so that a failed test never leaves
    // a webhook behind that points at a dead controller.
    _configuration: Owned,
    controller: KubeController,
    /// Not labelled: pods opt in with the annotation `tollgate.dev/inject: enabled`.
    plain: Namespace,
    /// Labelled `tollgate.dev/inject=enabled`: every pod is injected unless it opts out.
    labelled: Namespace,
    run: String,
    /// The controller's CA, which injected pods must trust.
    ca_pem: String,
    work: tempfile::TempDir,
}

impl Injection {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`Injection::start`], the controller with `more_flags` too.
    async fn start_with(more_flags: &[&str]) -> Self {
        let plain = Namespace::new();
        let labelled = Namespace::new();
        kubectl_ok(&[
            "label",
            "namespace",
            &labelled.0,
            "tollgate.dev/inject=enabled",
        ]);
        for namespace in [&plain, &labelled] {
            // A cluster-wide Pod Security default must not refuse the test's pods (IRIS has no
            // securityContext, and one pod uses hostNetwork): the webhook is what is tested.
            kubectl_ok(&[
                "label",
                "namespace",
                &namespace.0,
                "pod-security.kubernetes.io/enforce=privileged",
            ]);
            kubectl_ok(&["create", "serviceaccount", "iris", "-n", &namespace.0]);
        }

        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let name = format!("tollgate-e2e-{run}");
        let configuration = chart_webhook_configuration(&name, &run);
        let output = kubectl(&["create", "-f", "-"], Some(&configuration.to_string()));
        assert!(
            output.status.success(),
            "the chart's webhook configuration was refused: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let owned_configuration = Owned {
            namespace: None,
            object: format!("mutatingwebhookconfiguration/{name}"),
        };

        // The configuration must exist before the controller starts: it patches it at start,
        // then only once a minute.
        let host = webhook_host();
        let [port] = free_ports::<1>();
        let listen = SocketAddr::new(host, port).to_string();
        let base = format!("https://{listen}");
        let work = tempfile::tempdir().unwrap();
        let host = host.to_string();
        let mut flags = vec![
            "--webhook-listen",
            listen.as_str(),
            "--webhook-url",
            &format!("{base}/mutate"),
            "--webhook-configuration",
            &name,
            "--sidecar-image",
            SIDECAR_IMAGE,
            "--sidecar-controller-url",
            SIDECAR_CONTROLLER_URL,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        if host != "127.0.0.1" {
            // The API server checks the webhook's certificate against the URL's host.
            flags.extend(["--tls-san".to_owned(), host]);
        }
        flags.extend(more_flags.iter().map(|flag| (*flag).to_owned()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let controller = KubeController::start_with(work.path(), &plain.0, &flags).await;
        let ca_pem = std::fs::read_to_string(&controller.ca).unwrap();

        let injection = Injection {
            _configuration: owned_configuration,
            controller,
            plain,
            labelled,
            run,
            ca_pem,
            work,
        };
        injection.wait_for_configuration(&name, &base).await;
        injection.wait_for_injection().await;
        injection
    }

    /// Waits until the controller has replaced the chart's Service with its URL in both
    /// webhooks, and set their caBundle to its CA.
    async fn wait_for_configuration(&self, name: &str, base: &str) {
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let object = format!("mutatingwebhookconfiguration/{name}");
        eventually(
            SETTLE,
            "the controller points the webhook configuration at itself",
            || {
                let pointed = get(None, &object).is_some_and(|configuration| {
                    [
                        ("annotated.inject.tollgate.dev", "/mutate"),
                        ("namespace.inject.tollgate.dev", "/mutate/namespace"),
                    ]
                    .iter()
                    .all(|(webhook, path)| {
                        configuration["webhooks"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|w| w["name"] == *webhook)
                            .any(|w| {
                                let client = &w["clientConfig"];
                                client["url"] == format!("{base}{path}")
                                    && client["caBundle"] == ca_bundle
                                    && client.get("service").is_none()
                            })
                    })
                });
                async move { pointed }
            },
        )
        .await;
    }

    /// Waits until the API server injects through both webhooks. It reads webhook
    /// configurations and namespace labels through caches, so it follows the controller's
    /// patch and the namespace's label a little after they are written.
    async fn wait_for_injection(&self) {
        let annotated = iris_pod("probe", &self.run, &[("tollgate.dev/inject", "enabled")]);
        let unannotated = iris_pod("probe", &self.run, &[]);
        eventually(SETTLE, "the API server calls the webhook", || {
            let injected = [
                dry_run_pod(&self.plain.0, &annotated),
                dry_run_pod(&self.labelled.0, &unannotated),
            ]
            .iter()
            .all(|pod| pod.as_ref().is_some_and(|pod| sidecars(pod).len() == 1));
            async move { injected }
        })
        .await;
    }
}

// --- the webhook tests ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn the_webhook_injects_the_pods_that_ask_and_stores_the_others_as_sent() {
    let injection = Injection::start().await;
    let (plain, labelled, run) = (&injection.plain.0, &injection.labelled.0, &injection.run);

    // Opted in by annotation, with the annotations that tune the sidecar.
    let annotated = create_pod(
        plain,
        &iris_pod(
            "annotated",
            run,
            &[
                ("tollgate.dev/inject", "enabled"),
                ("tollgate.dev/upstream-port", "1972"),
                ("tollgate.dev/proxy-memory", "96Mi"),
            ],
        ),
    );
    assert_injected(&annotated, &injection.ca_pem);
    // The upstream port is checked and left on the pod for the controller to compare.
    assert_eq!(
        annotated["metadata"]["annotations"]["tollgate.dev/upstream-port"],
        "1972"
    );
    let resources = &sidecars(&annotated)[0]["resources"];
    assert_eq!(resources["requests"]["memory"], "96Mi", "{resources}");
    assert_eq!(resources["requests"]["cpu"], "50m", "{resources}");

    // Opted in by the namespace's label.
    let by_namespace = create_pod(labelled, &iris_pod("by-namespace", run, &[]));
    assert_injected(&by_namespace, &injection.ca_pem);

    // Left alone: a pod that does not ask, one that opts out of its namespace's injection,
    // and a hostNetwork pod, whose :8443 would be the node's.
    let unannotated = create_pod(plain, &iris_pod("unannotated", run, &[]));
    assert_not_injected(&unannotated);
    let opted_out = create_pod(
        labelled,
        &iris_pod("opted-out", run, &[("tollgate.dev/inject", "disabled")]),
    );
    assert_not_injected(&opted_out);
    let mut host_network = iris_pod("host-network", run, &[("tollgate.dev/inject", "enabled")]);
    host_network["spec"]["hostNetwork"] = json!(true);
    let host_network = create_pod(plain, &host_network);
    assert_not_injected(&host_network);

    // Injection is idempotent: the stored injected pod, created again as it is, keeps one
    // sidecar.
    let copy = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "copy",
            "labels": annotated["metadata"]["labels"],
            "annotations": annotated["metadata"]["annotations"],
        },
        "spec": annotated["spec"],
    });
    let copy = create_pod(plain, &copy);
    assert_injected(&copy, &injection.ca_pem);
}

/// A rediss:// Redis with a private CA: the controller trusts it with --redis-ca, publishes it
/// (a CA is public) in its ConfigMap tollgate-ca.crt of each namespace with injected pods, and
/// the pods it injects mount it from there, with the client certificate's Secret of their own
/// namespace, into the sidecar container alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn injected_sidecars_get_the_redis_ca_the_controller_publishes() {
    let pki = crate::redis_tls::Pki::new();
    let (_redis, url) = crate::redis_tls::tls_redis(&pki, false);
    let ca_file = pki.ca.to_str().unwrap();
    let injection = Injection::start_with(&[
        "--redis-url",
        &url,
        "--redis-ca",
        ca_file,
        "--sidecar-redis-url",
        &url,
        "--sidecar-redis-client-secret",
        "redis-client",
    ])
    .await;
    let (plain, run) = (&injection.plain.0, &injection.run);
    let pod = create_pod(
        plain,
        &iris_pod("tls", run, &[("tollgate.dev/inject", "enabled")]),
    );
    assert_injected(&pod, &injection.ca_pem);
    let sidecar = sidecars(&pod)[0];
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let from = args.iter().position(|a| *a == "--redis-ca").unwrap();
    assert_eq!(
        args[from..from + 6],
        [
            "--redis-ca",
            "/var/run/tollgate/redis-tls/ca.crt",
            "--redis-client-cert",
            "/var/run/tollgate/redis-tls/tls.crt",
            "--redis-client-key",
            "/var/run/tollgate/redis-tls/tls.key",
        ]
    );
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tollgate-redis-tls")
        .unwrap_or_else(|| panic!("no Redis TLS volume: {pod}"));
    let sources = &volume["projected"]["sources"];
    assert_eq!(
        sources[0]["configMap"]["name"], "tollgate-ca.crt",
        "{volume}"
    );
    assert_eq!(
        sources[0]["configMap"]["items"],
        json!([{"key": "redis-ca.crt", "path": "ca.crt"}])
    );
    assert_eq!(sources[1]["secret"]["name"], "redis-client", "{volume}");
    let iris = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "iris")
        .unwrap();
    assert!(
        !iris.to_string().contains("tollgate-redis-tls"),
        "the application's container mounts the client key: {iris}"
    );

    // The ConfigMap the volume names appears, holding the CA the controller was given.
    let ns = plain.clone();
    eventually(SETTLE, "the Redis CA is published", || {
        let published = get(Some(&ns), "configmap/tollgate-ca.crt")
            .is_some_and(|map| map["data"]["redis-ca.crt"].is_string());
        async move { published }
    })
    .await;
    let published = get(Some(plain), "configmap/tollgate-ca.crt").unwrap();
    assert_eq!(
        published["data"]["redis-ca.crt"].as_str().unwrap(),
        std::fs::read_to_string(&pki.ca).unwrap()
    );
    assert_eq!(published["data"]["ca.crt"], injection.ca_pem.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn bad_injection_annotations_are_refused_with_a_message_naming_them() {
    let injection = Injection::start().await;
    let (plain, run) = (&injection.plain.0, &injection.run);
    let cases = [
        (vec![("tollgate.dev/inject", "yes")], "tollgate.dev/inject"),
        (
            vec![
                ("tollgate.dev/inject", "enabled"),
                ("tollgate.dev/upstream-port", "8443"),
            ],
            "tollgate.dev/upstream-port",
        ),
        (
            vec![
                ("tollgate.dev/inject", "enabled"),
                ("tollgate.dev/upstream-port", "iris"),
            ],
            "tollgate.dev/upstream-port",
        ),
        (
            vec![
                ("tollgate.dev/inject", "enabled"),
                ("tollgate.dev/proxy-memory", "lots"),
            ],
            "tollgate.dev/proxy-memory",
        ),
    ];
    for (annotations, named) in cases {
        let message = refused_pod(plain, &iris_pod("bad", run, &annotations));
        assert!(
            message.contains("admission webhook \"annotated.inject.tollgate.dev\" denied")
                && message.contains(named),
            "the refusal of {annotations:?} says:\n{message}\nwhich does not name {named}"
        );
    }

    // A pod that did not ask for a sidecar is not refused for a bad tollgate annotation.
    let unrelated = create_pod(
        plain,
        &iris_pod("unrelated", run, &[("tollgate.dev/upstream-port", "iris")]),
    );
    assert_not_injected(&unrelated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn deployment_pod_templates_get_the_sidecar_when_their_pods_are_created() {
    let injection = Injection::start().await;
    let (plain, run) = (&injection.plain.0, &injection.run);

    // The webhook acts on pods, not on templates: the Deployment is stored as sent, and the
    // pods made from its template are injected.
    let deployment = iris_deployment("iris", run, &[("tollgate.dev/inject", "enabled")]);
    let output = create(plain, &deployment, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = get(Some(plain), "deployment/iris").unwrap();
    assert!(sidecars(&stored["spec"]["template"]).is_empty());
    let pod = create_pod_from_template(plain, "iris");
    assert_injected(&pod, &injection.ca_pem);

    // GitOps: `tollgate inject -f` puts the sidecar in the template ahead of time, with no CA;
    // the webhook fills in its CA when the pod is created, and adds no second sidecar.
    let file = injection.work.path().join("iris-gitops.json");
    std::fs::write(
        &file,
        iris_deployment("iris-gitops", run, &[("tollgate.dev/inject", "enabled")]).to_string(),
    )
    .unwrap();
    let printed = tollgate()
        .args(["inject", "--sidecar-image", SIDECAR_IMAGE])
        .args(["--sidecar-controller-url", SIDECAR_CONTROLLER_URL])
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "tollgate inject: {}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let output = kubectl(
        &["create", "-n", plain, "-f", "-"],
        Some(&String::from_utf8_lossy(&printed.stdout)),
    );
    assert!(
        output.status.success(),
        "the injected Deployment was refused: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = get(Some(plain), "deployment/iris-gitops").unwrap();
    let template = &stored["spec"]["template"];
    assert_eq!(sidecars(template).len(), 1, "{template:#}");
    assert_eq!(
        template["metadata"]["annotations"]["tollgate.dev/controller-ca"],
        ""
    );
    let pod = create_pod_from_template(plain, "iris-gitops");
    assert_injected(&pod, &injection.ca_pem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn a_stopped_controller_blocks_only_the_pods_that_asked_for_it() {
    let mut injection = Injection::start().await;
    let (plain, labelled, run) = (
        injection.plain.0.clone(),
        injection.labelled.0.clone(),
        injection.run.clone(),
    );
    // kube-system's pods need a ServiceAccount there; this one, and the pod, go at the end.
    let system_name = format!("tollgate-e2e-{run}");
    kubectl_ok(&[
        "create",
        "serviceaccount",
        &system_name,
        "-n",
        "kube-system",
    ]);
    let _system_account = Owned {
        namespace: Some("kube-system".to_owned()),
        object: format!("serviceaccount/{system_name}"),
    };
    let _system_pod = Owned {
        namespace: Some("kube-system".to_owned()),
        object: format!("pod/{system_name}"),
    };

    injection.controller.kill();
    let asks = [("tollgate.dev/inject", "enabled")];

    // The chart's failurePolicy is Fail: a pod that asked for the OAuth gateway is refused
    // rather than started without it, and the API server says which webhook failed.
    let message = refused_pod(&plain, &iris_pod("annotated", &run, &asks));
    assert!(
        message.contains("annotated.inject.tollgate.dev"),
        "the refusal does not name the webhook:\n{message}"
    );
    let message = refused_pod(&labelled, &iris_pod("by-namespace", &run, &[]));
    assert!(
        message.contains("namespace.inject.tollgate.dev"),
        "the refusal does not name the webhook:\n{message}"
    );

    // Pods that did not ask never reach the webhook (its match condition), and the cluster's
    // own namespaces are never sent to it (its namespaceSelector), whatever their pods say.
    let unannotated = create_pod(&plain, &iris_pod("unannotated", &run, &[]));
    assert_not_injected(&unannotated);
    let mut system_pod = iris_pod(&system_name, &run, &asks);
    system_pod["spec"]["serviceAccountName"] = json!(system_name);
    let system_pod = create_pod("kube-system", &system_pod);
    assert_not_injected(&system_pod);
}

// --- tokens through the API server (the aggregated API) ---

/// The APIService of the tokens API, pointed at a controller on this machine: an
/// `ExternalName` Service named `localhost` (in `namespace`) whose `externalName` is
/// `localhost`, with the controller's admin port. The API server, run here without
/// `--enable-aggregator-routing`, then dials localhost:PORT and checks the controller's
/// certificate for `localhost.NAMESPACE.svc` against the caBundle the controller patches in.
/// Deleted on drop: it is cluster-scoped.
struct TokensApiService;

const TOKENS_API_SERVICE: &str = "v1alpha1.tokens.oauth.tollgate.dev";

impl TokensApiService {
    fn register(namespace: &str, port: u16) -> Self {
        let yaml = format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: localhost, namespace: {namespace}}}
spec: {{type: ExternalName, externalName: localhost}}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: {TOKENS_API_SERVICE}}}
spec:
  group: tokens.oauth.tollgate.dev
  version: v1alpha1
  groupPriorityMinimum: 1000
  versionPriority: 15
  service: {{name: localhost, namespace: {namespace}, port: {port}}}
"#
        );
        let output = kubectl(&["apply", "-f", "-"], Some(&yaml));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        kubectl_ok(&[
            "wait",
            "--for=condition=Available",
            "--timeout=60s",
            &format!("apiservice/{TOKENS_API_SERVICE}"),
        ]);
        // The API server's aggregated discovery catches up with an Available APIService a
        // moment later; kubectl finds resources there.
        let deadline = Instant::now() + SETTLE;
        while !kubectl_ok(&["api-resources", "--api-group=tokens.oauth.tollgate.dev"])
            .contains("oauthtokens")
        {
            assert!(
                Instant::now() < deadline,
                "the API server's discovery never showed oauthtokens"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Self
    }
}

impl Drop for TokensApiService {
    fn drop(&mut self) {
        let _ = kubectl(
            &["delete", "apiservice", TOKENS_API_SERVICE, "--wait=false"],
            None,
        );
    }
}

/// A controller serving the tokens API for the namespace's article, registered as the
/// APIService once its application is ready.
async fn tokens_api_controller(
    work: &Path,
    ns: &Namespace,
    redis_url: &str,
) -> (KubeController, TokensApiService) {
    // A previous run's APIService points at another port. Gone before the controller starts,
    // the new one is patched within seconds (a caBundle it found in place is checked again only
    // a minute later), and the API server's discovery follows that patch.
    let _ = kubectl(
        &["delete", "apiservice", TOKENS_API_SERVICE, "--wait=true"],
        None,
    );
    let san = format!("localhost.{}.svc", ns.0);
    let controller = KubeController::start_with(
        work,
        &ns.0,
        &[
            "--redis-url",
            redis_url,
            "--api-service",
            TOKENS_API_SERVICE,
            "--tls-san",
            &san,
        ],
    )
    .await;
    let ns_name = ns.0.clone();
    // Accepted, not Ready: no sidecar holds it here, so it is not Programmed.
    eventually(SETTLE, "the application is accepted", || {
        let accepted = condition(&ns_name, "oauthapplication/sampleapp", "Accepted", "status");
        async move { accepted == "True" }
    })
    .await;
    let api_service = TokensApiService::register(&ns.0, controller.admin);
    (controller, api_service)
}

/// An OAuthToken to `kubectl create`: a token exported from IAM.
fn token_manifest(id: &str, access_token: &str, user: &str) -> String {
    format!(
        "apiVersion: tokens.oauth.tollgate.dev/v1alpha1\nkind: OAuthToken\nmetadata: {{name: {id}}}\nspec:\n  accessToken: {access_token}\n  clientId: clientid\n  service: sampleirisservice\n  authenticatedUserid: \"{user}\"\n  scope: read\n"
    )
}

fn kubectl_as(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    all.extend_from_slice(args);
    kubectl(&all, stdin)
}

/// `kubectl` lists (table and JSON), selects, gets, imports, deletes and bulk-deletes tokens
/// through the API server; a deleted token is refused by the sidecar; with Redis down, a list
/// is a 503 ServiceUnavailable (what `tollgate check` looks for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn kubectl_lists_imports_and_revokes_tokens_through_the_api_server() {
    let ns = Namespace::new();
    let mut redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    apply_ok(&ns.0, &article(upstream.port));
    let (controller, _api_service) = tokens_api_controller(work.path(), &ns, &redis.url()).await;

    // Discovery: kubectl knows the resource and its short name.
    let resources = kubectl_ok(&["api-resources", "--api-group=tokens.oauth.tollgate.dev"]);
    assert!(
        resources.contains("oauthtokens")
            && resources.contains("oat")
            && resources.contains("OAuthToken"),
        "{resources}"
    );

    // create -f: an import, refused the second time, and refused when it names no application.
    let id = "6c1a3e0b-8f0d-4c55-9f3b-3a2b1c0d9e8f";
    let secret_value = "imported-by-kubectl-0001";
    let manifest = token_manifest(id, secret_value, "7");
    let created = kubectl(&["create", "-n", &ns.0, "-f", "-"], Some(&manifest));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let again = kubectl(&["create", "-n", &ns.0, "-f", "-"], Some(&manifest));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("AlreadyExists"), "{stderr}");
    let bad = token_manifest("6c1a3e0b-8f0d-4c55-9f3b-000000000000", "x", "7")
        .replace("clientId: clientid", "clientId: nobody");
    let refused = kubectl(&["create", "-n", &ns.0, "-f", "-"], Some(&bad));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("is invalid") && stderr.contains("spec.clientId"),
        "{stderr}"
    );

    // The sidecar accepts the imported token.
    let sidecar = controller
        .sidecar_for(&ns.0, "iris-0", work.path())
        .redis(&redis.url())
        .start()
        .await;
    assert_eq!(
        sidecar
            .get_with_token("/event/1", secret_value)
            .await
            .status(),
        200
    );

    // get: the table kubectl prints, JSON, a field selector, one token.
    let table = kubectl_ok(&["get", "oauthtokens", "-n", &ns.0]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "CONSUMER", "CLIENT", "USER", "SCOPE", "EXPIRES", "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..5], [id, "clientapp", "clientid", "7", "read"]);
    let listed: Value =
        serde_json::from_str(&kubectl_ok(&["get", "oat", "-n", &ns.0, "-o", "json"])).unwrap();
    assert_eq!(listed["items"][0]["metadata"]["name"], id);
    assert_eq!(listed["items"][0]["spec"]["service"], "sampleirisservice");
    let everything = kubectl_ok(&["get", "oauthtokens", "-A", "-o", "yaml"]);
    assert!(!everything.contains(secret_value), "a token value is shown");
    let selected = kubectl_ok(&[
        "get",
        "oauthtokens",
        "-n",
        &ns.0,
        "--field-selector",
        "spec.authenticatedUserid=7",
        "-o",
        "name",
    ]);
    assert_eq!(
        selected.trim(),
        format!("oauthtoken.tokens.oauth.tollgate.dev/{id}")
    );
    let none = kubectl(
        &[
            "get",
            "oauthtokens",
            "-n",
            &ns.0,
            "--field-selector",
            "spec.clientId=other",
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&none.stderr).contains("No resources found"));
    let unknown = kubectl(
        &[
            "get",
            "oauthtokens",
            "-n",
            &ns.0,
            "--field-selector",
            "spec.secret=x",
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("field label not supported: spec.secret")
    );
    let consumer = field(&ns.0, &format!("oauthtoken/{id}"), ".spec.consumer");
    assert_eq!(consumer, "clientapp");
    let missing = kubectl(
        &[
            "get",
            "oauthtoken",
            "-n",
            &ns.0,
            "0b7c1f0e-58a5-4c4e-9a3c-000000000001",
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));

    // delete one: a dry run keeps it, a delete revokes it on the sidecar.
    kubectl_ok(&["delete", "oauthtoken", "-n", &ns.0, id, "--dry-run=server"]);
    assert_eq!(
        sidecar
            .get_with_token("/event/1", secret_value)
            .await
            .status(),
        200
    );
    let deleted = kubectl_ok(&["delete", "oauthtoken", "-n", &ns.0, id]);
    assert!(deleted.contains("deleted"), "{deleted}");
    eventually(SETTLE, "the sidecar refuses the deleted token", || async {
        sidecar
            .get_with_token("/event/1", secret_value)
            .await
            .status()
            == 401
    })
    .await;

    // delete --all: every token of the namespace.
    for (n, user) in [(1, "a"), (2, "b")] {
        let manifest = token_manifest(
            &format!("6c1a3e0b-8f0d-4c55-9f3b-00000000000{n}"),
            &format!("bulk-token-000{n}"),
            user,
        );
        kubectl_ok_stdin(&["create", "-n", &ns.0, "-f", "-"], &manifest);
    }
    assert_eq!(
        kubectl_ok(&["get", "oat", "-n", &ns.0, "-o", "name"])
            .lines()
            .count(),
        2
    );
    kubectl_ok(&["delete", "oauthtokens", "--all", "-n", &ns.0]);
    assert_eq!(
        kubectl_ok(&["get", "oat", "-n", &ns.0, "-o", "name"]).trim(),
        ""
    );
    eventually(
        SETTLE,
        "the sidecar refuses the bulk-deleted tokens",
        || async {
            sidecar
                .get_with_token("/event/1", "bulk-token-0001")
                .await
                .status()
                == 401
        },
    )
    .await;

    // Redis down: a Kubernetes 503 that names the cause.
    redis.kill();
    let raw = kubectl(
        &[
            "get",
            "--raw",
            &format!(
                "/apis/tokens.oauth.tollgate.dev/v1alpha1/namespaces/{}/oauthtokens?limit=1",
                ns.0
            ),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&raw.stderr);
    assert!(!raw.status.success());
    assert!(stderr.contains("ServiceUnavailable"), "{stderr}");
}

fn kubectl_ok_stdin(args: &[&str], stdin: &str) -> String {
    let output = kubectl(args, Some(stdin));
    assert!(
        output.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The chart's token roles, bound directly (a bare API server aggregates no ClusterRoles): a
/// ServiceAccount with the viewer role lists but cannot delete, and kubectl's error names the
/// verb; one with the admin role deletes in its namespace and not in another. Then the
/// README's RBAC commands, run as written, grant what they say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn the_chart_s_token_roles_grant_kubectl_their_verbs_in_their_namespace() {
    let ns = Namespace::new();
    let other = Namespace::new();
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    apply_ok(&ns.0, &article(upstream.port));
    let (_controller, _api_service) = tokens_api_controller(work.path(), &ns, &redis.url()).await;

    // The chart's two ClusterRoles, as rendered in deploy/tollgate.yaml.
    let deploy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tollgate.yaml"))
            .unwrap();
    let roles: String = deploy
        .split("\n---")
        .filter(|doc| doc.contains("kind: ClusterRole\n") && doc.contains("-token-"))
        .map(|doc| format!("{doc}\n---\n"))
        .collect();
    assert_eq!(roles.matches("kind: ClusterRole").count(), 2, "{roles}");
    kubectl_ok_stdin(&["apply", "-f", "-"], &roles);
    let bindings = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: token-viewer}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: token-admin}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: token-viewer}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tollgate-token-viewer}}
subjects: [{{kind: ServiceAccount, name: token-viewer, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: token-admin}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tollgate-token-admin}}
subjects: [{{kind: ServiceAccount, name: token-admin, namespace: {ns}}}]
"#,
        ns = ns.0
    );
    apply_ok(&ns.0, &bindings);
    let id = "6c1a3e0b-8f0d-4c55-9f3b-3a2b1c0d9e81";
    kubectl_ok_stdin(
        &["create", "-n", &ns.0, "-f", "-"],
        &token_manifest(id, "rbac-token-0001", "7"),
    );

    let viewer = service_account_kubeconfig(work.path(), &ns.0, "token-viewer");
    let listed = kubectl_as(&viewer, &["get", "oauthtokens", "-o", "name"], None);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains(id));
    let refused = kubectl_as(&viewer, &["delete", "oauthtoken", id], None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("Forbidden") && stderr.contains("cannot delete resource \"oauthtokens\""),
        "{stderr}"
    );
    let refused = kubectl_as(
        &viewer,
        &["create", "-f", "-"],
        Some(&token_manifest(
            "6c1a3e0b-8f0d-4c55-9f3b-3a2b1c0d9e82",
            "viewer-mint-0001",
            "x",
        )),
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot create resource"));

    let admin = service_account_kubeconfig(work.path(), &ns.0, "token-admin");
    let elsewhere = kubectl_as(&admin, &["delete", "oauthtoken", id, "-n", &other.0], None);
    let stderr = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(
        stderr.contains("cannot delete resource \"oauthtokens\"") && stderr.contains(&other.0),
        "{stderr}"
    );
    let listed_elsewhere = kubectl_as(&admin, &["get", "oauthtokens", "-n", &other.0], None);
    assert!(String::from_utf8_lossy(&listed_elsewhere.stderr).contains("cannot list resource"));
    let deleted = kubectl_as(&admin, &["delete", "oauthtoken", id], None);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert_eq!(
        kubectl_ok(&["get", "oat", "-n", &ns.0, "-o", "name"]).trim(),
        ""
    );

    // The README's RBAC commands, its namespaces (`team-a`, `default`) read as this test's.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let commands = readme_rbac_commands(&readme);
    assert!(commands.len() >= 2, "no RBAC commands found in the README");
    for command in &commands {
        let command = command
            .replace("team-a", &ns.0)
            .replace("-n default", &format!("-n {}", ns.0))
            .replace("=default:", &format!("={}:", ns.0));
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        kubectl_ok(&args);
    }
    for (verb, expected) in [("list", "yes"), ("delete", "yes"), ("create", "no")] {
        let answer = kubectl(
            &[
                "auth",
                "can-i",
                verb,
                "oauthtokens.tokens.oauth.tollgate.dev",
                "-n",
                &ns.0,
                "--as",
                "alice",
            ],
            None,
        );
        assert_eq!(
            String::from_utf8_lossy(&answer.stdout).trim(),
            expected,
            "alice {verb}"
        );
    }
}

/// The `kubectl create role|rolebinding|clusterrole…` commands of the README's token section,
/// each joined across its `\` continuations.
fn readme_rbac_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in readme.lines() {
        let line = line.trim();
        if current.is_empty()
            && !line.starts_with("kubectl create role")
            && !line.starts_with("kubectl create rolebinding")
        {
            continue;
        }
        current.push_str(line.trim_end_matches('\\'));
        current.push(' ');
        if !line.ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

// --- tollgate check ---

/// An install as the chart makes it, release `tollgate-e2e-<run>` in a fresh namespace: the
/// controller's Deployment (its status written by the test, as a kubelet and the Deployment
/// controller would on a real cluster), the chart's webhook configuration limited to the
/// test's pods, and the controller as a local process holding the chart's Lease and CA Secret.
struct CheckedInstall {
    // Dropped first: no webhook is left pointing at a stopped controller.
    _configuration: Owned,
    controller: KubeController,
    namespace: Namespace,
    release: String,
    ca_pem: String,
    redis: RedisServer,
    _work: tempfile::TempDir,
}

impl CheckedInstall {
    async fn start() -> Self {
        let namespace = Namespace::new();
        let ns = namespace.0.clone();
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let release = format!("tollgate-e2e-{run}");
        let controller_name = format!("{release}-controller");

        let labels = json!({"app.kubernetes.io/name": "tollgate", "app.kubernetes.io/instance": release, "app.kubernetes.io/component": "controller"});
        let deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": controller_name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "controller", "image": SIDECAR_IMAGE}]},
                },
            },
        });
        let output = create(&ns, &deployment, &[]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );

        // The chart's configuration, excluding this release's namespace as the chart would.
        let mut configuration = chart_webhook_configuration(&release, &run);
        for webhook in configuration["webhooks"].as_array_mut().unwrap() {
            for expression in webhook["namespaceSelector"]["matchExpressions"]
                .as_array_mut()
                .unwrap()
            {
                if expression["key"] == "kubernetes.io/metadata.name"
                    && expression["operator"] == "NotIn"
                {
                    expression["values"] =
                        json!(["kube-system", "kube-public", "kube-node-lease", ns]);
                }
            }
        }
        let output = kubectl(&["create", "-f", "-"], Some(&configuration.to_string()));
        assert!(
            output.status.success(),
            "the chart's webhook configuration was refused: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let configuration = Owned {
            namespace: None,
            object: format!("mutatingwebhookconfiguration/{release}"),
        };

        let redis = RedisServer::start();
        let host = webhook_host();
        let [port] = free_ports::<1>();
        let listen = SocketAddr::new(host, port).to_string();
        let ca_secret = format!("{ns}/{release}-ca");
        // The API server checks the tokens API's certificate for the ExternalName Service's
        // name (see `register_tokens_api`).
        let san = format!("localhost.{ns}.svc");
        let mut flags: Vec<String> = [
            "--tls-san",
            &san,
            "--redis-url",
            &redis.url(),
            "--lease-name",
            &controller_name,
            "--ca-secret",
            &ca_secret,
            "--webhook-listen",
            &listen,
            "--webhook-url",
            &format!("https://{listen}/mutate"),
            "--webhook-configuration",
            &release,
            "--sidecar-image",
            SIDECAR_IMAGE,
            "--sidecar-controller-url",
            SIDECAR_CONTROLLER_URL,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        if !host.is_loopback() {
            flags.extend(["--tls-san".to_owned(), host.to_string()]);
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let work = tempfile::tempdir().unwrap();
        let controller = KubeController::start_with(work.path(), &ns, &flags).await;
        let ca_pem = std::fs::read_to_string(&controller.ca).unwrap();
        let install = Self {
            _configuration: configuration,
            controller,
            namespace,
            release,
            ca_pem,
            redis,
            _work: work,
        };
        install.set_available(1);
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&install.ca_pem);
        let object = format!("mutatingwebhookconfiguration/{}", install.release);
        eventually(SETTLE, "the controller sets the webhooks' caBundle", || {
            let set = get(None, &object).is_some_and(|c| {
                c["webhooks"]
                    .as_array()
                    .is_some_and(|w| w.iter().all(|w| w["clientConfig"]["caBundle"] == ca_bundle))
            });
            async move { set }
        })
        .await;
        let lease = format!("lease/{}-controller", install.release);
        eventually(SETTLE, "the controller holds the chart's Lease", || {
            let held = field(&ns, &lease, ".spec.holderIdentity") == "e2e";
            async move { held }
        })
        .await;
        install
    }

    fn ns(&self) -> &str {
        &self.namespace.0
    }

    /// Writes the Deployment's status as the kubelet and the Deployment controller would:
    /// `available` of its one replica available.
    fn set_available(&self, available: u32) {
        let (status, reason) = if available > 0 {
            ("True", "MinimumReplicasAvailable")
        } else {
            ("False", "MinimumReplicasUnavailable")
        };
        let patch = json!({"status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [{
                "type": "Available",
                "status": status,
                "reason": reason,
                "message": "written by the test, as the Deployment controller would",
                "lastUpdateTime": "2026-01-01T00:00:00Z",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        }});
        kubectl_ok(&[
            "patch",
            "deployment",
            &format!("{}-controller", self.release),
            "-n",
            self.ns(),
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    }

    /// `tollgate check` of this release with `output` (`text` or `json`): its exit code and
    /// stdout.
    fn check(&self, output: &str) -> (Option<i32>, String) {
        let run = tollgate()
            .args([
                "check",
                "--namespace",
                self.ns(),
                "--release",
                &self.release,
            ])
            .args(["--resource-namespace", self.ns(), "--output", output])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            run.status.code(),
            String::from_utf8_lossy(&run.stdout).into_owned(),
        )
    }

    /// The JSON report, and the result of each check by description.
    fn check_json(&self) -> (Option<i32>, Value) {
        let (code, out) = self.check("json");
        let report: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("tollgate check --output json: {e}:\n{out}"));
        (code, report)
    }

    /// The APIService of the tokens API, as the chart makes it, routed to the controller
    /// through an ExternalName Service `localhost` (the route a bare API server can take).
    fn register_tokens_api(&self) -> Owned {
        apply_ok(
            self.ns(),
            "apiVersion: v1\nkind: Service\nmetadata: {name: localhost}\n\
             spec: {type: ExternalName, externalName: localhost}\n",
        );
        let api_service = json!({
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1alpha1.tokens.oauth.tollgate.dev"},
            "spec": {
                "group": "tokens.oauth.tollgate.dev",
                "version": "v1alpha1",
                "groupPriorityMinimum": 1000,
                "versionPriority": 15,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
                "service": {"namespace": self.ns(), "name": "localhost", "port": self.controller.admin},
            },
        });
        let output = kubectl(&["apply", "-f", "-"], Some(&api_service.to_string()));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Owned {
            namespace: None,
            object: "apiservice/v1alpha1.tokens.oauth.tollgate.dev".to_owned(),
        }
    }
}

/// The check of `report` whose description starts with `start`.
fn check_result<'a>(report: &'a Value, start: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["checks"].as_array().unwrap())
        .find(|c| c["description"].as_str().unwrap().starts_with(start))
        .unwrap_or_else(|| panic!("no check {start:?} in {report:#}"))
}

fn assert_result(report: &Value, start: &str, result: &str) {
    let check = check_result(report, start);
    assert_eq!(check["result"], result, "{start}: {check:#}\n{report:#}");
}

/// Needs the tokens API (the `aggapi` branch): the APIService is Available and the controller
/// answers a list of tokens from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn tollgate_check_passes_on_a_healthy_install() {
    let install = CheckedInstall::start().await;
    let ns = install.ns().to_owned();
    apply_ok(
        &ns,
        "apiVersion: oauth.tollgate.dev/v1alpha1\nkind: Consumer\n\
         metadata: {name: clientapp}\nspec: {username: ClientApp}\n",
    );
    eventually(SETTLE, "the Consumer is Ready", || {
        let ready = ready_condition(&ns, "consumer/clientapp", "status") == "True";
        async move { ready }
    })
    .await;
    let _api_service = install.register_tokens_api();
    eventually(SETTLE, "the APIService is Available", || {
        let available = field(
            "default",
            "apiservice/v1alpha1.tokens.oauth.tollgate.dev",
            ".status.conditions[?(@.type==\"Available\")].status",
        ) == "True";
        async move { available }
    })
    .await;

    let (code, report) = install.check_json();
    for check in report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["checks"].as_array().unwrap())
    {
        assert_eq!(check["result"], "success", "{check:#}\n{report:#}");
    }
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["success"], true);
    let (code, text) = install.check("text");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("✔ the controller reaches Redis\n"), "{text}");
    assert!(!text.contains('✖'), "{text}");

    // Redis stops: the tokens API's 503 is named.
    let mut install = install;
    install.redis.kill();
    let (code, report) = install.check_json();
    assert_eq!(code, Some(1), "{report:#}");
    let redis = check_result(&report, "the controller reaches Redis");
    assert_eq!(redis["result"], "failure", "{redis:#}");
    assert!(
        redis["details"]
            .to_string()
            .contains("the tokens API answers 503"),
        "{redis:#}"
    );
}

/// Each broken part fails the check that names it, and only that one: an unavailable
/// Deployment, a resource that is not Ready, a webhook that sees the release's namespace, a
/// stale caBundle, a deleted webhook configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn tollgate_check_names_the_broken_part_of_an_install() {
    let mut install = CheckedInstall::start().await;
    let ns = install.ns().to_owned();
    apply_ok(
        &ns,
        "apiVersion: oauth.tollgate.dev/v1alpha1\nkind: Consumer\n\
         metadata: {name: clientapp}\nspec: {username: ClientApp}\n---\n\
         apiVersion: oauth.tollgate.dev/v1alpha1\nkind: OAuthApplication\n\
         metadata: {name: brokenapp}\nspec:\n  consumerRef: {name: clientapp}\n  \
         clientId: brokenid\n  clientSecretRef: {name: missing-secret}\n",
    );
    eventually(SETTLE, "brokenapp is not Ready", || {
        let reason = ready_condition(&ns, "oauthapplication/brokenapp", "reason");
        async move { reason == "SecretNotFound" }
    })
    .await;

    // What works is said to work; the broken application is named with its reason.
    let (code, report) = install.check_json();
    assert_eq!(code, Some(1), "{report:#}");
    for works in [
        "the CRDs are installed",
        "the controller Deployment is available",
        "the controller's Lease has a live holder",
        "the controller's certificates are valid",
        "the injection webhook is registered",
        "the webhook's caBundle is the controller's CA",
        "the webhook never sees",
    ] {
        assert_result(&report, works, "success");
    }
    let resources = check_result(&report, "every OAuthService");
    assert_eq!(resources["result"], "failure", "{resources:#}");
    let details = resources["details"].to_string();
    assert!(
        details.contains(&format!(
            "{ns}/OAuthApplication brokenapp: Ready=False SecretNotFound"
        )),
        "{details}"
    );
    assert!(!details.contains("clientapp"), "{details}");
    assert!(resources["hint"].is_string());

    // The Deployment loses its replica.
    install.set_available(0);
    let (_, report) = install.check_json();
    let deployment = check_result(&report, "the controller Deployment is available");
    assert_eq!(deployment["result"], "failure");
    assert!(
        deployment["details"]
            .to_string()
            .contains("0 of 1 replicas available"),
        "{deployment:#}"
    );
    install.set_available(1);

    // The annotated webhook no longer excludes the release's namespace.
    let object = format!("mutatingwebhookconfiguration/{}", install.release);
    let configuration = get(None, &object).unwrap();
    let expressions = configuration["webhooks"][0]["namespaceSelector"]["matchExpressions"]
        .as_array()
        .unwrap();
    let index = expressions
        .iter()
        .position(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
        .unwrap();
    let patch = json!([{
        "op": "replace",
        "path": format!("/webhooks/0/namespaceSelector/matchExpressions/{index}/values"),
        "value": ["kube-system", "kube-public", "kube-node-lease"],
    }]);
    kubectl_ok(&["patch", &object, "--type=json", "-p", &patch.to_string()]);
    let (_, report) = install.check_json();
    let excluded = check_result(&report, "the webhook never sees");
    assert_eq!(excluded["result"], "failure", "{excluded:#}");
    assert_eq!(
        excluded["details"],
        json!([format!(
            "annotated.inject.tollgate.dev does not exclude {ns}"
        )])
    );

    // A stale caBundle: the controller is gone (it would restore it within a minute), and
    // the namespace webhook trusts another CA.
    install.controller.kill();
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()])
        .unwrap()
        .cert
        .pem();
    let patch = json!([{
        "op": "replace",
        "path": "/webhooks/1/clientConfig/caBundle",
        "value": base64::engine::general_purpose::STANDARD.encode(other),
    }]);
    kubectl_ok(&["patch", &object, "--type=json", "-p", &patch.to_string()]);
    let (code, report) = install.check_json();
    assert_eq!(code, Some(1));
    let ca_bundle = check_result(&report, "the webhook's caBundle");
    assert_eq!(ca_bundle["result"], "failure", "{ca_bundle:#}");
    let details = ca_bundle["details"].to_string();
    assert!(
        details.contains("namespace.inject.tollgate.dev: its caBundle is not the CA in Secret")
            && !details.contains("annotated.inject"),
        "{details}"
    );

    // The webhook configuration deleted: named, with the hint to restore it.
    kubectl_ok(&["delete", &object]);
    let (code, text) = install.check("text");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "✖ the injection webhook is registered\n    MutatingWebhookConfiguration {} not found",
            install.release
        )),
        "{text}"
    );
    assert!(text.contains("hint: `helm upgrade`"), "{text}");
}

/// `--pre` as a user who may create Secrets and Deployments in their namespace and nothing
/// else: each right is its own line, the missing ones fail. The namespace comes from the
/// kubeconfig's context. Without read rights, the install's checks fail with the API
/// server's reason rather than claiming the objects are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn tollgate_check_pre_names_the_rights_a_user_lacks() {
    let namespace = Namespace::new();
    let ns = namespace.0.as_str();
    kubectl_ok(&["create", "serviceaccount", "installer", "-n", ns]);
    kubectl_ok(&[
        "create",
        "role",
        "installer",
        "--verb=create",
        "--resource=secrets,deployments.apps",
        "-n",
        ns,
    ]);
    kubectl_ok(&[
        "create",
        "rolebinding",
        "installer",
        "--role=installer",
        &format!("--serviceaccount={ns}:installer"),
        "-n",
        ns,
    ]);
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(work.path(), ns, "installer");
    let check = |args: &[&str]| {
        let output = tollgate()
            .arg("check")
            .args(args)
            .args(["--output", "json"])
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
        (output.status.code(), report)
    };

    let (code, report) = check(&["--pre"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_result(&report, "the cluster runs Kubernetes 1.28", "success");
    for granted in [
        format!("can create secrets in namespace {ns}"),
        format!("can create deployments.apps in namespace {ns}"),
    ] {
        assert_result(&report, &granted, "success");
    }
    for denied in [
        "can create customresourcedefinitions.apiextensions.k8s.io".to_owned(),
        "can create mutatingwebhookconfigurations.admissionregistration.k8s.io".to_owned(),
        "can create apiservices.apiregistration.k8s.io".to_owned(),
        "can create namespaces".to_owned(),
        format!("can create services in namespace {ns}"),
    ] {
        let check = check_result(&report, &denied);
        assert_eq!(check["result"], "failure", "{check:#}");
        assert!(check["hint"].is_string());
    }

    let (code, report) = check(&["--release", "tollgate"]);
    assert_eq!(code, Some(1), "{report:#}");
    let crds = check_result(&report, "the CRDs are installed");
    assert!(
        crds["details"].to_string().contains("403 Forbidden"),
        "{crds:#}"
    );
    let deployment = check_result(&report, "the controller Deployment is available");
    assert!(
        deployment["details"].to_string().contains(&format!(
            "cannot read Deployment {ns}/tollgate-controller: 403 Forbidden"
        )),
        "{deployment:#}"
    );
}

// --- conditions, columns and Events (issue 18, part 2) ---

/// `kubectl get` shows READY and UP-TO-DATE (and with `-o wide`, ACCEPTED, PROGRAMMED and
/// the message naming the pod waited for); `Programmed` turns True once the pod's sidecar
/// holds the snapshot; a missing Secret is recorded once as a Warning Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: make e2e-cluster"]
async fn conditions_and_columns_follow_the_sidecars_and_refusals_are_events() {
    let ns = Namespace::new();
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    // The article with one pod, iris-0.
    let yaml: Vec<String> = article(upstream.port)
        .split("\n---\n")
        .filter(|document| !document.contains("name: iris-1"))
        .map(str::to_owned)
        .collect();
    apply_ok(&ns.0, &yaml.join("\n---\n"));
    let controller = KubeController::start(work.path(), &ns.0, &redis.url()).await;
    let ns_name = ns.0.clone();
    let service = "oauthservice/sampleirisservice";

    // Accepted, but no sidecar holds it yet: not ready, and `kubectl get` says so.
    eventually(SETTLE, "the service is accepted", || {
        let accepted = condition(&ns_name, service, "Accepted", "status");
        async move { accepted == "True" }
    })
    .await;
    assert_eq!(condition(&ns.0, service, "Programmed", "reason"), "Pending");
    assert_eq!(ready_condition(&ns.0, service, "status"), "False");
    let table = kubectl_ok(&["get", "oauthservices", "-n", &ns.0]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "REASON", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..4],
        ["sampleirisservice", "False", "0/1", "Pending"],
        "{table}"
    );
    let wide = kubectl_ok(&["get", "oauthservices", "-n", &ns.0, "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "REASON",
            "AGE",
            "ACCEPTED",
            "PROGRAMMED",
            "MESSAGE"
        ],
        "{wide}"
    );
    assert!(
        wide.contains("waiting for iris-0 (no snapshot yet)"),
        "{wide}"
    );

    // iris-0's sidecar receives its snapshot: every object it serves turns ready.
    let sidecar = controller
        .sidecar_for(&ns.0, "iris-0", work.path())
        .redis(&redis.url())
        .start()
        .await;
    for object in [service, "consumer/clientapp", "oauthapplication/sampleapp"] {
        eventually(SETTLE, &format!("{object} is programmed"), || {
            let programmed = condition(&ns_name, object, "Programmed", "status");
            async move { programmed == "True" }
        })
        .await;
        assert_eq!(ready_condition(&ns.0, object, "status"), "True", "{object}");
        assert_eq!(field(&ns.0, object, ".status.upToDate"), "1/1", "{object}");
    }
    let table = kubectl_ok(&["get", "oauthservices", "-n", &ns.0]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..4],
        ["sampleirisservice", "True", "1/1", "Ready"],
        "{table}"
    );
    // The sidecar serves what the status says it holds.
    let access = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sidecar.get_with_token("/event/1", &access).await.status(),
        200
    );

    // The broken application is refused, in its conditions and as one Warning Event, not
    // one per status write (there were several since: the pod counts changed).
    assert_eq!(
        ready_condition(&ns.0, "oauthapplication/brokenapp", "reason"),
        "SecretNotFound"
    );
    let events = |name: &str| {
        let list: Value = serde_json::from_str(&kubectl_ok(&[
            "get",
            "events",
            "-n",
            &ns.0,
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "json",
        ]))
        .unwrap();
        list["items"].as_array().unwrap().clone()
    };
    eventually(SETTLE, "the Ready event of the service", || {
        let found = events("sampleirisservice")
            .iter()
            .any(|e| e["reason"] == "Ready" && e["type"] == "Normal");
        async move { found }
    })
    .await;
    let refusals: Vec<Value> = events("brokenapp")
        .into_iter()
        .filter(|e| e["reason"] == "SecretNotFound")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    let refusal = &refusals[0];
    assert_eq!(refusal["type"], "Warning");
    assert_eq!(refusal["involvedObject"]["kind"], "OAuthApplication");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("`missing-secret`"),
        "{refusal}"
    );
    assert!(refusal["series"].is_null(), "recorded again: {refusal}");
    assert_eq!(refusal["reportingComponent"], "tollgate-controller");
}
