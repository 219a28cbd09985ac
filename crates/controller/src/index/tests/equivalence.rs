//! The incremental index against the whole compiler: a long pseudo-random sequence of applies
//! and deletes, and after every step each pod's snapshot and each object's status compared with
//! what `tollgate_api::compile` gives for the same objects from scratch.

use std::collections::{BTreeMap, BTreeSet};

use tollgate_api::compile::{CompileError, Reason};
use tollgate_api::resources::ClientSecretRef;
use tollgate_api::snapshot::ClientType;

use super::*;

const NAMESPACES: [&str; 2] = ["a", "b"];
const STEPS: usize = 1_500;

/// splitmix64: the same sequence on every run, so that a failure names a step to replay.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

fn with_age<T>(random: &mut Random, object: T, meta: impl Fn(&mut T) -> &mut ObjectMeta) -> T {
    // Few distinct ages: ties are settled by name, as the compiler does.
    let mut object = created_at(object, random.below(4) as i64, &meta);
    meta(&mut object).generation = Some(random.below(3) as i64 + 1);
    object
}

fn random_service(random: &mut Random, ns: &str) -> OAuthService {
    let name = random.pick(&["s0", "s1", "s2", "s3"]);
    let route = random.pick(&["/r0", "/r1", "/r2", "bad path"]);
    let selector = match random.below(3) {
        0 => None,
        1 => match_labels(&[("app", "x")]),
        _ => match_labels(&[("app", "y")]),
    };
    let mut service = mk_service(ns, name, route, selector);
    service.spec.oauth2.provision_key_secret_ref.name = random.pick(&["pk0", "pk1"]).to_owned();
    if random.below(2) == 0 {
        let extra = random.pick(&["/r0", "/r3"]);
        service
            .spec
            .routes
            .push(tollgate_api::resources::RouteSpec {
                path_prefix: extra.to_owned(),
                ..service.spec.routes[0].clone()
            });
    }
    with_age(random, service, |s| &mut s.metadata)
}

fn random_consumer(random: &mut Random, ns: &str) -> Consumer {
    let name = random.pick(&["c0", "c1", "c2"]);
    let mut consumer = mk_consumer(ns, name);
    consumer.spec.username = match random.below(4) {
        0 => Some(String::new()),
        1 => Some("shared".to_owned()),
        _ => None,
    };
    if random.below(2) == 0 {
        consumer.spec.tags = vec![format!("t{}", random.below(3))];
    }
    with_age(random, consumer, |c| &mut c.metadata)
}

fn random_application(random: &mut Random, ns: &str) -> OAuthApplication {
    let name = random.pick(&["app0", "app1", "app2", "app3", "app4", "app5"]);
    let consumer = random.pick(&["c0", "c1", "c2", "c9"]);
    let client_id = random.pick(&["id0", "id1", "id2", ""]);
    let mut application = mk_app(ns, name, consumer, client_id);
    match random.below(5) {
        0 => {
            application.spec.client_type = ClientType::Public;
            application.spec.client_secret_ref = None;
        }
        1 => application.spec.client_type = ClientType::Public,
        _ => {
            application.spec.client_secret_ref = Some(ClientSecretRef {
                name: random.pick(&["sec0", "sec1", "sec2"]).to_owned(),
                key: "clientSecret".to_owned(),
            });
        }
    }
    if random.below(3) == 0 {
        application.spec.name = Some(random.pick(&["Same", "Other"]).to_owned());
    }
    if random.below(6) == 0 {
        application.spec.redirect_uris = vec!["not a url".to_owned()];
    }
    with_age(random, application, |a| &mut a.metadata)
}

fn random_secret(random: &mut Random, ns: &str) -> Secret {
    let name = random.pick(&["sec0", "sec1", "sec2", "pk0", "pk1"]);
    let key = if name.starts_with("pk") {
        "provisionKey"
    } else {
        random.pick(&["clientSecret", "clientSecret", "other"])
    };
    let value = random.pick(&["v0", "v1", ""]);
    mk_secret(ns, name, key, value)
}

fn random_pod(random: &mut Random, ns: &str) -> Pod {
    let name = random.pick(&["p0", "p1", "p2", "p3", "p4"]);
    match random.below(3) {
        0 => mk_pod(ns, name, &[("app", "x")]),
        1 => mk_pod(ns, name, &[("app", "y")]),
        _ => mk_pod(ns, name, &[]),
    }
}

fn step(index: &mut Index, random: &mut Random) -> String {
    let ns = random.pick(&NAMESPACES);
    let delete = random.below(4) == 0;
    match (random.below(5), delete) {
        (0, false) => {
            let service = random_service(random, ns);
            let done = format!("apply service {ns}/{:?}", service.metadata.name);
            index.apply_service(service);
            done
        }
        (0, true) => {
            let name = random.pick(&["s0", "s1", "s2", "s3"]);
            index.delete_service(ns, name);
            format!("delete service {ns}/{name}")
        }
        (1, false) => {
            let consumer = random_consumer(random, ns);
            let done = format!("apply consumer {ns}/{:?}", consumer.metadata.name);
            index.apply_consumer(consumer);
            done
        }
        (1, true) => {
            let name = random.pick(&["c0", "c1", "c2"]);
            index.delete_consumer(ns, name);
            format!("delete consumer {ns}/{name}")
        }
        (2, false) => {
            let application = random_application(random, ns);
            let done = format!("apply application {ns}/{:?}", application.metadata.name);
            index.apply_application(application);
            done
        }
        (2, true) => {
            let name = random.pick(&["app0", "app1", "app2", "app3", "app4", "app5"]);
            index.delete_application(ns, name);
            format!("delete application {ns}/{name}")
        }
        (3, false) => {
            let secret = random_secret(random, ns);
            let done = format!("apply secret {ns}/{:?}", secret.metadata.name);
            index.apply_secret(secret);
            done
        }
        (3, true) => {
            let name = random.pick(&["sec0", "sec1", "sec2", "pk0", "pk1"]);
            index.delete_secret(ns, name);
            format!("delete secret {ns}/{name}")
        }
        (_, false) => {
            let pod = random_pod(random, ns);
            let done = format!("apply pod {ns}/{:?}", pod.metadata.name);
            index.apply_pod(&pod);
            done
        }
        (_, true) => {
            let name = random.pick(&["p0", "p1", "p2", "p3", "p4"]);
            index.delete_pod(ns, name);
            format!("delete pod {ns}/{name}")
        }
    }
}

/// What the status of each object should say, from whole compilations of `ns`'s objects:
/// (kind, name) → the finding, `None` for accepted.
fn expected_findings(ns: &Namespace) -> BTreeMap<(Kind, String), Option<CompileError>> {
    let whole = tollgate_api::compile(&ns.resources(None));
    let mut expected = BTreeMap::new();
    let kinds = [
        (Kind::OAuthService, ns.services.keys().collect::<Vec<_>>()),
        (Kind::Consumer, ns.consumers.keys().collect()),
        (Kind::OAuthApplication, ns.applications.keys().collect()),
    ];
    for (kind, names) in kinds {
        for name in names {
            let found = whole.errors.iter().find(|e| {
                e.kind == kind.as_str()
                    && &e.name == name
                    && !(kind == Kind::OAuthService && e.reason == Reason::RouteConflict)
            });
            expected.insert((kind, name.clone()), found.cloned());
        }
    }
    // Route conflicts count only among the services one pod selects.
    for pod in ns.pods.values() {
        let compiled = tollgate_api::compile(&ns.resources(Some(&pod.selected)));
        for error in compiled.errors {
            if error.reason == Reason::RouteConflict {
                let slot = expected
                    .entry((Kind::OAuthService, error.name.clone()))
                    .or_default();
                slot.get_or_insert(error);
            }
        }
    }
    expected
}

/// `last_held`: the version each pod held at the last check, to check that none goes back.
fn check(index: &Index, done: &str, last_held: &mut BTreeMap<(String, String), u64>) {
    last_held.retain(|(ns, pod), _| index.subscribe(ns, pod).is_some());
    let statuses = index.statuses();
    for (namespace, ns) in &index.namespaces {
        let mut versions: BTreeMap<Vec<String>, u64> = BTreeMap::new();
        for (name, pod) in &ns.pods {
            let selected: Vec<String> = ns
                .services
                .iter()
                .filter(|(_, s)| selects(s.spec.pod_selector.as_ref(), &pod.labels))
                .map(|(name, _)| name.clone())
                .collect();
            let expected = tollgate_api::compile(&ns.resources(Some(&selected))).snapshot;
            let held = index
                .subscribe(namespace, name)
                .unwrap()
                .borrow()
                .snapshot
                .clone();
            let held_content = Snapshot {
                version: 0,
                ..(*held).clone()
            };
            assert_eq!(
                held_content, expected,
                "after `{done}`: pod {namespace}/{name}"
            );
            let last = last_held
                .entry((namespace.clone(), name.clone()))
                .or_insert(held.version);
            assert!(
                held.version >= *last,
                "after `{done}`: {namespace}/{name} went back"
            );
            *last = held.version;
            // Pods of one selection share one snapshot, with one version.
            let version = *versions.entry(selected).or_insert(held.version);
            assert_eq!(
                held.version, version,
                "after `{done}`: pod {namespace}/{name}"
            );
        }
        let distinct: BTreeSet<u64> = versions.values().copied().collect();
        assert_eq!(
            distinct.len(),
            versions.len(),
            "after `{done}`: {versions:?}"
        );

        for ((kind, name), finding) in expected_findings(ns) {
            let status = statuses
                .iter()
                .find(|s| {
                    s.kind == kind && s.object.namespace == *namespace && s.object.name == name
                })
                .unwrap_or_else(|| panic!("after `{done}`: no status for {kind:?} {name}"));
            match finding {
                None => assert!(
                    status.accepted,
                    "after `{done}`: {kind:?} {name}: {status:?}"
                ),
                Some(error) => {
                    assert!(!status.accepted, "after `{done}`: {kind:?} {name}");
                    assert_eq!(
                        status.reason,
                        error.reason.as_str(),
                        "after `{done}`: {name}"
                    );
                    // Two selections may name different owners of one route.
                    if error.reason != Reason::RouteConflict {
                        assert_eq!(status.message, error.message, "after `{done}`: {name}");
                    }
                }
            }
        }
    }
}

#[test]
fn every_step_of_a_random_history_equals_a_whole_compilation() {
    let mut random = Random(19);
    let mut index = Index::new(1);
    let mut history = Vec::new();
    let mut last_held = BTreeMap::new();
    for _ in 0..STEPS {
        let done = step(&mut index, &mut random);
        history.push(done.clone());
        check(
            &index,
            &format!("{} (step {})", done, history.len()),
            &mut last_held,
        );
    }
    // The history reached the rules it is meant to exercise.
    let statuses = index.statuses();
    assert!(statuses.iter().any(|s| s.accepted));
    assert!(statuses.iter().any(|s| !s.accepted));
}

#[test]
fn a_reset_in_the_middle_of_a_history_equals_a_whole_compilation() {
    let mut random = Random(7);
    let mut index = Index::new(1);
    let mut last_held = BTreeMap::new();
    for round in 0..20 {
        for _ in 0..40 {
            step(&mut index, &mut random);
        }
        // A watch relisted: the same objects, handed over at once.
        let applications: Vec<OAuthApplication> = index
            .namespaces
            .values()
            .flat_map(|ns| ns.applications.values().cloned())
            .collect();
        index.reset_applications(applications);
        check(&index, &format!("reset of round {round}"), &mut last_held);
    }
}
