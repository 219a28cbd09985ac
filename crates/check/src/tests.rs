//! The checks over made-up objects: a healthy install passes every one, and each broken part
//! fails the check that names it, with a hint.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionCondition, CustomResourceDefinitionStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, MicroTime, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
    APIService, APIServiceCondition, APIServiceSpec, APIServiceStatus,
};

use crate::checks::{self, install_groups};
use crate::fetched::{
    CaCertificate, FetchedObjects, NamedCertificate, ObservedCondition, ObservedResource,
    ObservedStatus, TokensProbe,
};
use crate::names::{CERT_MANAGER_INJECT, ChartNames};
use crate::pre::{self, PreFetched, Right};
use crate::report::{EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, Outcome, Report};

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

/// A CA certificate (PEM) that ends at `not_after` (seconds since the epoch).
fn certificate(not_after: i64) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 365 * DAY).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    params.self_signed(&key).unwrap().pem()
}

fn established(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    crd.status = Some(CustomResourceDefinitionStatus {
        conditions: Some(vec![CustomResourceDefinitionCondition {
            type_: "Established".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    crd
}

fn webhook(name: &str, ca_pem: &str, excluded: &[&str]) -> MutatingWebhook {
    MutatingWebhook {
        name: name.into(),
        client_config: WebhookClientConfig {
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            ..Default::default()
        },
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tollgate.dev/inject".into(),
                    operator: "In".into(),
                    values: Some(vec!["enabled".into()]),
                },
                LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "NotIn".into(),
                    values: Some(excluded.iter().map(|s| s.to_string()).collect()),
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

const EXCLUDED: [&str; 4] = ["kube-system", "kube-public", "kube-node-lease", "tollgate"];

fn resource(kind: &str, name: &str, conditions: Vec<ObservedCondition>) -> ObservedResource {
    ObservedResource {
        kind: kind.into(),
        namespace: "shop".into(),
        name: name.into(),
        generation: Some(2),
        status: ObservedStatus {
            conditions,
            observed_generation: Some(2),
            selected_pods: Some(2),
            up_to_date_pods: Some(2),
        },
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> ObservedCondition {
    ObservedCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(2),
    }
}

/// A release `tollgate` in namespace `tollgate` where everything works.
fn healthy() -> FetchedObjects {
    let ca_pem = certificate(NOW + 3650 * DAY);
    let crds = tollgate_api::resources::crds()
        .into_iter()
        .map(|crd| {
            (
                crd.metadata.name.clone().unwrap(),
                Ok(Some(established(crd))),
            )
        })
        .collect();
    let deployment = Deployment {
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            ..Default::default()
        }),
        status: Some(DeploymentStatus {
            available_replicas: Some(2),
            conditions: Some(vec![DeploymentCondition {
                type_: "Available".into(),
                status: "True".into(),
                reason: Some("MinimumReplicasAvailable".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let lease = Lease {
        metadata: ObjectMeta::default(),
        spec: Some(LeaseSpec {
            holder_identity: Some("tollgate-controller-7d9-abcde".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(NOW - 3).unwrap())),
            ..Default::default()
        }),
    };
    let configuration = MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("tollgate".into()),
            ..Default::default()
        },
        webhooks: Some(vec![
            webhook("annotated.inject.tollgate.dev", &ca_pem, &EXCLUDED),
            webhook("namespace.inject.tollgate.dev", &ca_pem, &EXCLUDED),
        ]),
    };
    let api_service = APIService {
        spec: Some(APIServiceSpec {
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            ..Default::default()
        }),
        status: Some(APIServiceStatus {
            conditions: Some(vec![APIServiceCondition {
                type_: "Available".into(),
                status: "True".into(),
                reason: Some("Passed".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    };
    let ready = |kind, name| {
        resource(
            kind,
            name,
            vec![
                condition("Accepted", "True", "Accepted", ""),
                condition("Programmed", "True", "Programmed", ""),
                condition("Ready", "True", "Ready", ""),
            ],
        )
    };
    FetchedObjects {
        names: ChartNames::new("tollgate", "tollgate"),
        now: Timestamp::from_second(NOW).unwrap(),
        cert_expiry_days: 7,
        crds,
        deployment: Ok(Some(deployment)),
        lease: Ok(Some(lease)),
        webhook_configuration: Ok(Some(configuration)),
        ca: Ok(Some(CaCertificate {
            pem: ca_pem.clone(),
            source: "Secret tollgate/tollgate-ca".into(),
        })),
        api_service: Ok(Some(api_service)),
        tokens_probe: TokensProbe::Listed,
        serving_certificates: vec![NamedCertificate {
            what: "the controller's CA (Secret tollgate/tollgate-ca)".into(),
            pem: Ok(ca_pem),
        }],
        resources: Ok(vec![
            ready("OAuthService", "sampleirisservice"),
            ready("Consumer", "clientapp"),
            ready("OAuthApplication", "sampleapp"),
        ]),
    }
}

/// The one check of the report whose description starts with `start`.
fn find(f: &FetchedObjects, start: &str) -> crate::report::CheckResult {
    let groups = install_groups(f);
    let found: Vec<_> = groups
        .into_iter()
        .flat_map(|g| g.checks)
        .filter(|c| c.description.starts_with(start))
        .collect();
    assert_eq!(found.len(), 1, "checks starting with {start:?}: {found:?}");
    found.into_iter().next().unwrap()
}

/// Asserts the check failed with a hint, a detail containing each of `words`; returns it.
fn assert_fails(f: &FetchedObjects, start: &str, words: &[&str]) {
    let check = find(f, start);
    assert_eq!(check.result, Outcome::Failure, "{check:#?}");
    assert!(check.hint.is_some(), "a failure without a hint: {check:#?}");
    let details = check.details.join("\n");
    for word in words {
        assert!(details.contains(word), "{word:?} not in:\n{details}");
    }
    // Everything else still passes: one broken part names one check.
    let report = Report::new(install_groups(f), true);
    assert_eq!(report.exit_code, EXIT_FAILED);
    assert!(report.text().contains(&format!("✖ {}", check.description)));
}

#[test]
fn a_healthy_install_passes_every_check() {
    let report = Report::new(install_groups(&healthy()), true);
    for check in report.groups.iter().flat_map(|g| &g.checks) {
        assert_eq!(check.result, Outcome::Success, "{check:#?}");
    }
    assert_eq!(report.exit_code, EXIT_OK);
    assert!(report.success);
    let text = report.text();
    assert!(!text.contains('✖') && !text.contains('‼'), "{text}");
    assert!(
        text.contains("✔ the controller Deployment is available"),
        "{text}"
    );
}

#[test]
fn a_missing_or_older_crd_is_named() {
    let mut f = healthy();
    f.crds[1].1 = Ok(None);
    assert_fails(
        &f,
        "the CRDs",
        &["consumers.oauth.tollgate.dev: not installed"],
    );

    let mut f = healthy();
    if let Ok(Some(crd)) = &mut f.crds[0].1 {
        crd.spec.versions[0].schema = None;
    }
    assert_fails(
        &f,
        "the CRDs",
        &["oauthservices.oauth.tollgate.dev", "differs"],
    );

    let mut f = healthy();
    if let Ok(Some(crd)) = &mut f.crds[2].1 {
        let mut newer = crd.spec.versions[0].clone();
        newer.name = "v1".into();
        crd.spec.versions.push(newer);
    }
    assert_fails(
        &f,
        "the CRDs",
        &["serves version v1, which this binary does not know"],
    );

    let mut f = healthy();
    f.crds[0].1 = Err("403 Forbidden: no".into());
    assert_fails(&f, "the CRDs", &["cannot read it: 403 Forbidden"]);
}

#[test]
fn an_unavailable_or_missing_deployment_fails() {
    let mut f = healthy();
    if let Ok(Some(d)) = &mut f.deployment {
        d.status = Some(DeploymentStatus {
            available_replicas: Some(0),
            conditions: Some(vec![DeploymentCondition {
                type_: "Available".into(),
                status: "False".into(),
                reason: Some("MinimumReplicasUnavailable".into()),
                message: Some("Deployment does not have minimum availability.".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
    }
    assert_fails(
        &f,
        "the controller Deployment",
        &[
            "0 of 2 replicas available",
            "Available=False MinimumReplicasUnavailable",
        ],
    );

    let mut f = healthy();
    f.deployment = Ok(None);
    assert_fails(
        &f,
        "the controller Deployment",
        &["tollgate/tollgate-controller not found"],
    );
    let hint = find(&f, "the controller Deployment").hint.unwrap();
    assert!(hint.contains("--release"), "{hint}");
}

#[test]
fn an_expired_or_empty_lease_fails() {
    let mut f = healthy();
    if let Ok(Some(lease)) = &mut f.lease {
        lease.spec.as_mut().unwrap().renew_time =
            Some(MicroTime(Timestamp::from_second(NOW - 60).unwrap()));
    }
    assert_fails(&f, "the controller's Lease", &["60s ago", "expired"]);

    let mut f = healthy();
    if let Ok(Some(lease)) = &mut f.lease {
        lease.spec.as_mut().unwrap().holder_identity = Some(String::new());
    }
    assert_fails(&f, "the controller's Lease", &["has no holder"]);

    let mut f = healthy();
    f.lease = Ok(None);
    assert_fails(&f, "the controller's Lease", &["not found"]);
}

#[test]
fn a_deleted_webhook_configuration_is_named() {
    let mut f = healthy();
    f.webhook_configuration = Ok(None);
    assert_fails(
        &f,
        "the injection webhook",
        &["MutatingWebhookConfiguration tollgate not found"],
    );
    // The checks that read it say why they could not, without failing twice.
    assert_eq!(find(&f, "the webhook's caBundle").result, Outcome::Warning);
}

#[test]
fn a_stale_ca_bundle_is_named() {
    let mut f = healthy();
    let other = certificate(NOW + 3650 * DAY);
    if let Ok(Some(c)) = &mut f.webhook_configuration {
        c.webhooks.as_mut().unwrap()[1].client_config.ca_bundle =
            Some(ByteString(other.clone().into_bytes()));
    }
    assert_fails(
        &f,
        "the webhook's caBundle",
        &[
            "namespace.inject.tollgate.dev",
            "Secret tollgate/tollgate-ca",
        ],
    );
    let details = find(&f, "the webhook's caBundle").details;
    assert_eq!(details.len(), 1, "only the stale webhook: {details:?}");

    // Kept by cert-manager: not compared with the controller's CA.
    if let Ok(Some(c)) = &mut f.webhook_configuration {
        c.metadata.annotations = Some(
            [(
                CERT_MANAGER_INJECT.to_owned(),
                "tollgate/tollgate-webhook".to_owned(),
            )]
            .into(),
        );
    }
    assert_eq!(find(&f, "the webhook's caBundle").result, Outcome::Success);
}

#[test]
fn a_webhook_that_sees_a_protected_namespace_is_named() {
    let mut f = healthy();
    if let Ok(Some(c)) = &mut f.webhook_configuration {
        c.webhooks.as_mut().unwrap()[0] = webhook(
            "annotated.inject.tollgate.dev",
            &certificate(NOW + DAY * 100),
            &["kube-system", "kube-public", "kube-node-lease"],
        );
    }
    assert_fails(
        &f,
        "the webhook never sees",
        &["annotated.inject.tollgate.dev does not exclude tollgate"],
    );
    // The release namespace is the one --namespace names.
    let mut f = healthy();
    f.names = ChartNames::new("tollgate", "iam");
    assert_fails(&f, "the webhook never sees", &["does not exclude iam"]);
}

#[test]
fn an_unavailable_api_service_and_its_ca_bundle_fail() {
    let mut f = healthy();
    if let Ok(Some(a)) = &mut f.api_service {
        a.status.as_mut().unwrap().conditions = Some(vec![APIServiceCondition {
            type_: "Available".into(),
            status: "False".into(),
            reason: Some("FailedDiscoveryCheck".into()),
            message: Some("failing or missing response from https://…".into()),
            ..Default::default()
        }]);
    }
    assert_fails(
        &f,
        "the tokens API",
        &["Available=False FailedDiscoveryCheck"],
    );

    let mut f = healthy();
    f.api_service = Ok(None);
    assert_fails(
        &f,
        "the tokens API",
        &["v1alpha1.tokens.oauth.tollgate.dev not found"],
    );

    let mut f = healthy();
    if let Ok(Some(a)) = &mut f.api_service {
        a.spec.as_mut().unwrap().ca_bundle =
            Some(ByteString(certificate(NOW + DAY * 100).into_bytes()));
    }
    assert_fails(
        &f,
        "the APIService's caBundle",
        &["not the CA in Secret tollgate/tollgate-ca"],
    );

    let mut f = healthy();
    if let Ok(Some(a)) = &mut f.api_service {
        a.spec.as_mut().unwrap().insecure_skip_tls_verify = Some(true);
    }
    assert_fails(&f, "the APIService's caBundle", &["insecureSkipTLSVerify"]);
}

#[test]
fn redis_out_of_reach_is_told_by_the_tokens_api_s_503() {
    let mut f = healthy();
    f.tokens_probe = TokensProbe::Refused {
        code: 503,
        reason: "ServiceUnavailable".into(),
        message: "the token store cannot be reached".into(),
    };
    assert_fails(
        &f,
        "the controller reaches Redis",
        &["503", "cannot be reached"],
    );

    f.tokens_probe = TokensProbe::Refused {
        code: 403,
        reason: "Forbidden".into(),
        message: "no".into(),
    };
    assert_fails(&f, "the controller reaches Redis", &["403 Forbidden"]);

    f.tokens_probe = TokensProbe::NotAsked;
    assert_eq!(
        find(&f, "the controller reaches Redis").result,
        Outcome::Warning
    );
}

#[test]
fn resources_not_ready_are_listed_with_their_reason() {
    let mut f = healthy();
    if let Ok(resources) = &mut f.resources {
        resources[2].status.conditions = vec![
            condition(
                "Accepted",
                "False",
                "SecretNotFound",
                "Secret shop/sampleapp not found",
            ),
            condition(
                "Ready",
                "False",
                "SecretNotFound",
                "Secret shop/sampleapp not found",
            ),
        ];
    }
    assert_fails(
        &f,
        "every OAuthService",
        &[
            "shop/OAuthApplication sampleapp: Ready=False SecretNotFound: Secret shop/sampleapp not found",
        ],
    );
    assert_eq!(find(&f, "every OAuthService").details.len(), 1);

    // Ready, but for an older generation.
    let mut f = healthy();
    if let Ok(resources) = &mut f.resources {
        resources[0].generation = Some(3);
    }
    assert_fails(&f, "every OAuthService", &["generation 3 not yet observed"]);

    // No condition at all: the controller never wrote status.
    let mut f = healthy();
    if let Ok(resources) = &mut f.resources {
        resources[1].status = ObservedStatus::default();
    }
    assert_fails(
        &f,
        "every OAuthService",
        &["shop/Consumer clientapp: no Ready condition"],
    );
}

#[test]
fn stale_sidecars_are_named_from_programmed_or_counted() {
    let mut f = healthy();
    if let Ok(resources) = &mut f.resources {
        resources[0].status.conditions[1] = condition(
            "Programmed",
            "False",
            "Pending",
            "iris-0 holds generation 4 of 5",
        );
    }
    assert_fails(
        &f,
        "every injected pod",
        &[
            "shop/OAuthService sampleirisservice: Programmed=False Pending: iris-0 holds generation 4 of 5",
        ],
    );

    // Today's controller writes no Programmed condition: the counts tell.
    let mut f = healthy();
    if let Ok(resources) = &mut f.resources {
        resources[0].status.conditions = vec![condition("Ready", "True", "Ready", "")];
        resources[0].status.up_to_date_pods = Some(1);
    }
    assert_fails(
        &f,
        "every injected pod",
        &["1 of 2 selected pods hold an older snapshot"],
    );
}

#[test]
fn a_certificate_near_its_end_fails() {
    let mut f = healthy();
    f.serving_certificates[0].pem = Ok(certificate(NOW + 3 * DAY + 10));
    assert_fails(&f, "the controller's certificates", &["in 3 days"]);

    f.serving_certificates[0].pem = Ok(certificate(NOW - 10));
    assert_fails(&f, "the controller's certificates", &["expired"]);

    f.cert_expiry_days = 0;
    f.serving_certificates[0].pem = Ok(certificate(NOW + DAY));
    assert_eq!(
        find(&f, "the controller's certificates").result,
        Outcome::Success
    );

    f.serving_certificates[0].pem = Err("403 Forbidden: secrets is forbidden".into());
    assert_eq!(
        find(&f, "the controller's certificates").result,
        Outcome::Warning
    );
}

#[test]
fn chart_names_follow_tollgate_fullname() {
    let names = ChartNames::new("tollgate", "tollgate");
    assert_eq!(names.controller(), "tollgate-controller");
    assert_eq!(names.webhook_configuration(), "tollgate");
    assert_eq!(names.ca_secret(), "tollgate-ca");
    // trunc 40 | trimSuffix "-"
    let long = ChartNames::new("a-release-name-that-is-much-longer-than-4-chars", "x");
    assert_eq!(long.fullname, "a-release-name-that-is-much-longer-than");
    assert_eq!(long.fullname.len(), 39);
}

#[test]
fn pre_checks_the_version_and_each_right() {
    let info = |major: &str, minor: &str| Info {
        major: major.into(),
        minor: minor.into(),
        git_version: format!("v{major}.{minor}.0"),
        ..Default::default()
    };
    assert_eq!(
        pre::version_supported(&Ok(info("1", "28+"))).result,
        Outcome::Success
    );
    assert_eq!(
        pre::version_supported(&Ok(info("1", "30"))).result,
        Outcome::Success
    );
    let old = pre::version_supported(&Ok(info("1", "27")));
    assert_eq!(old.result, Outcome::Failure);
    assert!(old.details[0].contains("v1.27.0"), "{old:?}");

    let f = PreFetched {
        version: Ok(info("1", "28")),
        rights: pre::install_rights("tollgate")
            .into_iter()
            .map(|r: Right| {
                let allowed = r.resource != "apiservices";
                (r, Ok(allowed))
            })
            .collect(),
    };
    let report = Report::new(pre::pre_groups(&f), true);
    assert_eq!(report.exit_code, EXIT_FAILED);
    let text = report.text();
    assert!(
        text.contains("✖ can create apiservices.apiregistration.k8s.io\n"),
        "{text}"
    );
    assert!(text.contains("✔ can create customresourcedefinitions.apiextensions.k8s.io\n"));
    assert!(text.contains("✔ can create secrets in namespace tollgate\n"));
}

#[test]
fn the_json_report_has_the_documented_schema() {
    let mut f = healthy();
    f.lease = Ok(None);
    let report = Report::new(install_groups(&f), true);
    let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(json["schemaVersion"], 1);
    assert_eq!(json["success"], false);
    assert_eq!(json["exitCode"], 1);
    let controller = &json["groups"][1];
    assert_eq!(controller["name"], "controller");
    let lease = &controller["checks"][1];
    assert_eq!(
        lease["description"],
        "the controller's Lease has a live holder"
    );
    assert_eq!(lease["result"], "failure");
    assert!(lease["hint"].as_str().unwrap().contains("logs"));
    assert!(lease["details"][0].as_str().unwrap().contains("not found"));
    // A passing check carries no hint.
    assert!(controller["checks"][0].get("hint").is_none());

    assert_eq!(Report::new(vec![], false).exit_code, EXIT_UNREACHABLE);
}

#[test]
fn conditions_are_found_by_type() {
    let list = vec![
        condition("Accepted", "True", "", ""),
        condition(checks::READY, "False", "X", "y"),
    ];
    assert_eq!(checks::condition(&list, checks::READY).unwrap().reason, "X");
    assert!(checks::condition(&list, checks::PROGRAMMED).is_none());
}

#[test]
fn control_characters_of_a_condition_message_are_escaped_in_text() {
    let mut f = healthy();
    if let Ok(resources) = &mut f.resources {
        resources[1].status.conditions = vec![condition(
            "Ready",
            "False",
            "Bad",
            "\x1b[2J\r\n✔ every OAuthService, Consumer and OAuthApplication is Ready",
        )];
    }
    let text = Report::new(install_groups(&f), true).text();
    assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
    assert!(text.contains("\\u{1b}[2J\\r\\n✔ every"), "{text}");
    // One line per detail: the forged ✔ stays inside it.
    assert!(
        !text.lines().any(|l| l.starts_with("✔ every OAuthService")),
        "{text}"
    );
}
