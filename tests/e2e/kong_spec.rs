//! What the ports of Kong's oauth2 spec files share (`kong_schema_spec`, `kong_api_spec`,
//! `kong_invalidations_spec`): manifests of Kong's fixtures as tollgate resources, the
//! standalone loader run on them, and the requests Kong's specs send.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Controller, PodSidecarBuilder, RedisServer, Sidecar, Store, tollgate};

/// A Consumer of the article's namespace.
pub fn consumer(name: &str) -> String {
    format!(
        "---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: {name}
spec:
  username: {name}
"
    )
}

/// A confidential OAuthApplication `name` of `consumer`, its secret in a Secret of its own;
/// `spec` is more YAML lines of its spec (indented by 2).
pub fn application(
    name: &str,
    consumer: &str,
    client_id: &str,
    secret: &str,
    spec: &str,
) -> String {
    let spec: String = spec
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {}\n", l.trim_start()))
        .collect();
    format!(
        "---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata:
  name: {name}
spec:
  consumerRef:
    name: {consumer}
  clientId: {client_id}
  clientSecretRef:
    name: {name}-secret
{spec}---
apiVersion: v1
kind: Secret
metadata:
  name: {name}-secret
stringData:
  clientSecret: {secret}
"
    )
}

/// Runs `tollgate sidecar` on `yaml`, which must be refused before any port is bound: exit
/// 64 and one line. Returns that line.
pub fn refused(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifests.yaml");
    std::fs::write(&path, yaml).unwrap();
    let output = tollgate()
        .arg("sidecar")
        .arg("--manifests")
        .arg(&path)
        .env_remove("TOLLGATE_REDIS_URL")
        .env_remove("TOLLGATE_MANIFESTS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one message: {stderr}"
    );
    assert!(stderr.contains(&path.display().to_string()) || stderr.contains("--manifests"));
    stderr
}

/// `tollgate crdgen`, parsed: the three CRDs as users `kubectl apply` them.
#[cfg(feature = "control-plane")]
pub fn crds() -> Vec<Value> {
    let output = tollgate().arg("crdgen").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    text.split("---\n")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| serde_yaml::from_str(doc).unwrap())
        .collect()
}

/// The `spec.versions[0]` schema of the CRD of `kind`.
#[cfg(feature = "control-plane")]
pub fn crd_schema(kind: &str) -> Value {
    crds()
        .into_iter()
        .find(|crd| crd["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))["spec"]["versions"][0]["schema"]
        ["openAPIV3Schema"]
        .clone()
}

/// POSTs `body` as JSON; the status and the body, JSON when it parses.
pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = client.post(url).json(body).send().await.unwrap();
    status_and_body(response).await
}

pub async fn status_and_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The client_credentials grant of `client_id` at the route `/event`.
pub async fn client_credentials(sidecar: &Sidecar, client_id: &str, secret: &str) -> (u16, Value) {
    let body = json!({"grant_type": "client_credentials", "client_id": client_id,
                      "client_secret": secret});
    post(&sidecar.client, &sidecar.url("/event/oauth2/token"), &body).await
}

/// Kong's `provision_code`: the authorize endpoint's code for `client_id`, or its refusal.
pub async fn provision_code(sidecar: &Sidecar, client_id: &str) -> Result<String, (u16, Value)> {
    let body = json!({"provision_key": "provisionkey", "client_id": client_id,
                      "response_type": "code", "state": "hello",
                      "authenticated_userid": "userid123"});
    let (status, body) = post(
        &sidecar.client,
        &sidecar.url("/event/oauth2/authorize"),
        &body,
    )
    .await;
    let Some(uri) = body["redirect_uri"].as_str().filter(|_| status == 200) else {
        return Err((status, body));
    };
    let uri = reqwest::Url::parse(uri).unwrap();
    let code = uri.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v);
    Ok(code.expect("a code in the redirect URI").into_owned())
}

/// The `error` an authorize endpoint's refusal names, in its body or, once the client is
/// known, in the query of the redirect URI it answers with, as Kong does.
pub fn authorize_error(body: &Value) -> Option<String> {
    if let Some(error) = body["error"].as_str() {
        return Some(error.to_owned());
    }
    let uri = reqwest::Url::parse(body["redirect_uri"].as_str()?).ok()?;
    let error = uri.query_pairs().find(|(k, _)| k == "error");
    error.map(|(_, v)| v.into_owned())
}

/// The authorization_code grant's exchange of `code` by `client_id` with `secret`.
pub async fn exchange(
    sidecar: &Sidecar,
    code: &str,
    client_id: &str,
    secret: &str,
) -> (u16, Value) {
    let body = json!({"grant_type": "authorization_code", "code": code,
                      "client_id": client_id, "client_secret": secret});
    post(&sidecar.client, &sidecar.url("/event/oauth2/token"), &body).await
}

/// Kong's `GET /status/200?access_token=…`: the status a token gets on the proxy.
pub async fn status_with(sidecar: &Sidecar, token: &str) -> u16 {
    let url = reqwest::Url::parse_with_params(
        &sidecar.url("/event/status/200"),
        &[("access_token", token)],
    )
    .unwrap();
    sidecar
        .client
        .get(url)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

// === a controller fed by files, and one sidecar following it ===

/// Configuration changes reach the sidecar within this long (the file source polls every
/// second); only ever a ceiling.
pub const PROPAGATION: Duration = Duration::from_secs(30);

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: iris-0
  labels: {app: iris}
";

/// `tollgate controller --manifests DIR` and one sidecar of the pod `iris-0` fed by it, on
/// `store`: how a change to the resources reaches a running sidecar, as Kong's invalidations
/// do.
pub struct Fleet {
    pub sidecar: Sidecar,
    /// Kept running as long as the sidecar follows it.
    _controller: Controller,
    _redis: Option<RedisServer>,
    manifests: PathBuf,
    _work: tempfile::TempDir,
}

impl Fleet {
    pub async fn start(store: Store, resources: &str) -> Self {
        let work = tempfile::tempdir().unwrap();
        let manifests = work.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        std::fs::write(manifests.join("pods.yaml"), POD).unwrap();
        write_whole(&manifests, resources);
        let tokens = work.path().join("tokens");
        std::fs::write(&tokens, "token-iris-0 default/iris-0\n").unwrap();
        let redis = (store == Store::Redis).then(RedisServer::start);
        let redis_url = redis.as_ref().map(RedisServer::url);
        let controller =
            Controller::start(work.path(), &manifests, &tokens, redis_url.as_deref()).await;
        let mut pod = PodSidecarBuilder::new(
            &controller.stream_url(),
            &controller.ca,
            "default",
            "iris-0",
            "token-iris-0",
            &work.path().join("iris-0.snapshot.json"),
        )
        .admin_listen();
        if let Some(url) = &redis_url {
            pod = pod.redis(url);
        }
        let sidecar = pod.start().await;
        Self {
            sidecar,
            _controller: controller,
            _redis: redis,
            manifests,
            _work: work,
        }
    }

    /// Replaces the resources, as `kubectl apply --prune` would.
    pub fn apply(&self, resources: &str) {
        write_whole(&self.manifests, resources);
    }
}

/// Written whole and renamed, as a ConfigMap update is: the controller never reads half.
fn write_whole(dir: &Path, resources: &str) {
    let temporary = dir.join(".resources.yaml.tmp");
    std::fs::write(&temporary, resources).unwrap();
    std::fs::rename(&temporary, dir.join("resources.yaml")).unwrap();
}
