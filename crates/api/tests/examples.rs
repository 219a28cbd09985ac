//! The article's objects in `deploy/examples/` load and compile without a single error.

use std::path::Path;

use tollgate_api::snapshot::GrantType;
use tollgate_api::{compile, manifests};

#[test]
fn article_examples_compile_cleanly() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
    let resources = manifests::load(&[examples]).unwrap();
    let compiled = compile(&resources);
    assert!(compiled.errors.is_empty(), "{:#?}", compiled.errors);
    let snapshot = compiled.snapshot;

    let [service] = &snapshot.services[..] else {
        panic!("one service expected: {:#?}", snapshot.services);
    };
    assert_eq!(
        (service.namespace.as_str(), service.name.as_str()),
        ("default", "sampleirisservice")
    );
    assert_eq!(service.upstream.port, 52773);
    assert_eq!(service.routes.len(), 1);
    assert_eq!(service.routes[0].path_prefix, "/event");
    assert!(!service.routes[0].strip_path);
    assert!(service.oauth2.enable_password_grant);
    assert!(service.oauth2.provision_key.matches("provisionkey"));

    let consumer = snapshot.consumer("default", "clientapp").unwrap();
    assert_eq!(consumer.username, "ClientApp");

    let app = snapshot
        .application_by_client_id("default", "clientid")
        .unwrap();
    assert_eq!(app.name, "SampleApp");
    assert_eq!(app.consumer, "clientapp");
    assert!(app.client_secret.as_ref().unwrap().matches("clientsecret"));
    assert_eq!(app.redirect_uris, ["https://localhost/callback"]);
    assert_eq!(app.allowed_grants, None::<Vec<GrantType>>);

    // The snapshot on the wire holds no secret in the clear.
    let json = serde_json::to_string(&snapshot).unwrap();
    assert!(!json.contains("clientsecret") && !json.contains("provisionkey"));
}
