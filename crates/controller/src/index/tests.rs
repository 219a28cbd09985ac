//! Index tests, Linkerd style: fake objects in, snapshots per pod out. No API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, Time,
};
use k8s_openapi::jiff::Timestamp;
use tollgate_api::resources::{
    Consumer, ConsumerSpec, OAuthApplication, OAuthApplicationSpec, OAuthService, OAuthServiceSpec,
};

use super::*;

// --- fake objects ---

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.to_owned()),
        name: Some(name.to_owned()),
        generation: Some(1),
        ..Default::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn mk_pod(ns: &str, name: &str, pod_labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            labels: Some(labels(pod_labels)),
            ..meta(ns, name)
        },
        ..Default::default()
    }
}

fn match_labels(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(labels(pairs)),
        match_expressions: None,
    })
}

/// An OAuthService on `route` with the password grant, whose provision key is in Secret
/// `<name>-pk`. Read from JSON, so every field left out gets the CRD's default.
fn mk_service(ns: &str, name: &str, route: &str, selector: Option<LabelSelector>) -> OAuthService {
    let spec = OAuthServiceSpec {
        pod_selector: selector,
        ..serde_json::from_value(serde_json::json!({
            "upstream": {"port": 52773},
            "routes": [{"pathPrefix": route, "stripPath": false}],
            "oauth2": {
                "provisionKeySecretRef": {"name": format!("{name}-pk")},
                "enablePasswordGrant": true,
            },
        }))
        .unwrap()
    };
    OAuthService {
        metadata: meta(ns, name),
        ..OAuthService::new(name, spec)
    }
}

fn mk_consumer(ns: &str, name: &str) -> Consumer {
    Consumer {
        metadata: meta(ns, name),
        ..Consumer::new(name, ConsumerSpec::default())
    }
}

/// An application of `consumer` whose secret is in Secret `<name>-secret`.
fn mk_app(ns: &str, name: &str, consumer: &str, client_id: &str) -> OAuthApplication {
    let spec: OAuthApplicationSpec = serde_json::from_value(serde_json::json!({
        "consumerRef": {"name": consumer},
        "clientId": client_id,
        "clientSecretRef": {"name": format!("{name}-secret"), "key": "clientSecret"},
    }))
    .unwrap();
    OAuthApplication {
        metadata: meta(ns, name),
        ..OAuthApplication::new(name, spec)
    }
}

fn mk_secret(ns: &str, name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: meta(ns, name),
        string_data: Some(labels(&[(key, value)])),
        ..Default::default()
    }
}

fn created_at<T>(mut object: T, seconds: i64, meta: impl Fn(&mut T) -> &mut ObjectMeta) -> T {
    meta(&mut object).creation_timestamp = Some(Time(Timestamp::from_second(seconds).unwrap()));
    object
}

/// The article's objects in `ns`, with a service selecting `app=iris`.
fn article(index: &mut Index, ns: &str) {
    index.apply_secret(mk_secret(ns, "svc-pk", "provisionKey", "provisionkey"));
    index.apply_secret(mk_secret(ns, "app-secret", "clientSecret", "clientsecret"));
    index.apply_consumer(mk_consumer(ns, "clientapp"));
    index.apply_application(mk_app(ns, "app", "clientapp", "clientid"));
    index.apply_service(mk_service(
        ns,
        "svc",
        "/event",
        match_labels(&[("app", "iris")]),
    ));
}

fn current(rx: &mut SnapshotRx) -> Arc<Snapshot> {
    rx.borrow_and_update().snapshot.clone()
}

fn service_names(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.services.iter().map(|s| s.name.as_str()).collect()
}

fn status_of<'a>(statuses: &'a [ObjectStatus], kind: Kind, name: &str) -> &'a ObjectStatus {
    statuses
        .iter()
        .find(|s| s.kind == kind && s.object.name == name)
        .unwrap_or_else(|| panic!("no status for {kind:?} {name}: {statuses:#?}"))
}

// --- selection ---

#[test]
fn a_pod_gets_the_services_whose_selector_matches_it() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    index.apply_pod(&mk_pod("default", "iris-0", &[("app", "iris")]));
    index.apply_pod(&mk_pod("default", "web-0", &[("app", "web")]));

    let mut iris = index.subscribe("default", "iris-0").unwrap();
    let snapshot = current(&mut iris);
    assert_eq!(service_names(&snapshot), ["svc"]);
    assert!(
        snapshot.services[0]
            .oauth2
            .provision_key
            .matches("provisionkey")
    );
    let app = snapshot
        .application_by_client_id("default", "clientid")
        .unwrap();
    assert!(app.client_secret.as_ref().unwrap().matches("clientsecret"));

    // Not selected: consumers and applications, but no service to serve them on.
    let mut web = index.subscribe("default", "web-0").unwrap();
    let snapshot = current(&mut web);
    assert!(snapshot.services.is_empty());
    assert_eq!(snapshot.applications.len(), 1);

    assert!(index.subscribe("default", "unknown").is_none());
    assert!(index.subscribe("other", "iris-0").is_none());
}

#[test]
fn an_absent_or_empty_selector_selects_every_pod_of_its_namespace_only() {
    let mut index = Index::new(1);
    index.apply_secret(mk_secret("a", "all-pk", "provisionKey", "k"));
    index.apply_service(mk_service("a", "all", "/all", None));
    index.apply_secret(mk_secret("a", "empty-pk", "provisionKey", "k"));
    index.apply_service(mk_service(
        "a",
        "empty",
        "/empty",
        Some(LabelSelector::default()),
    ));
    index.apply_pod(&mk_pod("a", "p", &[("whatever", "x")]));
    index.apply_pod(&mk_pod("b", "p", &[]));

    let mut a = index.subscribe("a", "p").unwrap();
    assert_eq!(service_names(&current(&mut a)), ["all", "empty"]);
    let mut b = index.subscribe("b", "p").unwrap();
    assert!(current(&mut b).services.is_empty());
}

#[test]
fn match_expressions_are_honoured() {
    let selector = LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![
            LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["api".into(), "web".into()]),
            },
            LabelSelectorRequirement {
                key: "canary".into(),
                operator: "DoesNotExist".into(),
                values: None,
            },
        ]),
    };
    assert!(selects(Some(&selector), &labels(&[("tier", "api")])));
    assert!(!selects(Some(&selector), &labels(&[("tier", "db")])));
    assert!(!selects(
        Some(&selector),
        &labels(&[("tier", "api"), ("canary", "1")])
    ));
    let not_in = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "NotIn".into(),
            values: Some(vec!["db".into()]),
        }]),
        ..Default::default()
    };
    assert!(selects(Some(&not_in), &labels(&[])));
    assert!(!selects(Some(&not_in), &labels(&[("tier", "db")])));
    let typo = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "in".into(),
            values: Some(vec!["api".into()]),
        }]),
        ..Default::default()
    };
    assert!(!selects(Some(&typo), &labels(&[("tier", "api")])));
}

#[test]
fn relabelling_a_pod_moves_it_between_services() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    index.apply_pod(&mk_pod("default", "p", &[("app", "web")]));
    let mut rx = index.subscribe("default", "p").unwrap();
    assert!(current(&mut rx).services.is_empty());

    index.apply_pod(&mk_pod("default", "p", &[("app", "iris")]));
    assert!(rx.has_changed().unwrap());
    assert_eq!(service_names(&current(&mut rx)), ["svc"]);
}

#[test]
fn one_pod_selected_by_two_services_serves_both() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    index.apply_secret(mk_secret("default", "admin-pk", "provisionKey", "k2"));
    index.apply_service(mk_service(
        "default",
        "admin",
        "/admin",
        match_labels(&[("role", "backend")]),
    ));
    index.apply_pod(&mk_pod(
        "default",
        "p",
        &[("app", "iris"), ("role", "backend")],
    ));
    let mut rx = index.subscribe("default", "p").unwrap();
    assert_eq!(service_names(&current(&mut rx)), ["admin", "svc"]);

    let statuses = index.statuses();
    for name in ["svc", "admin"] {
        let status = status_of(&statuses, Kind::OAuthService, name);
        assert!(status.accepted, "{status:?}");
        assert_eq!(status.pods.selected, 1);
    }
}

// --- changes and versions ---

#[test]
fn versions_increase_and_only_changes_are_sent() {
    let mut index = Index::new(100);
    article(&mut index, "default");
    index.apply_pod(&mk_pod("default", "p", &[("app", "iris")]));
    let mut rx = index.subscribe("default", "p").unwrap();
    let first = current(&mut rx);
    assert!(first.version >= 100);

    // The same objects again, another namespace, an unrelated Secret: nothing new for p.
    article(&mut index, "default");
    index.apply_pod(&mk_pod("default", "p", &[("app", "iris")]));
    article(&mut index, "other");
    index.apply_pod(&mk_pod("other", "q", &[("app", "iris")]));
    index.apply_secret(mk_secret("default", "unrelated", "k", "v"));
    assert!(!rx.has_changed().unwrap());

    index.apply_consumer(Consumer {
        spec: ConsumerSpec {
            username: Some("ClientApp".into()),
            ..Default::default()
        },
        ..mk_consumer("default", "clientapp")
    });
    assert!(rx.has_changed().unwrap());
    let second = current(&mut rx);
    assert!(second.version > first.version);
    assert_eq!(second.consumers[0].username, "ClientApp");
    assert!(index.latest_version() >= second.version);
}

#[test]
fn a_changed_secret_reaches_the_pod() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    index.apply_pod(&mk_pod("default", "p", &[("app", "iris")]));
    let mut rx = index.subscribe("default", "p").unwrap();
    current(&mut rx);

    index.apply_secret(mk_secret(
        "default",
        "app-secret",
        "clientSecret",
        "rotated",
    ));
    assert!(rx.has_changed().unwrap());
    let snapshot = current(&mut rx);
    let secret = snapshot.applications[0].client_secret.clone().unwrap();
    assert!(secret.matches("rotated"));
    assert!(!secret.matches("clientsecret"));
}

#[test]
fn a_deleted_secret_takes_its_objects_out_and_says_why() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    index.apply_pod(&mk_pod("default", "p", &[("app", "iris")]));
    let mut rx = index.subscribe("default", "p").unwrap();
    current(&mut rx);

    index.delete_secret("default", "svc-pk");
    let snapshot = current(&mut rx);
    assert!(snapshot.services.is_empty());
    assert_eq!(snapshot.applications.len(), 1);
    let statuses = index.statuses();
    let status = status_of(&statuses, Kind::OAuthService, "svc");
    assert!(!status.accepted);
    assert_eq!(status.reason, "SecretNotFound");
    assert!(status.message.contains("`svc-pk`"), "{}", status.message);

    index.apply_secret(mk_secret("default", "svc-pk", "provisionKey", "back"));
    assert_eq!(service_names(&current(&mut rx)), ["svc"]);
    assert!(status_of(&index.statuses(), Kind::OAuthService, "svc").accepted);
}

#[test]
fn the_secret_hint_says_where_secrets_are_looked_for() {
    let mut index = Index::new(1).with_secret_hint("label it oauth.tollgate.dev/watch=true");
    index.apply_consumer(mk_consumer("default", "clientapp"));
    index.apply_application(mk_app("default", "app", "clientapp", "clientid"));
    let statuses = index.statuses();
    let status = status_of(&statuses, Kind::OAuthApplication, "app");
    assert_eq!(status.reason, "SecretNotFound");
    assert!(
        status
            .message
            .ends_with("(label it oauth.tollgate.dev/watch=true)"),
        "{}",
        status.message
    );
}

// --- conflicts and findings ---

#[test]
fn a_duplicate_client_id_goes_to_the_younger_application() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    let older = created_at(
        mk_app("default", "zeta", "clientapp", "clientid"),
        10,
        |a| &mut a.metadata,
    );
    let younger = created_at(
        mk_app("default", "alpha", "clientapp", "clientid"),
        20,
        |a| &mut a.metadata,
    );
    index.delete_application("default", "app");
    index.apply_secret(mk_secret("default", "zeta-secret", "clientSecret", "z"));
    index.apply_secret(mk_secret("default", "alpha-secret", "clientSecret", "a"));
    index.apply_application(younger);
    index.apply_application(older);
    index.apply_pod(&mk_pod("default", "p", &[("app", "iris")]));

    let mut rx = index.subscribe("default", "p").unwrap();
    let snapshot = current(&mut rx);
    let names: Vec<_> = snapshot
        .applications
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["zeta"]);

    let statuses = index.statuses();
    assert!(status_of(&statuses, Kind::OAuthApplication, "zeta").accepted);
    let alpha = status_of(&statuses, Kind::OAuthApplication, "alpha");
    assert!(!alpha.accepted);
    assert_eq!(alpha.reason, "DuplicateClientId");
    assert!(
        alpha
            .message
            .contains("already used by OAuthApplication `zeta`"),
        "{}",
        alpha.message
    );
}

#[test]
fn a_route_conflict_needs_a_pod_selected_by_both_services() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    index.apply_secret(mk_secret("default", "svc2-pk", "provisionKey", "k"));
    let younger = created_at(
        mk_service(
            "default",
            "svc2",
            "/event",
            match_labels(&[("app", "other")]),
        ),
        20,
        |s| &mut s.metadata,
    );
    index.apply_service(younger);
    index.apply_pod(&mk_pod("default", "iris", &[("app", "iris")]));
    index.apply_pod(&mk_pod("default", "other", &[("app", "other")]));

    // Different pods: the same route is no conflict.
    let statuses = index.statuses();
    assert!(status_of(&statuses, Kind::OAuthService, "svc").accepted);
    assert!(status_of(&statuses, Kind::OAuthService, "svc2").accepted);
    let mut other = index.subscribe("default", "other").unwrap();
    assert_eq!(service_names(&current(&mut other)), ["svc2"]);

    // One pod selected by both: the older service keeps the route.
    let mut both = mk_pod("default", "both", &[("app", "iris")]);
    index.apply_pod(&both);
    let mut svc = index.get_service("default", "svc");
    svc.metadata.creation_timestamp = Some(Time(Timestamp::from_second(10).unwrap()));
    svc.spec.pod_selector = None;
    index.apply_service(svc);
    both.metadata.labels = Some(labels(&[("app", "other")]));
    index.apply_pod(&both);

    let mut rx = index.subscribe("default", "both").unwrap();
    assert_eq!(service_names(&current(&mut rx)), ["svc"]);
    let statuses = index.statuses();
    assert!(status_of(&statuses, Kind::OAuthService, "svc").accepted);
    let svc2 = status_of(&statuses, Kind::OAuthService, "svc2");
    assert!(!svc2.accepted);
    assert_eq!(svc2.reason, "RouteConflict");
    assert!(
        svc2.message
            .contains("conflicts with OAuthService `default/svc`"),
        "{}",
        svc2.message
    );
}

#[test]
fn a_missing_consumer_and_no_grant_are_reported() {
    let mut index = Index::new(1);
    index.apply_secret(mk_secret("default", "app-secret", "clientSecret", "s"));
    index.apply_application(mk_app("default", "app", "nobody", "clientid"));
    let mut service = mk_service("default", "svc", "/event", None);
    service.spec.oauth2.enable_password_grant = false;
    index.apply_secret(mk_secret("default", "svc-pk", "provisionKey", "k"));
    index.apply_service(service);

    let statuses = index.statuses();
    let app = status_of(&statuses, Kind::OAuthApplication, "app");
    assert_eq!(app.reason, "ConsumerNotFound");
    assert!(
        app.message.contains("consumer `nobody` was not found"),
        "{}",
        app.message
    );
    assert_eq!(
        status_of(&statuses, Kind::OAuthService, "svc").reason,
        "NoGrantEnabled"
    );
}

/// Hands pod `name` its current snapshot, as the stream does.
fn deliver(index: &mut Index, ns: &str, name: &str) -> u64 {
    let version = index.subscribe(ns, name).unwrap().borrow().snapshot.version;
    index.delivered(ns, name, version);
    version
}

#[test]
fn statuses_carry_generation_and_pod_counts() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    let mut svc = index.get_service("default", "svc");
    svc.metadata.generation = Some(7);
    index.apply_service(svc);
    index.apply_pod(&mk_pod("default", "a", &[("app", "iris")]));
    index.apply_pod(&mk_pod("default", "b", &[("app", "iris")]));
    index.apply_pod(&mk_pod("default", "c", &[("app", "web")]));

    let status = status_of(&index.statuses(), Kind::OAuthService, "svc").clone();
    assert_eq!(status.generation, Some(7));
    assert!(status.accepted);
    assert_eq!(status.reason, ACCEPTED);
    assert_eq!(status.message, "configuration accepted");
    assert_eq!(
        status.pods,
        PodCounts {
            selected: 2,
            up_to_date: 0
        }
    );
    let names: Vec<_> = status.stale.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(status.stale[0].holds, None);
    // A Consumer is held by every injected pod of its namespace, selected or not.
    let consumer = status_of(&index.statuses(), Kind::Consumer, "clientapp").clone();
    assert_eq!(consumer.pods.selected, 3);

    let mut changes = index.changes();
    changes.borrow_and_update();
    deliver(&mut index, "default", "a");
    assert!(changes.has_changed().unwrap());
    let status = status_of(&index.statuses(), Kind::OAuthService, "svc").clone();
    assert_eq!(status.pods.up_to_date, 1);
    assert_eq!(status.stale.len(), 1);

    assert_eq!(
        index.sidecar_generations(),
        (1, 0, 2),
        "a latest; b and c none"
    );

    // A new provision key: the service's compiled form changed, so the pod is behind until
    // it is handed the new version.
    index.apply_secret(mk_secret("default", "svc-pk", "provisionKey", "new"));
    let status = status_of(&index.statuses(), Kind::OAuthService, "svc").clone();
    assert_eq!(status.pods.up_to_date, 0);
    assert_eq!(
        index.sidecar_generations(),
        (0, 1, 2),
        "a older; b and c none"
    );
    let a = status.stale.iter().find(|p| p.name == "a").unwrap();
    assert!(a.holds.unwrap() < a.latest, "{a:?}");
}

#[test]
fn a_pod_behind_on_one_object_still_holds_the_others() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    index.apply_pod(&mk_pod("default", "a", &[("app", "iris")]));
    deliver(&mut index, "default", "a");
    let statuses = index.statuses();
    for kind in [Kind::OAuthService, Kind::Consumer, Kind::OAuthApplication] {
        let status = statuses.iter().find(|s| s.kind == kind).unwrap();
        assert_eq!(status.pods.up_to_date, 1, "{status:?}");
    }

    // A new Consumer: the pod's snapshot changes, but its sidecar still serves the service,
    // the other consumer and the application as they are.
    index.apply_consumer(mk_consumer("default", "newcomer"));
    let statuses = index.statuses();
    assert_eq!(
        status_of(&statuses, Kind::Consumer, "newcomer")
            .pods
            .up_to_date,
        0
    );
    for (kind, name) in [
        (Kind::OAuthService, "svc"),
        (Kind::Consumer, "clientapp"),
        (Kind::OAuthApplication, "app"),
    ] {
        assert_eq!(
            status_of(&statuses, kind, name).pods.up_to_date,
            1,
            "{name}"
        );
    }

    // A new generation that compiles the same is held by the snapshot the pod already has...
    let mut consumer = index.get_consumer("default", "clientapp");
    consumer.metadata.generation = Some(2);
    consumer.metadata.labels = Some(labels(&[("team", "a")]));
    index.apply_consumer(consumer);
    deliver(&mut index, "default", "a");
    let statuses = index.statuses();
    assert_eq!(
        status_of(&statuses, Kind::Consumer, "clientapp")
            .pods
            .up_to_date,
        1
    );
    assert_eq!(
        status_of(&statuses, Kind::Consumer, "newcomer")
            .pods
            .up_to_date,
        1
    );

    // ...and one that changes it is not, until the pod is handed a version made after it.
    let mut consumer = index.get_consumer("default", "clientapp");
    consumer.metadata.generation = Some(3);
    consumer.spec.custom_id = Some("c-3".into());
    index.apply_consumer(consumer);
    let status = status_of(&index.statuses(), Kind::Consumer, "clientapp").clone();
    assert_eq!(status.pods.up_to_date, 0);
    assert_eq!(status.generation, Some(3));
    deliver(&mut index, "default", "a");
    assert_eq!(
        status_of(&index.statuses(), Kind::Consumer, "clientapp")
            .pods
            .up_to_date,
        1
    );
}

#[test]
fn a_status_names_a_few_stale_pods_and_counts_the_rest() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    for n in 0..10 {
        index.apply_pod(&mk_pod("default", &format!("p{n}"), &[("app", "iris")]));
    }
    deliver(&mut index, "default", "p0");
    let status = status_of(&index.statuses(), Kind::OAuthService, "svc").clone();
    assert_eq!(status.pods.selected, 10);
    assert_eq!(status.pods.up_to_date, 1);
    let names: Vec<_> = status.stale.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["p1", "p2", "p3"]);
    assert_eq!(names.len(), MAX_STALE_PODS_NAMED);
}

// --- pods coming and going ---

#[test]
fn deleting_a_pod_closes_its_channel() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    index.apply_pod(&mk_pod("default", "p", &[("app", "iris")]));
    let rx = index.subscribe("default", "p").unwrap();
    index.delete_pod("default", "p");
    assert!(rx.has_changed().is_err(), "the channel should be closed");
    assert!(index.subscribe("default", "p").is_none());
    assert_eq!(index.pod_count(), 0);
    let status = status_of(&index.statuses(), Kind::OAuthService, "svc").clone();
    assert_eq!(status.pods.selected, 0);
}

#[test]
fn resets_replace_a_kind_and_keep_surviving_pods_channels() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    index.apply_pod(&mk_pod("default", "keep", &[("app", "iris")]));
    index.apply_pod(&mk_pod("default", "gone", &[("app", "iris")]));
    let mut keep = index.subscribe("default", "keep").unwrap();
    let gone = index.subscribe("default", "gone").unwrap();
    current(&mut keep);

    index.reset_pods(&[mk_pod("default", "keep", &[("app", "iris")])]);
    assert!(gone.has_changed().is_err());
    assert!(!keep.has_changed().unwrap());

    index.reset_services(vec![]);
    assert!(current(&mut keep).services.is_empty());
    index.reset_services(vec![mk_service(
        "default",
        "svc",
        "/event",
        match_labels(&[("app", "iris")]),
    )]);
    assert_eq!(service_names(&current(&mut keep)), ["svc"]);

    index.reset_secrets(vec![]);
    index.reset_applications(vec![]);
    index.reset_consumers(vec![]);
    let snapshot = current(&mut keep);
    assert!(snapshot.services.is_empty() && snapshot.applications.is_empty());
    assert!(snapshot.consumers.is_empty());
}

/// With --watch-namespaces each namespace has its own watches: one relisting leaves the
/// other namespaces' objects and pods alone.
#[test]
fn a_scoped_reset_replaces_only_its_namespace() {
    let mut index = Index::new(1);
    article(&mut index, "team-a");
    article(&mut index, "team-b");
    index.apply_pod(&mk_pod("team-a", "a", &[("app", "iris")]));
    index.apply_pod(&mk_pod("team-b", "b", &[("app", "iris")]));
    let mut b = index.subscribe("team-b", "b").unwrap();
    let before = current(&mut b);
    assert!(!before.services.is_empty());

    index.reset_services_in(Some("team-a"), vec![]);
    index.reset_pods_in(Some("team-a"), &[]);
    assert!(index.subscribe("team-a", "a").is_none());
    assert!(!b.has_changed().unwrap(), "team-b is untouched");
    assert_eq!(current(&mut b), before);
    assert_eq!(index.namespaces_with_pods(), ["team-b".to_owned()].into());
    assert!(index.namespace_snapshot("team-a").services.is_empty());
    assert!(!index.namespace_snapshot("team-b").services.is_empty());
}

#[test]
fn objects_without_names_are_ignored_and_no_namespace_means_default() {
    let mut index = Index::new(1);
    let mut nameless = mk_consumer("default", "x");
    nameless.metadata.name = None;
    index.apply_consumer(nameless);
    let mut pod = mk_pod("default", "p", &[]);
    pod.metadata.namespace = None;
    index.apply_pod(&pod);
    assert!(index.subscribe("default", "p").is_some());
    assert!(index.statuses().is_empty());
}

impl Index {
    fn get_service(&self, namespace: &str, name: &str) -> OAuthService {
        self.namespaces[namespace].services[name].clone()
    }

    fn get_consumer(&self, namespace: &str, name: &str) -> Consumer {
        self.namespaces[namespace].consumers[name].clone()
    }
}

#[test]
fn replacing_everything_sends_one_consistent_snapshot() {
    let mut index = Index::new(1);
    article(&mut index, "default");
    index.apply_pod(&mk_pod("default", "p", &[("app", "iris")]));
    index.apply_pod(&mk_pod("default", "gone", &[("app", "iris")]));
    let mut rx = index.subscribe("default", "p").unwrap();
    let gone = index.subscribe("default", "gone").unwrap();
    let before = current(&mut rx);
    let latest = index.latest_version();

    // The service moves to a new route and a new provision key Secret in one change.
    let mut service = mk_service(
        "default",
        "svc",
        "/events",
        match_labels(&[("app", "iris")]),
    );
    service.spec.oauth2.provision_key_secret_ref.name = "new-pk".into();
    let resources = Resources {
        services: vec![service],
        consumers: vec![mk_consumer("default", "clientapp")],
        applications: vec![mk_app("default", "app", "clientapp", "clientid")],
        secrets: vec![
            mk_secret("default", "new-pk", "provisionKey", "k"),
            mk_secret("default", "app-secret", "clientSecret", "s"),
        ],
    };
    index.replace_all(resources, &[mk_pod("default", "p", &[("app", "iris")])]);
    let after = current(&mut rx);
    assert!(after.version > before.version);
    assert_eq!(
        index.latest_version(),
        latest + 1,
        "exactly one new version"
    );
    assert_eq!(after.services[0].routes[0].path_prefix, "/events");
    assert!(gone.has_changed().is_err());
}

// --- store keys ---

fn root_key() -> KeyPair {
    KeyPair {
        current: tollgate_store::StoreKey::new(vec![1; 32]).unwrap(),
        previous: Some(tollgate_store::StoreKey::new(vec![2; 32]).unwrap()),
    }
}

#[test]
fn each_pod_gets_the_store_key_of_its_own_namespace_only() {
    let root = root_key();
    let mut index = Index::new(1).with_store_key(root.clone());
    article(&mut index, "a");
    article(&mut index, "b");
    index.apply_pod(&mk_pod("a", "p", &[("app", "iris")]));
    index.apply_pod(&mk_pod("a", "q", &[("app", "web")]));
    index.apply_pod(&mk_pod("b", "p", &[("app", "iris")]));

    let key_of = |index: &Index, ns: &str, pod: &str| {
        let mut rx = index.subscribe(ns, pod).unwrap();
        current(&mut rx).store_key.clone().unwrap()
    };
    let a = key_of(&index, "a", "p");
    assert_eq!(a.namespace, "a");
    assert_eq!(a.current.0, root.for_namespace("a").current.expose());
    assert_eq!(
        a.previous.as_ref().unwrap().0,
        root.for_namespace("a").previous.unwrap().expose()
    );
    assert_eq!(
        key_of(&index, "a", "q"),
        a,
        "every pod of a namespace shares its key"
    );
    let b = key_of(&index, "b", "p");
    assert_eq!(b.namespace, "b");
    assert_ne!(b.current, a.current);
    for material in [&a.current, &b.current] {
        assert_ne!(material.0, root.current.expose(), "the root never leaves");
        assert_ne!(material.0, root.previous.as_ref().unwrap().expose());
    }
    let mut rx = index.subscribe("a", "p").unwrap();
    let shown = format!("{:?}", current(&mut rx));
    assert!(shown.contains("KeyMaterial(32 bytes)"), "{shown}");
}

#[test]
fn without_a_store_key_snapshots_carry_none() {
    let mut index = Index::new(1);
    article(&mut index, "a");
    index.apply_pod(&mk_pod("a", "p", &[("app", "iris")]));
    let mut rx = index.subscribe("a", "p").unwrap();
    assert!(current(&mut rx).store_key.is_none());
}

mod equivalence;

// --- sharing ---

#[test]
fn replicas_share_one_snapshot_and_namespaces_never_do() {
    let mut index = Index::new(1);
    article(&mut index, "a");
    article(&mut index, "b");
    index.apply_secret(mk_secret("a", "only-a-secret", "clientSecret", "x"));
    index.apply_application(mk_app("a", "only-a", "clientapp", "only-a-id"));
    for ns in ["a", "b"] {
        for pod in ["iris-0", "iris-1", "iris-2"] {
            index.apply_pod(&mk_pod(ns, pod, &[("app", "iris")]));
        }
        index.apply_pod(&mk_pod(ns, "web-0", &[("app", "web")]));
    }
    let held = |index: &Index, ns: &str, pod: &str| {
        index.subscribe(ns, pod).unwrap().borrow().snapshot.clone()
    };

    // Replicas: one Arc, one version.
    let a0 = held(&index, "a", "iris-0");
    for pod in ["iris-1", "iris-2"] {
        assert!(Arc::ptr_eq(&a0, &held(&index, "a", pod)));
    }
    // Another selection in the same namespace: its own snapshot, without the service.
    let web = held(&index, "a", "web-0");
    assert!(!Arc::ptr_eq(&a0, &web));
    assert_ne!(a0.version, web.version);
    assert!(web.services.is_empty());
    // The same selection in another namespace: never shared, and only that namespace's objects.
    let b0 = held(&index, "b", "iris-0");
    assert!(!Arc::ptr_eq(&a0, &b0));
    assert_ne!(a0.version, b0.version);
    assert!(b0.applications.iter().all(|app| app.namespace == "b"));
    assert!(b0.application_by_client_id("b", "only-a-id").is_none());
    assert!(a0.application_by_client_id("a", "only-a-id").is_some());

    // One change to namespace a: one new version for its replicas, none for b.
    index.apply_secret(mk_secret("a", "only-a-secret", "clientSecret", "rotated"));
    let a1 = held(&index, "a", "iris-0");
    assert!(a1.version > a0.version);
    assert!(Arc::ptr_eq(&a1, &held(&index, "a", "iris-2")));
    assert!(Arc::ptr_eq(&b0, &held(&index, "b", "iris-0")));

    // A relabelled replica joins the other selection's snapshot, and never goes back in
    // versions: that snapshot is published again under a newer one.
    let web_before = held(&index, "a", "web-0");
    index.apply_pod(&mk_pod("a", "iris-2", &[("app", "web")]));
    let moved = held(&index, "a", "iris-2");
    assert!(Arc::ptr_eq(&moved, &held(&index, "a", "web-0")));
    assert!(moved.version > a1.version);
    assert!(moved.services.is_empty());
    assert_eq!(
        Snapshot {
            version: 0,
            ..(*moved).clone()
        },
        Snapshot {
            version: 0,
            ..(*web_before).clone()
        }
    );
}

/// A watch's relist and a re-read of the files hand back every object; only the ones that
/// differ are compiled again (a new client secret costs a PBKDF2 hash: a relist of 10,000
/// unchanged applications must not cost 10,000).
#[test]
fn a_relist_or_a_re_read_compiles_only_what_changed() {
    let objects = |secret: &str| Resources {
        services: vec![mk_service(
            "default",
            "svc",
            "/event",
            match_labels(&[("app", "iris")]),
        )],
        consumers: vec![mk_consumer("default", "clientapp")],
        applications: (0..20)
            .map(|n| {
                mk_app(
                    "default",
                    &format!("app{n}"),
                    "clientapp",
                    &format!("id{n}"),
                )
            })
            .collect(),
        secrets: std::iter::once(mk_secret("default", "svc-pk", "provisionKey", "pk"))
            .chain((0..20).map(|n| {
                let value = if n == 7 { secret } else { "same" };
                mk_secret("default", &format!("app{n}-secret"), "clientSecret", value)
            }))
            .collect(),
    };
    let pods = [mk_pod("default", "p", &[("app", "iris")])];
    let mut index = Index::new(1);
    index.replace_all(objects("first"), &pods);
    let mut rx = index.subscribe("default", "p").unwrap();
    assert_eq!(current(&mut rx).applications.len(), 20);
    let compiled = index.applications_compiled();

    index.replace_all(objects("first"), &pods);
    let again = objects("first");
    index.reset_applications(again.applications);
    index.reset_secrets(again.secrets);
    index.reset_consumers(again.consumers);
    index.reset_services(again.services);
    assert_eq!(index.applications_compiled(), compiled, "nothing changed");

    index.replace_all(objects("rotated"), &pods);
    assert_eq!(
        index.applications_compiled(),
        compiled + 1,
        "one secret changed"
    );
    let rotated = current(&mut rx);
    let app7 = rotated
        .applications
        .iter()
        .find(|a| a.name == "app7")
        .unwrap();
    let app8 = rotated
        .applications
        .iter()
        .find(|a| a.name == "app8")
        .unwrap();
    assert_ne!(app7.client_secret, app8.client_secret);

    let fewer = objects("rotated");
    index.reset_applications(fewer.applications[1..].to_vec());
    assert_eq!(current(&mut rx).applications.len(), 19);
}
