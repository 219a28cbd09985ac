//! What one change costs: the applications an update compiles again, and that it compiles
//! the same entries a whole compilation gives. (The controller's index tests compare long
//! random histories with whole compilations.)

use std::collections::BTreeMap;

use super::*;
use crate::manifests::Resources;
use crate::testing::resources::{application, consumer, secret};

const APPLICATIONS: usize = 40;

/// One consumer `owner` with every application, each with a Secret of its own.
struct Fixture {
    consumers: BTreeMap<String, Consumer>,
    applications: BTreeMap<String, OAuthApplication>,
    secrets: BTreeMap<String, Secret>,
    services: BTreeMap<String, OAuthService>,
}

impl Fixture {
    fn new() -> Self {
        let mut fixture = Self {
            consumers: BTreeMap::from([("owner".to_owned(), consumer("ns", "owner"))]),
            applications: BTreeMap::new(),
            secrets: BTreeMap::new(),
            services: BTreeMap::new(),
        };
        for i in 0..APPLICATIONS {
            let name = format!("app-{i}");
            let mut app = application("ns", &name, "owner", &format!("client-{i}"));
            if let Some(secret_ref) = &mut app.spec.client_secret_ref {
                secret_ref.name = format!("{name}-secret");
            }
            fixture.applications.insert(name.clone(), app);
            let secret_name = format!("{name}-secret");
            fixture.secrets.insert(
                secret_name.clone(),
                secret("ns", &secret_name, "clientSecret", &format!("s-{i}")),
            );
        }
        fixture
    }

    fn objects(&self) -> NamespaceObjects<'_> {
        NamespaceObjects {
            namespace: "ns",
            services: &self.services,
            consumers: &self.consumers,
            applications: &self.applications,
            secrets: &self.secrets,
        }
    }

    fn whole(&self) -> Snapshot {
        super::super::compile(&Resources {
            services: self.services.values().cloned().collect(),
            consumers: self.consumers.values().cloned().collect(),
            applications: self.applications.values().cloned().collect(),
            secrets: self.secrets.values().cloned().collect(),
        })
        .snapshot
    }
}

fn built(fixture: &Fixture) -> NamespaceCompilation {
    let mut compilation = NamespaceCompilation::default();
    let updated = compilation.update(&fixture.objects(), [Change::Everything]);
    assert_eq!(updated.recompiled, APPLICATIONS);
    compilation
}

fn snapshot(compilation: &mut NamespaceCompilation, fixture: &Fixture) -> Snapshot {
    let services = compilation.services(&fixture.objects(), &[]);
    compilation.snapshot(&services)
}

#[test]
fn a_rotated_secret_recompiles_its_application_only() {
    let mut fixture = Fixture::new();
    let mut compilation = built(&fixture);
    fixture.secrets.insert(
        "app-7-secret".to_owned(),
        secret("ns", "app-7-secret", "clientSecret", "rotated"),
    );
    let updated = compilation.update(&fixture.objects(), [Change::Secret("app-7-secret".into())]);
    assert_eq!(updated.recompiled, 1);
    assert_eq!(
        updated.changed,
        BTreeSet::from([(APPLICATION, "app-7".to_owned())])
    );
    let snapshot = snapshot(&mut compilation, &fixture);
    assert_eq!(snapshot, fixture.whole());
    let app = snapshot.application_by_client_id("ns", "client-7").unwrap();
    assert!(app.client_secret.as_ref().unwrap().matches("rotated"));
}

#[test]
fn an_unread_secret_recompiles_nothing() {
    let mut fixture = Fixture::new();
    let mut compilation = built(&fixture);
    fixture.secrets.insert(
        "unrelated".to_owned(),
        secret("ns", "unrelated", "clientSecret", "x"),
    );
    let updated = compilation.update(&fixture.objects(), [Change::Secret("unrelated".into())]);
    assert_eq!(updated.recompiled, 0);
    assert!(updated.changed.is_empty());
    assert!(!updated.services);
}

#[test]
fn a_consumer_recompiles_its_applications_only_when_it_comes_or_goes() {
    let mut fixture = Fixture::new();
    let mut compilation = built(&fixture);

    // Tags change nothing an application reads.
    let mut tagged = consumer("ns", "owner");
    tagged.spec.tags = vec!["gold".to_owned()];
    fixture.consumers.insert("owner".to_owned(), tagged);
    let updated = compilation.update(&fixture.objects(), [Change::Consumer("owner".into())]);
    assert_eq!(updated.recompiled, 0);
    assert_eq!(
        updated.changed,
        BTreeSet::from([(CONSUMER, "owner".to_owned())])
    );

    // Gone: every application of it is left out, and says why.
    fixture.consumers.clear();
    let updated = compilation.update(&fixture.objects(), [Change::Consumer("owner".into())]);
    assert_eq!(updated.recompiled, APPLICATIONS);
    assert!(snapshot(&mut compilation, &fixture).applications.is_empty());
    let error = compilation.error(APPLICATION, "app-3").unwrap();
    assert_eq!(error.reason, super::super::Reason::ConsumerNotFound);
    assert_eq!(snapshot(&mut compilation, &fixture), fixture.whole());
}

#[test]
fn a_client_id_taken_over_recompiles_the_applications_of_that_id_only() {
    let mut fixture = Fixture::new();
    let mut compilation = built(&fixture);
    // app-9 takes client-1: app-1 is older (same age, name first), so app-9 is refused.
    let mut taker = fixture.applications["app-9"].clone();
    taker.spec.client_id = "client-1".to_owned();
    fixture.applications.insert("app-9".to_owned(), taker);
    let updated = compilation.update(&fixture.objects(), [Change::Application("app-9".into())]);
    assert_eq!(updated.recompiled, 1);
    let error = compilation.error(APPLICATION, "app-9").unwrap();
    assert_eq!(error.reason, super::super::Reason::DuplicateClientId);

    // app-1 goes: app-9 owns client-1 now, and is recompiled for it.
    fixture.applications.remove("app-1");
    let updated = compilation.update(&fixture.objects(), [Change::Application("app-1".into())]);
    assert_eq!(updated.recompiled, 1, "app-9 only (app-1 is removed)");
    assert!(compilation.error(APPLICATION, "app-9").is_none());
    assert_eq!(snapshot(&mut compilation, &fixture), fixture.whole());
}
