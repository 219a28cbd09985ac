//! The controller's calls to the API server, against kube-rs's `tower-test` mock: the exact
//! requests (method, path, query, body) of status patches, TokenReviews,
//! SubjectAccessReviews, the Lease and the CA Secret, and how their answers are read.

use std::collections::BTreeMap;
use std::future::Future;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tollgate_controller::auth::{
    Access, AccessReviewer, Identity, KubeReviewer, POD_NAME_EXTRA, TokenReviewer,
};
use tollgate_controller::index::{Kind, ObjectRef};
use tollgate_controller::kube::{self as kube_source, LEASE_DURATION};
use tower_test::mock::{self, Handle};

type ApiServer = Handle<Request<Body>, Response<Body>>;

/// A client whose API server is `serve`, which answers the requests the test expects.
fn mock_client<F, Fut>(serve: F) -> (Client, tokio::task::JoinHandle<()>)
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle));
    (Client::new(service, "default"), server)
}

/// The next request: its method, path and query, and its JSON body (`Null` when empty).
async fn next(
    api: &mut ApiServer,
) -> (
    Method,
    String,
    Value,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    let (request, send) = api.next_request().await.expect("no request came");
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, uri, body, send)
}

fn reply(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn api_status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
           "reason": reason, "message": reason})
}

// --- TokenReview ---

#[tokio::test]
async fn a_sidecar_token_is_reviewed_for_the_tollgate_audience() {
    let (client, server) = mock_client(|mut api| async move {
        let (method, uri, body, send) = next(&mut api).await;
        assert_eq!(method, Method::POST);
        assert_eq!(uri, "/apis/authentication.k8s.io/v1/tokenreviews?");
        assert_eq!(
            body,
            json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "metadata": {},
                "spec": {"token": "projected-token", "audiences": ["tollgate"]},
            })
        );
        send.send_response(reply(
            StatusCode::CREATED,
            json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "metadata": {}, "spec": {},
                "status": {
                    "authenticated": true,
                    "audiences": ["tollgate"],
                    "user": {
                        "username": "system:serviceaccount:default:iris",
                        "uid": "u-1",
                        "groups": ["system:serviceaccounts", "system:authenticated"],
                        "extra": {
                            POD_NAME_EXTRA: ["iris-0"],
                            "authentication.kubernetes.io/pod-uid": ["p-1"],
                        },
                    },
                },
            }),
        ));
    });
    let reviewer = KubeReviewer::new(client);
    let who = reviewer
        .review("projected-token", Some("tollgate"))
        .await
        .unwrap()
        .expect("authenticated");
    assert_eq!(who.username, "system:serviceaccount:default:iris");
    assert_eq!(who.pod(), Some(ObjectRef::new("default", "iris-0")));
    server.await.unwrap();
}

#[tokio::test]
async fn unauthenticated_or_wrong_audience_tokens_are_refused() {
    let (client, server) = mock_client(|mut api| async move {
        let (_, _, _, send) = next(&mut api).await;
        send.send_response(reply(
            StatusCode::CREATED,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                   "metadata": {}, "spec": {},
                   "status": {"authenticated": false, "error": "token expired"}}),
        ));
        // An API server that ignored the audience: refused all the same.
        let (_, _, _, send) = next(&mut api).await;
        send.send_response(reply(
            StatusCode::CREATED,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                   "metadata": {}, "spec": {},
                   "status": {"authenticated": true, "audiences": ["https://kubernetes.default.svc"],
                              "user": {"username": "system:serviceaccount:default:iris"}}}),
        ));
        let (_, _, _, send) = next(&mut api).await;
        send.send_response(reply(StatusCode::FORBIDDEN, api_status(403, "Forbidden")));
    });
    let reviewer = KubeReviewer::new(client);
    assert!(
        reviewer
            .review("t", Some("tollgate"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        reviewer
            .review("t", Some("tollgate"))
            .await
            .unwrap()
            .is_none()
    );
    // The API server refusing the controller itself (RBAC) is an error, not "unauthenticated".
    assert!(reviewer.review("t", Some("tollgate")).await.is_err());
    server.await.unwrap();
}

// --- SubjectAccessReview ---

#[tokio::test]
async fn admin_rights_are_asked_on_oauthtokens_in_the_namespace() {
    let (client, server) = mock_client(|mut api| async move {
        let (method, uri, body, send) = next(&mut api).await;
        assert_eq!(method, Method::POST);
        assert_eq!(uri, "/apis/authorization.k8s.io/v1/subjectaccessreviews?");
        assert_eq!(
            body,
            json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "metadata": {},
                "spec": {
                    "user": "alice",
                    "uid": "a-1",
                    "groups": ["ops", "system:authenticated"],
                    "extra": {"scopes": ["x"]},
                    "resourceAttributes": {
                        "group": "tokens.oauth.tollgate.dev",
                        "resource": "oauthtokens",
                        "verb": "delete",
                        "namespace": "team-a",
                        "name": "0b7c1f0e-58a5-4c4e-9a3c-000000000001",
                    },
                },
            })
        );
        send.send_response(reply(
            StatusCode::CREATED,
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                   "metadata": {}, "spec": {}, "status": {"allowed": true}}),
        ));
        let (_, _, body, send) = next(&mut api).await;
        assert_eq!(body["spec"]["resourceAttributes"]["verb"], "list");
        assert!(body["spec"]["resourceAttributes"].get("name").is_none());
        send.send_response(reply(
            StatusCode::CREATED,
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                   "metadata": {}, "spec": {},
                   "status": {"allowed": false, "reason": "no RBAC policy matched"}}),
        ));
    });
    let reviewer = KubeReviewer::new(client);
    let alice = Identity {
        username: "alice".into(),
        uid: Some("a-1".into()),
        groups: vec!["ops".into(), "system:authenticated".into()],
        extra: BTreeMap::from([("scopes".to_owned(), vec!["x".to_owned()])]),
    };
    let delete = Access {
        verb: "delete",
        namespace: "team-a".into(),
        name: Some("0b7c1f0e-58a5-4c4e-9a3c-000000000001".into()),
    };
    assert!(reviewer.allowed(&alice, &delete).await.unwrap());
    let list = Access {
        verb: "list",
        namespace: "team-a".into(),
        name: None,
    };
    assert!(!reviewer.allowed(&alice, &list).await.unwrap());
    server.await.unwrap();
}

// --- status ---

#[tokio::test]
async fn a_refusal_is_recorded_as_a_warning_event_about_the_object() {
    let (client, server) = mock_client(|mut api| async move {
        let (method, uri, body, send) = next(&mut api).await;
        assert_eq!(method, Method::POST);
        assert_eq!(uri, "/apis/events.k8s.io/v1/namespaces/team-a/events?");
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["reason"], "SecretNotFound");
        assert_eq!(body["action"], "Accepted");
        assert_eq!(body["note"], "Secret `pk` was not found");
        assert_eq!(body["reportingController"], "tollgate-controller");
        assert_eq!(body["reportingInstance"], "controller-0");
        assert_eq!(
            body["regarding"],
            json!({"apiVersion": "oauth.tollgate.dev/v1alpha1", "kind": "OAuthService",
                   "namespace": "team-a", "name": "svc", "uid": "u-1"})
        );
        send.send_response(reply(StatusCode::CREATED, body));
    });
    let recorder = kube_source::recorder(client, "controller-0");
    let reference = kube_source::reference(
        Kind::OAuthService,
        &ObjectRef::new("team-a", "svc"),
        Some("u-1".into()),
    );
    let notice = tollgate_controller::status::Notice {
        warning: true,
        action: "Accepted",
        reason: "SecretNotFound".into(),
        note: "Secret `pk` was not found".into(),
    };
    let metrics = tollgate_controller::metrics::Metrics::new();
    kube_source::record(&recorder, &reference, &[notice], &metrics).await;
    server.await.unwrap();
}

#[tokio::test]
async fn status_is_written_with_server_side_apply_on_the_status_subresource() {
    let status = json!({
        "observedGeneration": 2,
        "conditions": [{"type": "Ready", "status": "False", "reason": "SecretNotFound",
                        "message": "Secret `pk` was not found", "observedGeneration": 2,
                        "lastTransitionTime": "2025-01-01T00:00:00Z"}],
        "selectedPods": 1,
        "upToDatePods": 0,
    });
    let expected = status.clone();
    let (client, server) = mock_client(|mut api| async move {
        let (method, uri, body, send) = next(&mut api).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            uri,
            "/apis/oauth.tollgate.dev/v1alpha1/namespaces/team-a/oauthservices/svc/status?&force=true&fieldManager=tollgate-controller"
        );
        assert_eq!(
            body,
            json!({"apiVersion": "oauth.tollgate.dev/v1alpha1", "kind": "OAuthService",
                   "status": expected})
        );
        send.send_response(reply(StatusCode::OK, json!({
            "apiVersion": "oauth.tollgate.dev/v1alpha1", "kind": "OAuthService",
            "metadata": {"name": "svc", "namespace": "team-a"},
            "spec": {"upstream": {"port": 1}, "routes": [{"pathPrefix": "/x"}],
                     "oauth2": {"provisionKeySecretRef": {"name": "pk"}, "enablePasswordGrant": true}},
        })));
        let (method, uri, body, send) = next(&mut api).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            uri,
            "/apis/oauth.tollgate.dev/v1alpha1/namespaces/default/oauthapplications/app/status?&force=true&fieldManager=tollgate-controller"
        );
        assert_eq!(body["kind"], "OAuthApplication");
        send.send_response(reply(StatusCode::NOT_FOUND, api_status(404, "NotFound")));
        let (_, uri, body, send) = next(&mut api).await;
        assert!(
            uri.starts_with(
                "/apis/oauth.tollgate.dev/v1alpha1/namespaces/default/consumers/c/status?"
            ),
            "{uri}"
        );
        assert_eq!(body["kind"], "Consumer");
        send.send_response(reply(
            StatusCode::OK,
            json!({
                "apiVersion": "oauth.tollgate.dev/v1alpha1", "kind": "Consumer",
                "metadata": {"name": "c", "namespace": "default"}, "spec": {},
            }),
        ));
    });
    kube_source::patch_status(
        &client,
        Kind::OAuthService,
        &ObjectRef::new("team-a", "svc"),
        &status,
    )
    .await
    .unwrap();
    let gone = kube_source::patch_status(
        &client,
        Kind::OAuthApplication,
        &ObjectRef::new("default", "app"),
        &status,
    )
    .await;
    assert!(matches!(gone, Err(kube::Error::Api(s)) if s.code == 404));
    kube_source::patch_status(
        &client,
        Kind::Consumer,
        &ObjectRef::new("default", "c"),
        &status,
    )
    .await
    .unwrap();
    server.await.unwrap();
}

// --- the Lease ---

#[tokio::test]
async fn a_missing_lease_is_created_and_then_renewed() {
    let (client, server) = mock_client(|mut api| async move {
        let (method, uri, _, send) = next(&mut api).await;
        assert_eq!(method, Method::GET);
        assert_eq!(
            uri,
            "/apis/coordination.k8s.io/v1/namespaces/tollgate-system/leases/tollgate-controller"
        );
        send.send_response(reply(StatusCode::NOT_FOUND, api_status(404, "NotFound")));
        let (method, uri, body, send) = next(&mut api).await;
        assert_eq!(method, Method::POST);
        assert_eq!(
            uri,
            "/apis/coordination.k8s.io/v1/namespaces/tollgate-system/leases?"
        );
        assert_eq!(body["metadata"]["name"], "tollgate-controller");
        assert_eq!(body["spec"]["holderIdentity"], "replica-a");
        assert_eq!(
            body["spec"]["leaseDurationSeconds"],
            LEASE_DURATION.as_secs()
        );
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        let created = body.clone();
        send.send_response(reply(StatusCode::CREATED, created.clone()));

        // Renewal: the Lease read back, replaced with its resourceVersion.
        let (method, _, _, send) = next(&mut api).await;
        assert_eq!(method, Method::GET);
        let mut stored = created;
        stored["metadata"]["resourceVersion"] = json!("42");
        send.send_response(reply(StatusCode::OK, stored));
        let (method, uri, body, send) = next(&mut api).await;
        assert_eq!(method, Method::PUT);
        assert_eq!(
            uri,
            "/apis/coordination.k8s.io/v1/namespaces/tollgate-system/leases/tollgate-controller?"
        );
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert_eq!(body["spec"]["holderIdentity"], "replica-a");
        send.send_response(reply(StatusCode::OK, body));
    });
    let api = kube::Api::namespaced(client, "tollgate-system");
    assert!(
        kube_source::try_lease(&api, "tollgate-controller", "replica-a")
            .await
            .unwrap()
    );
    assert!(
        kube_source::try_lease(&api, "tollgate-controller", "replica-a")
            .await
            .unwrap()
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_lease_held_by_another_replica_is_left_alone_and_a_lost_race_is_no_error() {
    let (client, server) = mock_client(|mut api| async move {
        let now = k8s_openapi::jiff::Timestamp::now();
        let (_, _, _, send) = next(&mut api).await;
        send.send_response(reply(StatusCode::OK, json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "tollgate-controller", "namespace": "tollgate-system", "resourceVersion": "7"},
            "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 15,
                     "renewTime": now.to_string()},
        })));
        // Expired: taken, but another replica replaced it first (409).
        let (_, _, _, send) = next(&mut api).await;
        send.send_response(reply(StatusCode::OK, json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "tollgate-controller", "namespace": "tollgate-system", "resourceVersion": "8"},
            "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 15,
                     "renewTime": "2020-01-01T00:00:00.000000Z", "leaseTransitions": 3},
        })));
        let (method, _, body, send) = next(&mut api).await;
        assert_eq!(method, Method::PUT);
        assert_eq!(body["spec"]["holderIdentity"], "replica-a");
        assert_eq!(body["spec"]["leaseTransitions"], 4);
        send.send_response(reply(StatusCode::CONFLICT, api_status(409, "Conflict")));
    });
    let api = kube::Api::namespaced(client, "tollgate-system");
    assert!(
        !kube_source::try_lease(&api, "tollgate-controller", "replica-a")
            .await
            .unwrap()
    );
    assert!(
        !kube_source::try_lease(&api, "tollgate-controller", "replica-a")
            .await
            .unwrap()
    );
    server.await.unwrap();
}

// --- the CA's Secret ---

#[tokio::test]
async fn the_ca_is_made_and_stored_once_then_read_back() {
    let (client, server) = mock_client(|mut api| async move {
        let (method, uri, _, send) = next(&mut api).await;
        assert_eq!(method, Method::GET);
        assert_eq!(
            uri,
            "/api/v1/namespaces/tollgate-system/secrets/tollgate-ca"
        );
        send.send_response(reply(StatusCode::NOT_FOUND, api_status(404, "NotFound")));
        let (method, uri, body, send) = next(&mut api).await;
        assert_eq!(method, Method::POST);
        assert_eq!(uri, "/api/v1/namespaces/tollgate-system/secrets?");
        assert_eq!(body["metadata"]["name"], "tollgate-ca");
        assert!(body["data"]["ca.crt"].is_string() && body["data"]["ca.key"].is_string());
        // Another replica won the race: the controller reads its CA instead.
        send.send_response(reply(
            StatusCode::CONFLICT,
            api_status(409, "AlreadyExists"),
        ));
        let (method, _, _, send) = next(&mut api).await;
        assert_eq!(method, Method::GET);
        let theirs = tollgate_controller::ca::Ca::generate().unwrap();
        let secret = kube_source::ca_secret("tollgate-ca", &theirs);
        let mut body = serde_json::to_value(&secret).unwrap();
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Secret");
        send.send_response(reply(StatusCode::OK, body));
    });
    let ca =
        kube_source::load_or_create_ca(&client, &ObjectRef::new("tollgate-system", "tollgate-ca"))
            .await
            .unwrap();
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    server.await.unwrap();
}

#[tokio::test]
async fn a_rotated_store_key_is_completed_once_and_a_lost_race_reads_the_winners() {
    use tollgate_controller::store_key::{self, CURRENT_KEY, PREVIOUS_KEY};
    use tollgate_store::{KeyPair, StoreKey};
    let key = |byte: u8| StoreKey::new(vec![byte; 32]).unwrap();
    let as_body = |keys: &KeyPair, resource_version: &str| {
        let mut body =
            serde_json::to_value(store_key::secret_of("tollgate-store-key", keys)).unwrap();
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Secret");
        body["metadata"]["resourceVersion"] = json!(resource_version);
        body
    };
    let winners = KeyPair {
        current: key(3),
        previous: Some(key(1)),
    };
    let winners_body = as_body(&winners, "8");
    let (client, server) = mock_client(move |mut api| async move {
        // Rotated: `previous` only. The controller completes it, guarded by what it read.
        let (method, uri, _, send) = next(&mut api).await;
        assert_eq!(method, Method::GET);
        assert_eq!(
            uri,
            "/api/v1/namespaces/tollgate-system/secrets/tollgate-store-key"
        );
        let mut rotated = as_body(&KeyPair::new(key(1)), "7");
        let old = rotated["data"][CURRENT_KEY].take();
        rotated["data"][PREVIOUS_KEY] = old;
        rotated["data"].as_object_mut().unwrap().remove(CURRENT_KEY);
        send.send_response(reply(StatusCode::OK, rotated));
        let (method, uri, body, send) = next(&mut api).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            uri,
            "/api/v1/namespaces/tollgate-system/secrets/tollgate-store-key?"
        );
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert!(body["data"][CURRENT_KEY].is_string());
        // Another replica completed it first: the controller reads its key.
        send.send_response(reply(StatusCode::CONFLICT, api_status(409, "Conflict")));
        let (method, _, _, send) = next(&mut api).await;
        assert_eq!(method, Method::GET);
        send.send_response(reply(StatusCode::OK, winners_body));
    });
    let keys = store_key::load_or_create(
        &client,
        &ObjectRef::new("tollgate-system", "tollgate-store-key"),
    )
    .await
    .unwrap();
    assert_eq!(keys, winners);
    server.await.unwrap();
}

// --- the webhook configuration ---

#[tokio::test]
async fn the_webhook_configuration_gets_the_ca_bundle_once() {
    let configuration = |bundle: Option<&str>| {
        let mut client_config = json!({"service": {"name": "tollgate-controller",
                                                    "namespace": "tollgate-system",
                                                    "path": "/mutate"}});
        if let Some(bundle) = bundle {
            client_config["caBundle"] = json!(bundle);
        }
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "tollgate"},
            "webhooks": [{
                "name": "annotated.inject.tollgate.dev",
                "clientConfig": client_config,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
            }],
        })
    };
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca);
    let expected_bundle = bundle.clone();
    let (client, server) = mock_client(|mut api| async move {
        let (method, uri, _, send) = next(&mut api).await;
        assert_eq!(method, Method::GET);
        assert_eq!(
            uri,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/tollgate"
        );
        send.send_response(reply(StatusCode::OK, configuration(None)));
        let (request, send) = api.next_request().await.unwrap();
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(
            request.headers()["content-type"],
            "application/json-patch+json"
        );
        assert_eq!(
            request.uri().to_string(),
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/tollgate?"
        );
        let body: Value =
            serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
        let ops = body.as_array().unwrap();
        assert!(
            ops.iter()
                .any(|op| op["path"] == "/webhooks/0/clientConfig/caBundle"
                    && op["value"] == expected_bundle.as_str()),
            "{body}"
        );
        send.send_response(reply(StatusCode::OK, configuration(Some(&expected_bundle))));
        // Already current: read, not patched.
        let (method, _, _, send) = next(&mut api).await;
        assert_eq!(method, Method::GET);
        send.send_response(reply(StatusCode::OK, configuration(Some(&expected_bundle))));
    });
    let api = kube::Api::all(client);
    assert!(
        kube_source::patch_webhook_configuration(&api, "tollgate", ca, None)
            .await
            .unwrap()
    );
    assert!(
        !kube_source::patch_webhook_configuration(&api, "tollgate", ca, None)
            .await
            .unwrap()
    );
    server.await.unwrap();
}
