//! Tests of the aggregated API's conventions, without a socket: the grammar, discovery, the
//! objects and Table rows, Status errors, field selectors, and each verb over a memory store.

use std::collections::HashMap;
use std::path::Path;

use http::Method;
use serde_json::{Value, json};
use tollgate_api::Snapshot;
use tollgate_store::{MemoryStore, TokenHash, TokenRecord, TokenStore};
use uuid::Uuid;

use crate::kube_objects::{self, TokenNames};
use crate::{Caller, IncludeObject, KubeRefusal, KubeRequest, Output, TokenContext, handle_kube};

const BASE: &str = "/apis/tokens.oauth.tollgate.dev/v1alpha1";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
/// 2026-01-01T00:00:00Z.
const NOW: u64 = 1_767_225_600_000;

fn parse(method: Method, path: &str, query: &str) -> Result<KubeRequest, KubeRefusal> {
    KubeRequest::parse(&method, path, Some(query), None)
}

#[test]
fn each_path_names_its_verb_namespace_and_name() {
    for (method, path, verb, namespace, name) in [
        (Method::GET, "/apis", None, "", None),
        (
            Method::GET,
            "/apis/tokens.oauth.tollgate.dev",
            None,
            "",
            None,
        ),
        (Method::GET, BASE, None, "", None),
        (
            Method::GET,
            &format!("{BASE}/oauthtokens") as &str,
            Some("list"),
            "",
            None,
        ),
        (
            Method::GET,
            &format!("{BASE}/namespaces/team-a/oauthtokens"),
            Some("list"),
            "team-a",
            None,
        ),
        (
            Method::GET,
            &format!("{BASE}/namespaces/team-a/oauthtokens/x"),
            Some("get"),
            "team-a",
            Some("x"),
        ),
        (
            Method::DELETE,
            &format!("{BASE}/namespaces/team-a/oauthtokens/x"),
            Some("delete"),
            "team-a",
            Some("x"),
        ),
        (
            Method::DELETE,
            &format!("{BASE}/namespaces/team-a/oauthtokens"),
            Some("deletecollection"),
            "team-a",
            None,
        ),
        (
            Method::POST,
            &format!("{BASE}/namespaces/team-a/oauthtokens"),
            Some("create"),
            "team-a",
            None,
        ),
    ] {
        let request = parse(method.clone(), path, "").unwrap();
        assert_eq!(
            (request.verb(), request.namespace(), request.name()),
            (verb, namespace, name),
            "{method} {path}"
        );
    }
}

#[test]
fn other_paths_methods_and_queries_are_refused_as_kubernetes_would() {
    let ns = format!("{BASE}/namespaces/team-a/oauthtokens");
    for (method, path, query, expected) in [
        (Method::GET, "/apis/other.group", "", "NotFound"),
        (
            Method::GET,
            "/apis/tokens.oauth.tollgate.dev/v1",
            "",
            "NotFound",
        ),
        (
            Method::GET,
            &format!("{BASE}/namespaces/Team/oauthtokens") as &str,
            "",
            "NotFound",
        ),
        (
            Method::GET,
            &format!("{BASE}/namespaces/a/pods"),
            "",
            "NotFound",
        ),
        (Method::GET, &format!("{ns}/x/y"), "", "NotFound"),
        (Method::PUT, &format!("{ns}/x"), "", "MethodNotAllowed"),
        (Method::PATCH, &format!("{ns}/x"), "", "MethodNotAllowed"),
        (Method::POST, "/apis", "", "MethodNotAllowed"),
        (
            Method::DELETE,
            &format!("{BASE}/oauthtokens"),
            "",
            "MethodNotAllowed",
        ),
        (Method::GET, &ns, "watch=true", "MethodNotAllowed"),
        (
            Method::GET,
            &ns,
            "fieldSelector=spec.secret%3Dx",
            "BadRequest",
        ),
        (Method::GET, &ns, "labelSelector=app%3Dx", "BadRequest"),
        (Method::GET, &ns, "limit=ten", "BadRequest"),
        (Method::DELETE, &ns, "dryRun=Some", "BadRequest"),
    ] {
        let refusal = parse(method.clone(), path, query).unwrap_err();
        let response = crate::kube_refusal(&refusal);
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["kind"], "Status", "{method} {path}?{query}");
        assert_eq!(body["reason"], expected, "{method} {path}?{query}: {body}");
        assert_eq!(body["code"], response.status().as_u16());
    }
    let refusal = parse(Method::GET, &ns, "fieldSelector=spec.secret%3Dx").unwrap_err();
    assert_eq!(
        refusal,
        KubeRefusal::BadRequest("field label not supported: spec.secret".into())
    );
}

#[test]
fn the_admin_api_keeps_its_paths_and_kubernetes_claims_the_rest_of_apis() {
    assert!(KubeRequest::claims("/apis"));
    assert!(KubeRequest::claims(
        "/apis/tokens.oauth.tollgate.dev/v1alpha1"
    ));
    // A namespace named `apis` in Kong's grammar.
    assert!(!KubeRequest::claims("/apis/oauth2_tokens"));
    assert!(!KubeRequest::claims("/apis/oauth2_tokens/x"));
    assert!(!KubeRequest::claims("/default/oauth2_tokens"));
    assert!(!KubeRequest::claims("/apisx"));
}

#[test]
fn tables_are_served_when_kubectl_asks_for_them() {
    let path = format!("{BASE}/namespaces/a/oauthtokens");
    let output = |accept: Option<&str>, query: &str| match KubeRequest::parse(
        &Method::GET,
        &path,
        Some(query),
        accept,
    )
    .unwrap()
    {
        KubeRequest::List { output, .. } => output,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        output(Some(TABLE), ""),
        Output::Table(IncludeObject::Metadata)
    );
    assert_eq!(
        output(Some(TABLE), "includeObject=Object"),
        Output::Table(IncludeObject::Object)
    );
    assert_eq!(
        output(Some(TABLE), "includeObject=None"),
        Output::Table(IncludeObject::None)
    );
    assert_eq!(output(Some("application/json"), ""), Output::Object);
    assert_eq!(output(None, ""), Output::Object);
    // v1beta1 alone is not served as a Table.
    assert_eq!(
        output(
            Some("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
            ""
        ),
        Output::Object
    );
}

#[test]
fn discovery_names_the_group_version_and_resource() {
    let groups = kube_objects::group_list();
    assert_eq!(groups["kind"], "APIGroupList");
    assert_eq!(groups["groups"][0]["name"], "tokens.oauth.tollgate.dev");
    assert_eq!(
        groups["groups"][0]["preferredVersion"]["groupVersion"],
        "tokens.oauth.tollgate.dev/v1alpha1"
    );
    assert_eq!(kube_objects::group()["kind"], "APIGroup");
    let resources = kube_objects::resource_list();
    assert_eq!(resources["kind"], "APIResourceList");
    assert_eq!(
        resources["groupVersion"],
        "tokens.oauth.tollgate.dev/v1alpha1"
    );
    let resource = &resources["resources"][0];
    assert_eq!(resource["name"], "oauthtokens");
    assert_eq!(resource["singularName"], "oauthtoken");
    assert_eq!(resource["kind"], "OAuthToken");
    assert_eq!(resource["namespaced"], true);
    assert_eq!(resource["shortNames"], json!(["oat"]));
    assert_eq!(
        resource["verbs"],
        json!(["create", "delete", "deletecollection", "get", "list"])
    );
    // `kubectl delete all --all` must not revoke tokens.
    assert!(
        !resource["categories"]
            .as_array()
            .unwrap()
            .contains(&json!("all"))
    );
}

fn record(namespace: &str, user: Option<&str>, client: &str) -> TokenRecord {
    TokenRecord {
        id: Uuid::new_v4(),
        namespace: namespace.into(),
        credential_id: Uuid::from_u128(1),
        client_id: client.into(),
        service_id: Some(Uuid::from_u128(2)),
        authenticated_userid: user.map(str::to_owned),
        scope: "read write".into(),
        expires_in: 3600,
        created_at: NOW - 300_000,
        ttl: 0,
    }
}

fn names() -> TokenNames {
    TokenNames {
        services: HashMap::from([(Uuid::from_u128(2), "sampleirisservice".to_owned())]),
        consumers: HashMap::from([(Uuid::from_u128(1), "clientapp".to_owned())]),
    }
}

#[test]
fn an_object_shows_what_the_admin_api_shows_and_never_a_token() {
    let record = record("team-a", Some("1"), "clientid");
    let object = kube_objects::token_object(&record, &names());
    assert_eq!(object["apiVersion"], "tokens.oauth.tollgate.dev/v1alpha1");
    assert_eq!(object["kind"], "OAuthToken");
    let metadata = &object["metadata"];
    assert_eq!(metadata["name"], record.id.to_string());
    assert_eq!(metadata["namespace"], "team-a");
    assert_eq!(metadata["creationTimestamp"], "2025-12-31T23:55:00Z");
    assert!(!metadata["resourceVersion"].as_str().unwrap().is_empty());
    // The uid is stable, and differs between namespaces.
    assert_eq!(
        metadata["uid"],
        json!(kube_objects::token_uid("team-a", record.id))
    );
    assert_ne!(
        kube_objects::token_uid("team-a", record.id),
        kube_objects::token_uid("team-b", record.id)
    );
    let spec = &object["spec"];
    assert_eq!(spec["service"], "sampleirisservice");
    assert_eq!(spec["consumer"], "clientapp");
    assert_eq!(spec["clientId"], "clientid");
    assert_eq!(spec["authenticatedUserid"], "1");
    assert_eq!(spec["scope"], "read write");
    assert_eq!(spec["expiresIn"], 3600);
    assert_eq!(spec["expiresAt"], "2026-01-01T00:55:00Z");
    let text = object.to_string();
    assert!(
        !text.contains("accessToken") && !text.contains("hash"),
        "{text}"
    );
}

#[test]
fn table_rows_hold_the_columns_kubectl_prints() {
    let mut never = record("team-a", None, "other");
    never.expires_in = 0;
    let mut expired = record("team-a", Some("2"), "clientid");
    expired.created_at = NOW - 7_200_000;
    let records = [record("team-a", Some("1"), "clientid"), never, expired];
    let table = kube_objects::table(&records, &names(), IncludeObject::Metadata, None, NOW);
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name", "Consumer", "Client", "User", "Scope", "Expires", "Age"
        ]
    );
    let cells = |i: usize| table["rows"][i]["cells"].clone();
    assert_eq!(
        cells(0),
        json!([
            records[0].id.to_string(),
            "clientapp",
            "clientid",
            "1",
            "read write",
            "55m",
            "5m"
        ])
    );
    assert_eq!(cells(1)[3], "<none>");
    assert_eq!(cells(1)[5], "never");
    assert_eq!(cells(2)[5], "expired");
    assert_eq!(cells(2)[6], "120m");
    let object = &table["rows"][0]["object"];
    assert_eq!(object["kind"], "PartialObjectMetadata");
    assert_eq!(object["metadata"]["namespace"], "team-a");
    assert!(object.get("spec").is_none());
    let full = kube_objects::table(&records, &names(), IncludeObject::Object, None, NOW);
    assert_eq!(full["rows"][0]["object"]["kind"], "OAuthToken");
    let bare = kube_objects::table(&records, &names(), IncludeObject::None, None, NOW);
    assert!(bare["rows"][0].get("object").is_none());
}

#[test]
fn ages_read_as_kubectl_prints_them() {
    for (seconds, expected) in [
        (0, "0s"),
        (119, "119s"),
        (130, "2m10s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (3 * 86_400 + 3600, "3d1h"),
        (100 * 86_400, "100d"),
        (3 * 365 * 86_400 + 86_400, "3y1d"),
    ] {
        assert_eq!(kube_objects::human_duration(seconds * 1000), expected);
    }
    assert_eq!(kube_objects::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(
        kube_objects::rfc3339(951_782_400_000),
        "2000-02-29T00:00:00Z"
    );
}

#[test]
fn status_errors_carry_kubernetes_reasons_codes_and_names() {
    let body = |response: http::Response<bytes::Bytes>| -> (u16, Value) {
        (
            response.status().as_u16(),
            serde_json::from_slice(response.body()).unwrap(),
        )
    };
    let (code, not_found) = body(kube_objects::not_found("abc"));
    assert_eq!(code, 404);
    assert_eq!(not_found["reason"], "NotFound");
    assert_eq!(
        not_found["message"],
        "oauthtokens.tokens.oauth.tollgate.dev \"abc\" not found"
    );
    assert_eq!(not_found["details"]["name"], "abc");
    let (code, forbidden) = body(kube_objects::forbidden(
        "bob",
        "delete",
        "team-a",
        Some("abc"),
    ));
    assert_eq!(code, 403);
    assert_eq!(forbidden["reason"], "Forbidden");
    assert_eq!(
        forbidden["message"],
        "oauthtokens.tokens.oauth.tollgate.dev \"abc\" is forbidden: User \"bob\" cannot delete resource \"oauthtokens\" in API group \"tokens.oauth.tollgate.dev\" in the namespace \"team-a\""
    );
    let (_, cluster) = body(kube_objects::forbidden("bob", "list", "", None));
    assert!(
        cluster["message"]
            .as_str()
            .unwrap()
            .ends_with("at the cluster scope")
    );
    let (code, unavailable) = body(kube_objects::store_unavailable());
    assert_eq!(
        (code, unavailable["reason"].as_str()),
        (503, Some("ServiceUnavailable"))
    );
}

#[test]
fn field_selectors_match_equal_and_unequal_terms() {
    let path = format!("{BASE}/namespaces/a/oauthtokens");
    let fields = |selector: &str| {
        let query = format!(
            "fieldSelector={}",
            selector.replace('=', "%3D").replace(',', "%2C")
        );
        match parse(Method::GET, &path, &query).unwrap() {
            KubeRequest::List { options, .. } => options.fields,
            other => panic!("{other:?}"),
        }
    };
    let one = record("a", Some("1"), "clientid");
    let matches = |selector: &str| kube_objects::matches(&one, &names(), &fields(selector));
    assert!(matches("spec.authenticatedUserid=1"));
    assert!(matches(
        "spec.authenticatedUserid==1,spec.clientId=clientid"
    ));
    assert!(!matches("spec.authenticatedUserid=1,spec.clientId=other"));
    assert!(matches("spec.service=sampleirisservice"));
    assert!(!matches("spec.service!=sampleirisservice"));
    assert!(matches(&format!("metadata.name={}", one.id)));
    assert!(matches("metadata.namespace=a"));
    assert!(!matches("metadata.namespace!=a"));
}

/// A context with one namespace's names, and no configuration to import against unless given.
struct Context(Snapshot);

impl TokenContext for Context {
    fn namespaces(&self) -> Vec<String> {
        vec!["team-b".into(), "team-a".into()]
    }
    fn names(&self, _namespace: &str) -> TokenNames {
        names()
    }
    fn configuration(&self, _namespace: &str) -> Snapshot {
        self.0.clone()
    }
}

async fn send(
    store: &MemoryStore,
    method: Method,
    path: &str,
    query: &str,
    body: &str,
) -> (u16, Value) {
    send_with(
        store,
        &Context(Snapshot::default()),
        method,
        path,
        query,
        body,
    )
    .await
}

async fn send_with(
    store: &MemoryStore,
    context: &Context,
    method: Method,
    path: &str,
    query: &str,
    body: &str,
) -> (u16, Value) {
    let request = KubeRequest::parse(&method, path, Some(query), None).unwrap();
    // The store keeps what is imported for its lifetime from now, by the wall clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let response = handle_kube(
        store,
        context,
        &request,
        body.as_bytes(),
        now,
        Caller::User("tester"),
    )
    .await;
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(response.body()).unwrap_or(Value::Null),
    )
}

async fn stored(store: &MemoryStore, record: &TokenRecord) {
    let hash = TokenHash::of(&format!("token-{}", record.id));
    store.insert(record, &hash, None).await.unwrap();
}

#[tokio::test]
async fn lists_page_across_namespaces_and_select_by_field() {
    let store = MemoryStore::new();
    for (ns, user) in [("team-a", "1"), ("team-a", "2"), ("team-b", "1")] {
        stored(&store, &record(ns, Some(user), "clientid")).await;
    }
    let all = format!("{BASE}/oauthtokens");
    let (code, list) = send(&store, Method::GET, &all, "", "").await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "OAuthTokenList");
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    let (_, mine) = send(
        &store,
        Method::GET,
        &all,
        "fieldSelector=spec.authenticatedUserid%3D1",
        "",
    )
    .await;
    let namespaces: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["team-a", "team-b"]);
    // Pages of one, followed by `continue`, see each token once.
    let mut seen = Vec::new();
    let mut query = "limit=1".to_owned();
    loop {
        let (code, page) = send(&store, Method::GET, &all, &query, "").await;
        assert_eq!(code, 200, "{page}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["metadata"]["name"].as_str().unwrap().to_owned());
        }
        match page["metadata"]["continue"].as_str() {
            Some(next) => query = format!("limit=1&continue={}", next.replace('/', "%2F")),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3);
    let (code, _) = send(&store, Method::GET, &all, "continue=nowhere%2F", "").await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn get_and_delete_answer_404_for_what_does_not_exist_and_dry_runs_revoke_nothing() {
    let store = MemoryStore::new();
    let one = record("team-a", Some("1"), "clientid");
    stored(&store, &one).await;
    let path = format!("{BASE}/namespaces/team-a/oauthtokens/{}", one.id);
    let (code, object) = send(&store, Method::GET, &path, "", "").await;
    assert_eq!(
        (code, object["metadata"]["name"].as_str()),
        (200, Some(one.id.to_string().as_str()))
    );
    // Another namespace's token is not there.
    let elsewhere = format!("{BASE}/namespaces/team-b/oauthtokens/{}", one.id);
    let (code, status) = send(&store, Method::GET, &elsewhere, "", "").await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
    let (code, _) = send(&store, Method::DELETE, &elsewhere, "", "").await;
    assert_eq!(code, 404);
    let (code, _) = send(
        &store,
        Method::GET,
        &format!("{BASE}/namespaces/team-a/oauthtokens/not-a-uuid"),
        "",
        "",
    )
    .await;
    assert_eq!(code, 404);
    // Dry runs, by query or by DeleteOptions, leave the token in place.
    let (code, _) = send(&store, Method::DELETE, &path, "dryRun=All", "").await;
    assert_eq!(code, 200);
    let body = r#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["All"]}"#;
    let (code, _) = send(&store, Method::DELETE, &path, "", body).await;
    assert_eq!(code, 200);
    let collection = format!("{BASE}/namespaces/team-a/oauthtokens");
    let (code, would) = send(&store, Method::DELETE, &collection, "dryRun=All", "").await;
    assert_eq!((code, would["items"].as_array().unwrap().len()), (200, 1));
    assert!(store.get("team-a", one.id).await.unwrap().is_some());
    // A real delete revokes it, once.
    let body = r#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background"}"#;
    let (code, _) = send(&store, Method::DELETE, &path, "", body).await;
    assert_eq!(code, 200);
    assert!(store.get("team-a", one.id).await.unwrap().is_none());
    let (code, _) = send(&store, Method::DELETE, &path, "", "").await;
    assert_eq!(code, 404);
    let (code, _) = send(&store, Method::DELETE, &path, "", "not json").await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn deletecollection_revokes_only_what_the_selector_matches() {
    let store = MemoryStore::new();
    let keep = record("team-a", Some("2"), "clientid");
    let other_ns = record("team-b", Some("1"), "clientid");
    for r in [&record("team-a", Some("1"), "clientid"), &keep, &other_ns] {
        stored(&store, r).await;
    }
    let collection = format!("{BASE}/namespaces/team-a/oauthtokens");
    let (code, deleted) = send(
        &store,
        Method::DELETE,
        &collection,
        "fieldSelector=spec.authenticatedUserid%3D1",
        "",
    )
    .await;
    assert_eq!((code, deleted["items"].as_array().unwrap().len()), (200, 1));
    assert!(store.get("team-a", keep.id).await.unwrap().is_some());
    assert!(store.get("team-b", other_ns.id).await.unwrap().is_some());
    let (_, deleted) = send(&store, Method::DELETE, &collection, "", "").await;
    assert_eq!(deleted["items"].as_array().unwrap().len(), 1);
    assert!(store.get("team-b", other_ns.id).await.unwrap().is_some());
}

const CONFIGURATION: &str = "apiVersion: v1
kind: Secret
metadata: {name: pk, namespace: team-a}
stringData: {provisionKey: provisionkey}
---
apiVersion: v1
kind: Secret
metadata: {name: appsecret, namespace: team-a}
stringData: {clientSecret: clientsecret}
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthService
metadata: {name: sampleirisservice, namespace: team-a, uid: 00000000-0000-0000-0000-000000000002}
spec:
  upstream: {port: 8080}
  routes: [{pathPrefix: /event}]
  oauth2: {enableClientCredentials: true, provisionKeySecretRef: {name: pk}}
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata: {name: clientapp, namespace: team-a}
spec: {username: ClientApp}
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata: {name: sampleapp, namespace: team-a}
spec:
  consumerRef: {name: clientapp}
  clientId: clientid
  clientSecretRef: {name: appsecret}
  redirectUris: [https://localhost/callback]
";

#[tokio::test]
async fn create_imports_with_today_s_checks_in_kubernetes_words() {
    let resources = tollgate_api::manifests::load_str(Path::new("t.yaml"), CONFIGURATION).unwrap();
    let context = Context(tollgate_api::compile(&resources).snapshot);
    let store = MemoryStore::new();
    let collection = format!("{BASE}/namespaces/team-a/oauthtokens");
    let id = "6c1a3e0b-8f0d-4c55-9f3b-3a2b1c0d9e8f";
    let token = |spec: Value| {
        json!({"apiVersion": "tokens.oauth.tollgate.dev/v1alpha1", "kind": "OAuthToken",
               "metadata": {"name": id}, "spec": spec})
        .to_string()
    };
    let good = token(
        json!({"accessToken": "imported-0001", "clientId": "clientid",
                            "service": "sampleirisservice", "authenticatedUserid": "7"}),
    );
    // A dry run stores nothing.
    let (code, answer) = send_with(
        &store,
        &context,
        Method::POST,
        &collection,
        "dryRun=All",
        &good,
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    assert!(
        store
            .get("team-a", Uuid::parse_str(id).unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let (code, created) = send_with(&store, &context, Method::POST, &collection, "", &good).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["name"], id);
    assert_eq!(created["spec"]["service"], "sampleirisservice");
    assert!(!created.to_string().contains("imported-0001"));
    let found = store
        .get("team-a", Uuid::parse_str(id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.authenticated_userid.as_deref(), Some("7"));
    // The same id again: AlreadyExists.
    let (code, status) = send_with(&store, &context, Method::POST, &collection, "", &good).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    // Bad imports: Invalid, with the field that is wrong.
    for (spec, field) in [
        (
            json!({"accessToken": "x", "clientId": "nobody"}),
            "spec.clientId",
        ),
        (
            json!({"accessToken": "", "clientId": "clientid"}),
            "spec.accessToken",
        ),
        (
            json!({"accessToken": "x", "clientId": "clientid", "service": "none"}),
            "spec.service",
        ),
        (
            json!({"accessToken": "x", "clientId": "clientid", "expiresIn": "soon"}),
            "spec.expiresIn",
        ),
        (
            json!({"accessToken": "x", "clientId": "clientid", "secret": 1}),
            "spec.secret",
        ),
        (json!({"clientId": "clientid"}), "spec"),
    ] {
        let body = json!({"metadata": {}, "spec": spec}).to_string();
        let (code, status) =
            send_with(&store, &context, Method::POST, &collection, "", &body).await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (422, Some("Invalid")),
            "{spec}: {status}"
        );
        assert_eq!(
            status["details"]["causes"][0]["field"], field,
            "{spec}: {status}"
        );
    }
    // A mistyped token value is not echoed.
    let body =
        json!({"metadata": {}, "spec": {"accessToken": 918_273_645, "clientId": "clientid"}})
            .to_string();
    let (code, status) = send_with(&store, &context, Method::POST, &collection, "", &body).await;
    assert_eq!(code, 422);
    assert!(!status.to_string().contains("918273645"), "{status}");
    let body = json!({"metadata": {"name": "not-a-uuid"}, "spec": {"accessToken": "x", "clientId": "clientid"}}).to_string();
    let (code, status) = send_with(&store, &context, Method::POST, &collection, "", &body).await;
    assert_eq!(
        (code, status["details"]["causes"][0]["field"].as_str()),
        (422, Some("metadata.name"))
    );
    let body = json!({"metadata": {"namespace": "team-b"}, "spec": {"accessToken": "x", "clientId": "clientid"}}).to_string();
    let (code, _) = send_with(&store, &context, Method::POST, &collection, "", &body).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn a_table_get_is_one_row() {
    let store = MemoryStore::new();
    let one = record("team-a", Some("1"), "clientid");
    stored(&store, &one).await;
    let path = format!("{BASE}/namespaces/team-a/oauthtokens/{}", one.id);
    let request = KubeRequest::parse(&Method::GET, &path, None, Some(TABLE)).unwrap();
    let response = handle_kube(
        &store,
        &Context(Snapshot::default()),
        &request,
        b"",
        NOW,
        Caller::User("tester"),
    )
    .await;
    let table: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["rows"].as_array().unwrap().len(), 1);
}
