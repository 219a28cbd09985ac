//! `tollgate migrate kong` on the fixtures: the article's `deck dump`, and Kong's own spec
//! set-ups. What it writes must compile as a standalone sidecar compiles its manifests, and
//! every Kong object it cannot carry over must be named on a warning line.

use std::path::Path;

use tollgate_api::manifests::{Resources, load_str};
use tollgate_api::snapshot::ClientType;
use tollgate_migrate::{MigrateError, Migration, kong};

fn fixture(name: &str) -> (String, Migration) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let migration = kong(&path, &text, "default").unwrap_or_else(|e| panic!("{e}"));
    (text, migration)
}

fn migrate(text: &str) -> Result<Migration, MigrateError> {
    kong(Path::new("kong.yaml"), text, "default")
}

/// What a standalone sidecar would read from the YAML and the JSON output: the loader and
/// the compiler it runs, and their findings.
fn reread(migration: &Migration) -> Vec<(Resources, Vec<String>)> {
    let yaml = migration.to_yaml("kong.yaml");
    let json = migration.to_json();
    [yaml, json]
        .iter()
        .map(|text| {
            let resources = load_str(Path::new("out.yaml"), text).unwrap_or_else(|e| panic!("{e}"));
            let compiled = tollgate_api::compile(&resources);
            let errors = compiled.errors.iter().map(ToString::to_string).collect();
            (resources, errors)
        })
        .collect()
}

fn warned(migration: &Migration, parts: &[&str]) -> bool {
    migration
        .warnings
        .iter()
        .any(|w| parts.iter().all(|p| w.contains(p)))
}

#[test]
fn the_articles_deck_dump_becomes_the_articles_manifests() {
    let (_, migration) = fixture("article-deck.yaml");
    assert_eq!(
        migration.warnings,
        [
            "Kong service `SampleIRISService`: host `iris` not kept: the sidecar forwards to \
             127.0.0.1:52773, the application in its own pod"
        ]
    );
    for (resources, errors) in reread(&migration) {
        assert_eq!(errors, Vec::<String>::new());
        let [service] = &resources.services[..] else {
            panic!("one OAuthService");
        };
        assert_eq!(service.metadata.name.as_deref(), Some("sampleirisservice"));
        assert_eq!(service.metadata.namespace.as_deref(), Some("default"));
        let spec = &service.spec;
        assert_eq!(spec.upstream.port, 52773);
        assert_eq!(spec.upstream.path, None);
        assert_eq!(spec.routes.len(), 1);
        assert_eq!(spec.routes[0].path_prefix, "/event");
        assert!(!spec.routes[0].strip_path);
        assert!(spec.oauth2.enable_password_grant);
        assert!(!spec.oauth2.enable_authorization_code);
        assert_eq!(spec.oauth2.token_expiration, 7200);
        assert_eq!(
            spec.oauth2.provision_key_secret_ref.name,
            "sampleirisservice-provision-key"
        );
        let [consumer] = &resources.consumers[..] else {
            panic!("one Consumer");
        };
        assert_eq!(consumer.metadata.name.as_deref(), Some("clientapp"));
        assert_eq!(consumer.spec.username.as_deref(), Some("ClientApp"));
        assert_eq!(consumer.spec.custom_id.as_deref(), Some("client-app-7"));
        let [application] = &resources.applications[..] else {
            panic!("one OAuthApplication");
        };
        assert_eq!(application.metadata.name.as_deref(), Some("sampleapp"));
        assert_eq!(application.spec.name.as_deref(), Some("SampleApp"));
        assert_eq!(application.spec.consumer_ref.name, "clientapp");
        assert_eq!(application.spec.client_id, "clientid");
        assert_eq!(
            application.spec.redirect_uris,
            ["https://localhost/callback"]
        );
        let secret_value = |name: &str, key: &str| -> String {
            let secret = resources
                .secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("Secret {name}"));
            assert_eq!(
                secret.metadata.labels.as_ref().unwrap()["oauth.tollgate.dev/watch"],
                "true",
                "the controller reads only labelled Secrets"
            );
            match (&secret.string_data, &secret.data) {
                (Some(data), _) if data.contains_key(key) => data[key].clone(),
                (_, Some(data)) => String::from_utf8(data[key].0.clone()).unwrap(),
                _ => panic!("Secret {name} has no {key}"),
            }
        };
        assert_eq!(
            secret_value("sampleirisservice-provision-key", "provisionKey"),
            "provisionkey"
        );
        assert_eq!(
            secret_value("sampleapp-client-secret", "clientSecret"),
            "clientsecret"
        );
    }
    assert!(migration.tokens.is_empty());
}

#[test]
fn kongs_access_spec_export_keeps_what_tollgate_can_serve_and_names_the_rest() {
    let (_, migration) = fixture("kong-access-spec.yaml");
    let expected: &[&[&str]] = &[
        &[
            "Kong route 6d3c0f2a-0004-4000-8000-000000000001 of service `service1`",
            "no paths",
        ],
        &[
            "Kong route `route7`",
            "`hosts: [\"oauth2_7.test\"]` not migrated",
        ],
        &[
            "Kong plugin `rate-limiting` on service `service2bis`",
            "not migrated",
        ],
        &[
            "Kong route 6d3c0f2a-0004-4000-8000-000000000001",
            "no route path tollgate can serve",
        ],
        &[
            "Kong oauth2 credential `testapp`",
            "only a hash",
            "`testapp-client-secret`",
        ],
        &[
            "Kong oauth2 credential `testapp3`",
            "written as OAuthApplication `testapp3-2`",
        ],
        &[
            "Kong oauth2 credential `testapp50`",
            "public client",
            "not migrated",
        ],
    ];
    for parts in expected {
        assert!(
            warned(&migration, parts),
            "no warning with {parts:?} in {:#?}",
            migration.warnings
        );
    }
    assert!(
        !warned(&migration, &["host `127.0.0.1`"]),
        "loopback is where the sidecar forwards: nothing to say"
    );
    for warning in &migration.warnings {
        for secret in [
            "secret789",
            "secret456",
            "kong-exported",
            "provision123",
            "$pbkdf2",
        ] {
            assert!(
                !warning.contains(secret),
                "a warning shows a secret: {warning}"
            );
        }
    }
    for (resources, errors) in reread(&migration) {
        // The hashed secret's application is the one thing refused, as its warning says.
        assert_eq!(
            errors,
            [
                "OAuthApplication default/testapp: Secret `testapp-client-secret` has no key \
              `clientSecret`: add it to the Secret or fix the key"
            ]
        );
        let names: Vec<_> = resources
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["route2bis", "route7"]);
        let route7 = &resources.services[1].spec;
        assert_eq!(route7.oauth2.anonymous.as_deref(), Some("no-body"));
        assert_eq!(
            route7.oauth2.scopes.as_deref(),
            Some(&["email".to_owned(), "profile".into(), "user.email".into()][..])
        );
        assert_eq!(
            resources.services[0].spec.upstream.connect_timeout,
            Some(2000)
        );
        assert_eq!(resources.services[0].spec.upstream.port, 15555);
        let public = resources
            .applications
            .iter()
            .find(|a| a.spec.client_id == "clientid11211")
            .unwrap();
        assert_eq!(public.spec.client_type, ClientType::Public);
        assert_eq!(public.spec.client_secret_ref, None);
        let hashed = resources
            .applications
            .iter()
            .find(|a| a.spec.client_id == "clientid123")
            .unwrap();
        assert!(hashed.spec.hash_secret);
        let apps: Vec<_> = resources
            .applications
            .iter()
            .map(|a| a.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            apps,
            ["testapp", "testapp2", "testapp3", "testapp3-2", "testapp50"]
        );
    }
    // The tokens, as the admin API imports them: the service by its OAuthService's name.
    let tokens: Vec<serde_json::Value> = migration
        .tokens_jsonl()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        tokens[0],
        serde_json::json!({
            "id": "6d3c0f2a-0006-4000-8000-000000000001",
            "access_token": "kong-exported-access-token-0001",
            "refresh_token": "kong-exported-refresh-token-0001",
            "client_id": "clientid789",
            "service_name": "route2bis",
            "authenticated_userid": "userid123",
            "scope": "email",
            "expires_in": 7200,
            "created_at": 1_700_000_100u64,
        })
    );
    assert_eq!(
        tokens[1]["service_name"],
        serde_json::Value::Null,
        "a global token"
    );
    assert_eq!(tokens.len(), 2);
}

#[test]
fn kongs_flatten_spec_names_credentials_without_client_ids_and_regex_paths() {
    let (_, migration) = fixture("kong-flatten-spec.yaml");
    for parts in [
        &[
            "Kong route `regex`",
            "`/users/\\d+/profile`",
            "regular expression",
        ][..],
        &["Kong oauth2 credential `my-credential`", "no client_id"],
        &[
            "Kong oauth2 credential `another-credential`",
            "no client_id",
        ],
        &["Kong oauth2_tokens: 1", "not migrated"],
        &["Kong service `example-service`", "host `example.test`"],
    ] {
        assert!(
            warned(&migration, parts),
            "{parts:?} in {:#?}",
            migration.warnings
        );
    }
    for (resources, errors) in reread(&migration) {
        assert_eq!(errors, Vec::<String>::new());
        let spec = &resources.services[0].spec;
        assert_eq!(spec.upstream.port, 8080);
        assert_eq!(spec.upstream.path.as_deref(), Some("/base"));
        assert_eq!(spec.routes.len(), 1);
        assert_eq!(spec.routes[0].path_prefix, "/plain");
        assert!(spec.routes[0].strip_path, "Kong's default");
        assert!(spec.oauth2.enable_client_credentials);
        assert_eq!(resources.consumers.len(), 1);
        assert!(resources.applications.is_empty());
    }
}

const TWO_SERVICES_ONE_PATH: &str = r#"
_format_version: "3.0"
plugins:
- name: oauth2
  config: {enable_password_grant: true, provision_key: pk}
- name: cors
services:
- name: My Service
  url: http://localhost:8080
  routes:
  - name: a
    paths: [/api]
    hosts: [a.example]
- name: my_service
  url: http://admin:hunter2@localhost:8081
  routes:
  - name: b
    paths: [/api, /other/]
    hosts: [b.example]
    methods: [GET]
consumers:
- username: Client App
- custom_id: client-app
"#;

#[test]
fn names_are_dns_safe_collisions_are_numbered_and_shared_paths_kept_once() {
    let migration = migrate(TWO_SERVICES_ONE_PATH).unwrap();
    let again = migrate(TWO_SERVICES_ONE_PATH).unwrap();
    assert_eq!(migration.warnings, again.warnings, "deterministic");
    assert!(warned(
        &migration,
        &[
            "Kong service `my_service`",
            "user name and password in its url not kept"
        ]
    ));
    assert!(!warned(&migration, &["hunter2"]));
    assert_eq!(migration.to_yaml("x"), again.to_yaml("x"));
    for parts in [
        &[
            "Kong service `my_service`",
            "written as OAuthService `my-service-2`",
            "`my-service`",
        ][..],
        &[
            "Kong route `b`",
            "path `/api` not migrated",
            "OAuthService `my-service` already serves it",
        ],
        &["Kong route `b`", "`methods: [\"GET\"]` not migrated"],
        &["Kong route `a`", "`hosts: [\"a.example\"]` not migrated"],
        &[
            "Kong plugin `oauth2` globally",
            "applied to service `My Service`",
        ],
        &[
            "Kong plugin `oauth2` globally",
            "applied to service `my_service`",
        ],
        &[
            "Kong plugin `cors` globally",
            "applied to OAuthService `my-service` as its own spec.cors",
        ],
        &[
            "Kong consumer custom_id `client-app`",
            "written as Consumer `client-app-2`",
        ],
        &["Kong consumer custom_id `client-app`", "no username"],
    ] {
        assert!(
            warned(&migration, parts),
            "{parts:?} in {:#?}",
            migration.warnings
        );
    }
    for (resources, errors) in reread(&migration) {
        assert_eq!(errors, Vec::<String>::new());
        let routes: Vec<(String, Vec<String>)> = resources
            .services
            .iter()
            .map(|s| {
                (
                    s.metadata.name.clone().unwrap(),
                    s.spec
                        .routes
                        .iter()
                        .map(|r| r.path_prefix.clone())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("my-service".to_owned(), vec!["/api".to_owned()]),
                ("my-service-2".to_owned(), vec!["/other".to_owned()]),
            ]
        );
        assert_eq!(
            resources.consumers[0].metadata.name.as_deref(),
            Some("client-app")
        );
        assert_eq!(
            resources.consumers[1].metadata.name.as_deref(),
            Some("client-app-2")
        );
    }
}

#[test]
fn a_route_plugin_makes_its_own_service_and_a_disabled_one_none() {
    let migration = migrate(
        r#"
_format_version: "2.1"
services:
- name: svc
  port: 9000
  plugins:
  - name: oauth2
    config: {enable_client_credentials: true, provision_key: a, token_expiration: 60}
  routes:
  - name: shared
    paths: [/shared]
  - name: own
    paths: [/own]
    plugins:
    - name: oauth2
      config: {enable_password_grant: true, provision_key: b, hide_credentials: true, unknown_setting: 1}
- name: off
  port: 9001
  routes:
  - name: offroute
    paths: [/off]
    plugins:
    - name: oauth2
      enabled: false
      config: {enable_password_grant: true, provision_key: c}
"#,
    )
    .unwrap();
    assert!(warned(
        &migration,
        &["Kong plugin `oauth2` on route `own`", "`unknown_setting`"]
    ));
    assert!(warned(
        &migration,
        &["Kong plugin `oauth2` on route `offroute`", "disabled"]
    ));
    assert!(warned(
        &migration,
        &["Kong route `offroute`", "no oauth2 plugin covers it"]
    ));
    for (resources, errors) in reread(&migration) {
        assert_eq!(errors, Vec::<String>::new());
        let [svc, own] = &resources.services[..] else {
            panic!("two OAuthServices");
        };
        assert_eq!(svc.metadata.name.as_deref(), Some("svc"));
        assert_eq!(svc.spec.routes[0].path_prefix, "/shared");
        assert!(svc.spec.oauth2.enable_client_credentials);
        assert_eq!(svc.spec.oauth2.token_expiration, 60);
        assert_eq!(own.metadata.name.as_deref(), Some("own"));
        assert_eq!(own.spec.routes[0].path_prefix, "/own");
        assert!(own.spec.oauth2.enable_password_grant && own.spec.oauth2.hide_credentials);
        assert_eq!(own.spec.upstream.port, 9000);
    }
}

#[test]
fn an_invalid_file_is_one_error_naming_the_file_and_where() {
    let cases = [
        ("services: [", "kong.yaml: invalid YAML or JSON"),
        (
            "- a\n- b\n",
            "kong.yaml: not Kong's declarative configuration",
        ),
        ("services: []\n", "kong.yaml: _format_version is missing"),
        (
            "_format_version: \"0.9\"\n",
            "kong.yaml: _format_version: `0.9` is not a format",
        ),
        (
            "_format_version: \"3.0\"\nservices:\n- name: s\n  routes:\n  - paths: /x\n",
            "kong.yaml: services[0].routes[0].paths: invalid type",
        ),
        (
            "_format_version: \"3.0\"\nroutes:\n- paths: [/x]\n  service: nowhere\n",
            "kong.yaml: routes[0]: no service `nowhere` in this file",
        ),
        (
            "_format_version: 3.0\nplugins:\n- name: oauth2\n  config: {scopes: 7}\n",
            "kong.yaml: plugins[0].config.scopes: invalid type",
        ),
        (
            "_format_version: 3.0\nplugins:\n- name: cors\n  config: 7\n",
            "kong.yaml: plugins[0].config: invalid type",
        ),
    ];
    for (text, expected) in cases {
        let error = match migrate(text) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(error.starts_with(expected), "{text:?}: {error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
    let error = kong(
        Path::new("k.yaml"),
        "_format_version: \"3.0\"\n",
        "Not_A_Label",
    )
    .err()
    .unwrap();
    assert!(
        error.to_string().contains("namespace `Not_A_Label`"),
        "{error}"
    );
}

#[test]
fn an_empty_file_of_the_right_format_gives_nothing_and_no_warning() {
    let migration = migrate("_format_version: \"1.1\"\nservices:\nconsumers:\n").unwrap();
    assert!(migration.documents.is_empty());
    assert!(migration.warnings.is_empty(), "{:?}", migration.warnings);
}

#[test]
fn other_kong_entities_are_named_not_dropped() {
    let migration = migrate(
        "_format_version: \"3.0\"\nupstreams:\n- name: u\n  targets: [{target: a:80}]\ncertificates: []\n\
         consumers:\n- username: u\n  keyauth_credentials:\n  - key: a-secret-key\n",
    )
    .unwrap();
    assert!(warned(
        &migration,
        &["Kong `upstreams` (1 entry): not migrated"]
    ));
    assert!(
        !warned(&migration, &["certificates"]),
        "empty: nothing to say"
    );
    assert!(warned(
        &migration,
        &["Kong consumer `u`", "`keyauth_credentials` (1 entry)"]
    ));
    assert!(!warned(&migration, &["a-secret-key"]));
}

const CORS_DECK: &str = r#"
_format_version: "3.0"
plugins:
- name: cors
  config: {credentials: true}
- name: cors
  config: {origins: [https://second.example]}
services:
- name: api
  url: http://localhost:8080
  plugins:
  - name: oauth2
    config: {enable_client_credentials: true, provision_key: pk}
  - name: cors
    protocols: [http, https]
    config:
      origins: [https://app.example.com, '(.*\.)?example\.com', 'a\.test|b\.test', '(?<=x)y\.test']
      methods: [GET, POST, get]
      headers: ["Content-Type, Authorization"]
      exposed_headers: [X-Total]
      credentials: true
      max_age: 3600
      private_network: true
      preflight_continue: false
      allow_origin_absent: false
      brand_new_setting: 1
  routes:
  - name: shared
    paths: [/api]
  - name: shared-own-cors
    paths: [/api2]
    plugins:
    - name: cors
      config: {origins: [https://other.example]}
  - name: own
    paths: [/own]
    plugins:
    - name: oauth2
      config: {enable_password_grant: true, provision_key: pk2}
    - name: cors
      config: {origins: [https://own.example], max_age: 1.5, preflight_continue: true}
- name: plain
  url: http://localhost:9000
  plugins:
  - name: oauth2
    config: {enable_client_credentials: true, provision_key: pk3}
  routes:
  - name: plain
    paths: [/plain]
- name: unprotected
  url: http://localhost:9001
  plugins:
  - name: cors
  routes:
  - name: unprotected
    paths: [/open]
- name: only-bad-regexes
  url: http://localhost:9002
  plugins:
  - name: oauth2
    config: {enable_client_credentials: true, provision_key: pk4}
  - name: cors
    config: {origins: ['(?=a)b']}
  routes:
  - name: bad
    paths: [/bad]
consumers:
- username: alice
  plugins:
  - name: cors
"#;

#[test]
fn kongs_cors_plugin_becomes_the_cors_block_of_the_services_it_covers() {
    use tollgate_api::cors::{CorsMethod, OriginAnswer};
    let migration = migrate(CORS_DECK).unwrap();
    for parts in [
        &["Kong plugin `cors` on service `api`", "`brand_new_setting`"][..],
        &[
            "Kong plugin `cors` on service `api`",
            "config.methods `get` not migrated",
        ],
        &[
            "Kong plugin `cors` on service `api`",
            "config.origins `(?<=x)y\\.test` is not a regular expression tollgate can use",
            "no longer allowed",
        ],
        &[
            "Kong plugin `cors` on service `api`",
            "config.origins `a\\.test|b\\.test`",
            "a.test.evil.example",
        ],
        &[
            "Kong plugin `cors` on route `shared-own-cors` of service `api`",
            "shares OAuthService `api`",
        ],
        &[
            "Kong plugin `cors` on route `own` of service `api`",
            "config.max_age 1.5 is not a whole number",
        ],
        &[
            "Kong plugin `cors` globally",
            "applied to OAuthService `plain` as its own spec.cors",
        ],
        &[
            "Kong plugin `cors` globally",
            "config.credentials with every origin allowed",
        ],
        &[
            "Kong plugin `cors` globally: not migrated: Kong plugin `cors` globally already \
             configures cors there",
        ],
        &[
            "Kong plugin `cors` on service `unprotected`",
            "not migrated: no OAuthService was written where it applies",
        ],
        &[
            "Kong plugin `cors` on consumer `alice`",
            "applies to services and routes, not to consumers",
        ],
        &[
            "Kong plugin `cors` on service `only-bad-regexes`",
            "kept as written, so that OAuthService `only-bad-regexes` is refused",
        ],
        &[
            "tollgate would refuse OAuthService default/only-bad-regexes",
            "cors.origins[0]",
        ],
    ] {
        assert!(
            warned(&migration, parts),
            "{parts:?} in {:#?}",
            migration.warnings
        );
    }
    assert!(
        !warned(&migration, &["globally", "`api`"]),
        "a service's own cors plugin wins over the global one: {:#?}",
        migration.warnings
    );
    assert!(!warned(&migration, &["`protocols`"]));
    for (resources, errors) in reread(&migration) {
        assert_eq!(
            errors.len(),
            1,
            "only the service whose every origin was refused: {errors:?}"
        );
        let compiled = tollgate_api::compile(&resources).snapshot;
        let cors_of = |name: &str| {
            let spec = resources
                .services
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("OAuthService {name}"))
                .spec
                .cors
                .clone()
                .unwrap_or_else(|| panic!("{name} has a cors block"));
            let compiled = compiled
                .services
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.cors.clone())
                .unwrap_or_else(|| panic!("{name} compiled with its cors"));
            (spec, compiled)
        };

        let (api, compiled_api) = cors_of("api");
        assert_eq!(
            api.origins,
            [
                "https://app.example.com",
                "(.*\\.)?example\\.com",
                "a\\.test|b\\.test"
            ]
        );
        assert_eq!(api.methods, [CorsMethod::Get, CorsMethod::Post]);
        assert_eq!(api.headers, ["Content-Type", "Authorization"]);
        assert_eq!(api.exposed_headers, ["X-Total"]);
        assert!(api.credentials && api.private_network && !api.preflight_continue);
        assert!(!api.allow_origin_absent);
        assert_eq!(api.max_age, Some(3600));
        let allowed = |origin: &'static str| {
            matches!(
                compiled_api.origins.answer(Some(origin)),
                OriginAnswer::Origin(_)
            )
        };
        assert!(allowed("https://app.example.com"));
        assert!(allowed("https://shop.example.com"));
        assert!(allowed("https://b.test"));
        assert!(
            !allowed("https://a.test.evil.example"),
            "Kong allowed it; tollgate anchors the whole regex"
        );
        assert!(
            !allowed("https://xy.test"),
            "the refused regex allows nothing"
        );

        let (own, _) = cors_of("own");
        assert_eq!(own.origins, ["https://own.example"]);
        assert_eq!(own.max_age, None);
        assert!(own.preflight_continue);
        assert_eq!(own.methods, CorsMethod::ALL, "Kong's default");

        let (plain, compiled_plain) = cors_of("plain");
        assert!(plain.origins.is_empty() && plain.credentials && plain.allow_origin_absent);
        assert!(
            compiled_plain
                .origins
                .answer(Some("https://any.example"))
                .is_every()
        );
    }
}

#[test]
fn a_secret_of_the_wrong_type_is_named_never_shown() {
    let cases = [
        (
            "_format_version: \"3.0\"\nplugins:\n- name: oauth2\n  config: {provision_key: 918273645}\n",
            "kong.yaml: plugins[0].config.provision_key: ",
        ),
        (
            "_format_version: \"3.0\"\nconsumers:\n- username: u\n  oauth2_credentials:\n  - client_id: c\n    client_secret: 918273645\n",
            "kong.yaml: consumers[0].oauth2_credentials[0].client_secret: ",
        ),
        (
            "_format_version: \"3.0\"\noauth2_credentials:\n- client_id: c\n  client_secret: 9182736.45\n  consumer: u\n",
            "kong.yaml: oauth2_credentials[0].client_secret: ",
        ),
        (
            "_format_version: \"3.0\"\noauth2_tokens:\n- access_token: true\n",
            "kong.yaml: oauth2_tokens[0].access_token: ",
        ),
        (
            "_format_version: \"3.0\"\noauth2_tokens:\n- refresh_token: 918273645\n",
            "kong.yaml: oauth2_tokens[0].refresh_token: ",
        ),
    ];
    for (text, expected) in cases {
        let error = match migrate(text) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(error.starts_with(expected), "{text:?}: {error}");
        assert!(error.contains("expected a string"), "{error}");
        for value in ["918273645", "9182736.45", "true"] {
            assert!(!error.contains(value), "{error}");
        }
    }
}

#[test]
fn a_token_id_that_is_no_uuid_is_named_and_the_token_imported_under_a_new_one() {
    let migration = migrate(
        r#"
_format_version: "3.0"
services:
- name: svc
  port: 9000
  plugins:
  - name: oauth2
    config: {enable_client_credentials: true, provision_key: pk}
  routes:
  - name: r
    paths: [/r]
consumers:
- username: u
  oauth2_credentials:
  - client_id: app
    client_secret: s
    oauth2_tokens:
    - id: not-a-uuid
      access_token: a1
    - id: 0b7c1f0e-58a5-4c4e-9a3c-000000000001
      access_token: a2
"#,
    )
    .unwrap();
    assert!(warned(
        &migration,
        &["id `not-a-uuid` is not a UUID", "imported under a new id"]
    ));
    let lines: Vec<serde_json::Value> = migration
        .tokens_jsonl()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].get("id").is_none(), "{}", lines[0]);
    assert_eq!(lines[1]["id"], "0b7c1f0e-58a5-4c4e-9a3c-000000000001");
    assert_eq!(lines[1]["client_id"], "app");
}
