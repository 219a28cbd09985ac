//! The checks of an installed release: each a pure function of the [`FetchedObjects`], so
//! every verdict is a unit test over made-up objects.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::fetched::{FetchedObjects, TokensProbe};
use crate::names::{API_SERVICE, CERT_MANAGER_INJECT, WEBHOOK_SUFFIX};
use crate::report::{CheckResult, Group};

mod resources;

pub use self::resources::{condition, not_ready, resources_ready, sidecars_current, stale_pods};

/// The condition that says a resource works. Should the controller rename it, this is the
/// one line to change.
pub const READY: &str = "Ready";
/// The condition that says the resource is valid; one that is not is named by the `Ready`
/// check, not again as stale pods.
pub const ACCEPTED: &str = "Accepted";
/// The condition that says every selected pod holds the snapshot with the resource; its
/// message names the stale pods. Older controllers do not write it: the pod counts then stand
/// in for it.
pub const PROGRAMMED: &str = "Programmed";

/// Every group of checks of an installed release, in order.
pub fn install_groups(f: &FetchedObjects) -> Vec<Group> {
    vec![
        Group {
            name: "crds",
            checks: vec![crds_installed(f)],
        },
        Group {
            name: "controller",
            checks: vec![
                deployment_available(f),
                lease_held(f),
                serving_certificates_valid(f),
            ],
        },
        Group {
            name: "webhook",
            checks: vec![
                webhook_configuration_exists(f),
                webhook_ca_bundle_matches(f),
                webhook_namespaces_excluded(f),
            ],
        },
        Group {
            name: "tokens-api",
            checks: vec![
                api_service_available(f),
                api_service_ca_bundle_matches(f),
                controller_reaches_redis(f),
            ],
        },
        Group {
            name: "resources",
            checks: vec![resources_ready(f), sidecars_current(f)],
        },
    ]
}

// --- crds ---

const CRDS: &str = "the CRDs are installed at this binary's version";

pub fn crds_installed(f: &FetchedObjects) -> CheckResult {
    let expected = tollgate_api::resources::crds();
    let mut details = Vec::new();
    for crd in &expected {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        match f.crds.iter().find(|(n, _)| n == name).map(|(_, got)| got) {
            None | Some(Ok(None)) => details.push(format!("{name}: not installed")),
            Some(Err(error)) => details.push(format!("{name}: cannot read it: {error}")),
            Some(Ok(Some(installed))) => details.extend(
                crd_differences(crd, installed)
                    .into_iter()
                    .map(|d| format!("{name}: {d}")),
            ),
        }
    }
    if details.is_empty() {
        return CheckResult::success(CRDS);
    }
    CheckResult::failure(
        CRDS,
        details,
        "install the CRDs this binary generates: `tollgate crdgen | kubectl apply --server-side -f -` \
         (or `helm upgrade` with the chart of this version)",
    )
}

/// How `installed` differs from `expected`: its versions, whether each is served and stored,
/// its schema, columns and subresources; and whether it is established.
fn crd_differences(
    expected: &CustomResourceDefinition,
    installed: &CustomResourceDefinition,
) -> Vec<String> {
    let mut out = Vec::new();
    for version in &expected.spec.versions {
        let Some(got) = installed
            .spec
            .versions
            .iter()
            .find(|v| v.name == version.name)
        else {
            out.push(format!("version {} is not installed", version.name));
            continue;
        };
        if !got.served {
            out.push(format!("version {} is not served", version.name));
        }
        if got.storage != version.storage {
            out.push(format!(
                "version {} is {}the storage version",
                version.name,
                if got.storage { "" } else { "not " }
            ));
        }
        if as_json(&got.schema) != as_json(&version.schema)
            || as_json(&got.additional_printer_columns)
                != as_json(&version.additional_printer_columns)
            || as_json(&got.subresources) != as_json(&version.subresources)
        {
            out.push(format!(
                "version {} differs from this binary's (schema, columns or subresources): \
                 installed by another tollgate version?",
                version.name
            ));
        }
    }
    for got in &installed.spec.versions {
        if got.served && !expected.spec.versions.iter().any(|v| v.name == got.name) {
            out.push(format!(
                "serves version {}, which this binary does not know: the CRDs are newer than it",
                got.name
            ));
        }
    }
    let established = installed
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Established" && c.status == "True");
    if !established {
        out.push("not Established yet".to_owned());
    }
    out
}

fn as_json<T: serde::Serialize>(value: &T) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

// --- controller ---

const DEPLOYMENT: &str = "the controller Deployment is available";

pub fn deployment_available(f: &FetchedObjects) -> CheckResult {
    let name = format!("{}/{}", f.names.namespace, f.names.controller());
    let hint = format!(
        "kubectl -n {} describe deployment {}; kubectl -n {} logs deployment/{}",
        f.names.namespace,
        f.names.controller(),
        f.names.namespace,
        f.names.controller()
    );
    let deployment = match &f.deployment {
        Err(error) => {
            return CheckResult::failure(
                DEPLOYMENT,
                vec![format!("cannot read Deployment {name}: {error}")],
                hint,
            );
        }
        Ok(None) => {
            return CheckResult::failure(
                DEPLOYMENT,
                vec![format!("Deployment {name} not found")],
                not_installed_hint(f),
            );
        }
        Ok(Some(deployment)) => deployment,
    };
    let status = deployment.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let condition = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Available");
    let condition_true = condition.as_ref().is_some_and(|c| c.status == "True");
    let counts = format!("{available} of {wanted} replicas available");
    if condition_true && available > 0 {
        return CheckResult::success(DEPLOYMENT).with_detail(counts);
    }
    let mut details = vec![format!("Deployment {name}: {counts}")];
    if let Some(c) = condition {
        details.push(condition_line(
            "Available",
            &c.status,
            c.reason.as_deref().unwrap_or_default(),
            c.message.as_deref().unwrap_or_default(),
        ));
    }
    CheckResult::failure(DEPLOYMENT, details, hint)
}

const LEASE: &str = "the controller's Lease has a live holder";

pub fn lease_held(f: &FetchedObjects) -> CheckResult {
    let name = format!("{}/{}", f.names.namespace, f.names.controller());
    let hint = format!(
        "the replica holding the Lease writes status: are the controller's pods running? \
         kubectl -n {} logs deployment/{}",
        f.names.namespace,
        f.names.controller()
    );
    let lease = match &f.lease {
        Err(error) => {
            return CheckResult::failure(
                LEASE,
                vec![format!("cannot read Lease {name}: {error}")],
                hint,
            );
        }
        Ok(None) => {
            return CheckResult::failure(
                LEASE,
                vec![format!("Lease {name} not found: no controller has started")],
                hint,
            );
        }
        Ok(Some(lease)) => lease,
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return CheckResult::failure(LEASE, vec![format!("Lease {name} has no holder")], hint);
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(1));
    let renewed = spec
        .renew_time
        .or(spec.acquire_time)
        .map(|t| t.0.as_second());
    match renewed {
        Some(renewed) if renewed + duration > f.now.as_second() => {
            CheckResult::success(LEASE).with_detail(format!("held by {holder}"))
        }
        Some(renewed) => CheckResult::failure(
            LEASE,
            vec![format!(
                "Lease {name}: {holder} last renewed it {}s ago, for {duration}s: it has expired",
                f.now.as_second() - renewed
            )],
            hint,
        ),
        None => CheckResult::failure(
            LEASE,
            vec![format!("Lease {name}: {holder} never renewed it")],
            hint,
        ),
    }
}

fn serving_description(f: &FetchedObjects) -> String {
    format!(
        "the controller's certificates are valid for more than {} days",
        f.cert_expiry_days
    )
}

/// The controller makes its serving certificate anew at each start, signed by its CA, so the
/// CA's end is the serving certificate's; with cert-manager, the webhook's certificate is
/// cert-manager's and read too.
pub fn serving_certificates_valid(f: &FetchedObjects) -> CheckResult {
    let description = serving_description(f);
    if f.serving_certificates.is_empty() {
        return CheckResult::warning(
            description,
            vec![format!(
                "the controller's CA (Secret {}/{}) was not found",
                f.names.namespace,
                f.names.ca_secret()
            )],
            "the controller stores its CA there at its first start: is it running?",
        );
    }
    let mut failures = Vec::new();
    let mut unread = Vec::new();
    let mut fine = Vec::new();
    for certificate in &f.serving_certificates {
        let pem = match &certificate.pem {
            Ok(pem) => pem,
            Err(error) => {
                unread.push(format!("{}: cannot read it: {error}", certificate.what));
                continue;
            }
        };
        match not_after(pem) {
            None => failures.push(format!("{}: not a PEM certificate", certificate.what)),
            Some(end) => {
                let left = end - f.now.as_second();
                let days = left.div_euclid(86_400);
                let until = k8s_openapi::jiff::Timestamp::from_second(end)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| end.to_string());
                if left <= 0 {
                    failures.push(format!("{}: expired at {until}", certificate.what));
                } else if days < i64::from(f.cert_expiry_days) {
                    failures.push(format!(
                        "{}: expires at {until}, in {days} days",
                        certificate.what
                    ));
                } else {
                    fine.push(format!("{}: valid until {until}", certificate.what));
                }
            }
        }
    }
    if !failures.is_empty() {
        failures.extend(unread);
        return CheckResult::failure(
            description,
            failures,
            "renew it: delete the CA Secret and restart the controller (it makes a new CA, and \
             injected pods get certificates of it as they restart), or let cert-manager renew \
             the webhook's certificate",
        );
    }
    if fine.is_empty() || !unread.is_empty() {
        return CheckResult::warning(
            description,
            unread,
            "reading the CA's Secret needs `get secrets` in the release namespace",
        );
    }
    CheckResult {
        details: fine,
        ..CheckResult::success(description)
    }
}

/// The end of the first certificate of `pem`, in seconds since the epoch.
pub fn not_after(pem: &str) -> Option<i64> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let certificate = block.parse_x509().ok()?;
    Some(certificate.validity().not_after.timestamp())
}

/// The DER of each certificate of a PEM bundle.
fn certificates_der(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}

/// Whether `bundle` holds the CA certificate of `ca_pem`.
fn bundle_holds(bundle: Option<&ByteString>, ca_pem: &str) -> bool {
    let Some(ca) = certificates_der(ca_pem.as_bytes()).into_iter().next() else {
        return false;
    };
    bundle.is_some_and(|b| certificates_der(&b.0).contains(&ca))
}

// --- webhook ---

const WEBHOOK_EXISTS: &str = "the injection webhook is registered";
const WEBHOOK_CA: &str = "the webhook's caBundle is the controller's CA";
const WEBHOOK_EXCLUDES: &str = "the webhook never sees the cluster's or tollgate's namespaces";

pub fn webhook_configuration_exists(f: &FetchedObjects) -> CheckResult {
    let name = f.names.webhook_configuration();
    match &f.webhook_configuration {
        Ok(Some(_)) => CheckResult::success(WEBHOOK_EXISTS),
        Ok(None) => CheckResult::failure(
            WEBHOOK_EXISTS,
            vec![format!(
                "MutatingWebhookConfiguration {name} not found: no pod gets a sidecar"
            )],
            "`helm upgrade` the release to make it again (a release installed with \
             webhook.enabled=false has none: then ignore this)",
        ),
        Err(error) => CheckResult::failure(
            WEBHOOK_EXISTS,
            vec![format!(
                "cannot read MutatingWebhookConfiguration {name}: {error}"
            )],
            "reading it needs `get mutatingwebhookconfigurations`",
        ),
    }
}

/// The chart's webhooks in the configuration (none when it could not be read).
fn tollgate_webhooks(f: &FetchedObjects) -> Vec<&MutatingWebhook> {
    match &f.webhook_configuration {
        Ok(Some(configuration)) => configuration
            .webhooks
            .iter()
            .flatten()
            .filter(|w| w.name.ends_with(WEBHOOK_SUFFIX))
            .collect(),
        _ => Vec::new(),
    }
}

pub fn webhook_ca_bundle_matches(f: &FetchedObjects) -> CheckResult {
    let Ok(Some(configuration)) = &f.webhook_configuration else {
        return skipped(WEBHOOK_CA, "no webhook configuration to read");
    };
    let webhooks = tollgate_webhooks(f);
    let by_cert_manager = configuration
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CERT_MANAGER_INJECT));
    if let Some(source) = by_cert_manager {
        let empty: Vec<String> = webhooks
            .iter()
            .filter(|w| {
                w.client_config
                    .ca_bundle
                    .as_ref()
                    .is_none_or(|b| b.0.is_empty())
            })
            .map(|w| format!("{}: no caBundle yet", w.name))
            .collect();
        if empty.is_empty() {
            return CheckResult::success(WEBHOOK_CA)
                .with_detail(format!("kept by cert-manager, from {source}"));
        }
        return CheckResult::failure(
            WEBHOOK_CA,
            empty,
            "cert-manager injects it: is cert-manager running, and its Certificate Ready?",
        );
    }
    let ca = match &f.ca {
        Ok(Some(ca)) => ca,
        Ok(None) => {
            return CheckResult::warning(
                WEBHOOK_CA,
                vec![format!(
                    "the controller's CA was not found (Secret {}/{})",
                    f.names.namespace,
                    f.names.ca_secret()
                )],
                "the controller stores its CA when it starts: is it running?",
            );
        }
        Err(error) => {
            return CheckResult::warning(
                WEBHOOK_CA,
                vec![format!("cannot read the controller's CA: {error}")],
                "reading it needs `get secrets` in the release namespace",
            );
        }
    };
    let stale: Vec<String> = webhooks
        .iter()
        .filter(|w| !bundle_holds(w.client_config.ca_bundle.as_ref(), &ca.pem))
        .map(|w| {
            format!(
                "{}: its caBundle is not the CA in {}: the API server cannot call the webhook",
                w.name, ca.source
            )
        })
        .collect();
    if stale.is_empty() && !webhooks.is_empty() {
        return CheckResult::success(WEBHOOK_CA);
    }
    CheckResult::failure(
        WEBHOOK_CA,
        if webhooks.is_empty() {
            vec!["no tollgate webhook in the configuration".to_owned()]
        } else {
            stale
        },
        "the controller writes it at start and every minute: is it running? \
         (a `helm upgrade` resets it until then)",
    )
}

pub fn webhook_namespaces_excluded(f: &FetchedObjects) -> CheckResult {
    let Ok(Some(_)) = &f.webhook_configuration else {
        return skipped(WEBHOOK_EXCLUDES, "no webhook configuration to read");
    };
    let webhooks = tollgate_webhooks(f);
    if webhooks.is_empty() {
        return CheckResult::failure(
            WEBHOOK_EXCLUDES,
            vec!["no tollgate webhook in the configuration".to_owned()],
            "`helm upgrade` the release to restore it",
        );
    }
    let wanted = f.names.excluded_namespaces();
    let mut details = Vec::new();
    for webhook in webhooks {
        let excluded: Vec<&str> = webhook
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .into_iter()
            .flatten()
            .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
            .flat_map(|e| e.values.iter().flatten())
            .map(String::as_str)
            .collect();
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|n| !excluded.contains(n))
            .collect();
        if !missing.is_empty() {
            details.push(format!(
                "{} does not exclude {}",
                webhook.name,
                missing.join(", ")
            ));
        }
    }
    if details.is_empty() {
        return CheckResult::success(WEBHOOK_EXCLUDES);
    }
    CheckResult::failure(
        WEBHOOK_EXCLUDES,
        details,
        "with failurePolicy Fail, a webhook that sees these namespaces can block the cluster's \
         own pods or the controller's: `helm upgrade` restores the chart's namespaceSelector",
    )
}

// --- tokens API ---

const API_SERVICE_AVAILABLE: &str = "the tokens API (APIService) is available";
const API_SERVICE_CA: &str = "the APIService's caBundle is the controller's CA";
const REDIS: &str = "the controller reaches Redis";

pub fn api_service_available(f: &FetchedObjects) -> CheckResult {
    let api_service = match &f.api_service {
        Err(error) => {
            return CheckResult::failure(
                API_SERVICE_AVAILABLE,
                vec![format!("cannot read APIService {API_SERVICE}: {error}")],
                "reading it needs `get apiservices`",
            );
        }
        Ok(None) => {
            return CheckResult::failure(
                API_SERVICE_AVAILABLE,
                vec![format!(
                    "APIService {API_SERVICE} not found: `kubectl get oauthtokens` fails"
                )],
                "`helm upgrade` with a chart that serves the tokens API",
            );
        }
        Ok(Some(api_service)) => api_service,
    };
    let available = api_service
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Available");
    match available {
        Some(c) if c.status == "True" => CheckResult::success(API_SERVICE_AVAILABLE),
        Some(c) => CheckResult::failure(
            API_SERVICE_AVAILABLE,
            vec![condition_line(
                "Available",
                &c.status,
                c.reason.as_deref().unwrap_or_default(),
                c.message.as_deref().unwrap_or_default(),
            )],
            api_service_hint(f),
        ),
        None => CheckResult::failure(
            API_SERVICE_AVAILABLE,
            vec!["no Available condition yet".to_owned()],
            api_service_hint(f),
        ),
    }
}

fn api_service_hint(f: &FetchedObjects) -> String {
    format!(
        "the API server must reach the controller through Service {}/{}: \
         kubectl get apiservice {API_SERVICE} -o yaml",
        f.names.namespace,
        f.names.controller()
    )
}

pub fn api_service_ca_bundle_matches(f: &FetchedObjects) -> CheckResult {
    let Ok(Some(api_service)) = &f.api_service else {
        return skipped(API_SERVICE_CA, "no APIService to read");
    };
    let spec = api_service.spec.clone().unwrap_or_default();
    if spec.insecure_skip_tls_verify == Some(true) {
        return CheckResult::failure(
            API_SERVICE_CA,
            vec!["insecureSkipTLSVerify is set: the API server would trust any server".to_owned()],
            "remove insecureSkipTLSVerify; the controller keeps the caBundle",
        );
    }
    match &f.ca {
        Ok(Some(ca)) if bundle_holds(spec.ca_bundle.as_ref(), &ca.pem) => {
            CheckResult::success(API_SERVICE_CA)
        }
        Ok(Some(ca)) => CheckResult::failure(
            API_SERVICE_CA,
            vec![format!(
                "APIService {API_SERVICE}: its caBundle is not the CA in {}",
                ca.source
            )],
            "the controller keeps it as it does the webhook's: is it running?",
        ),
        Ok(None) => CheckResult::warning(
            API_SERVICE_CA,
            vec!["the controller's CA was not found".to_owned()],
            "the controller stores its CA when it starts: is it running?",
        ),
        Err(error) => CheckResult::warning(
            API_SERVICE_CA,
            vec![format!("cannot read the controller's CA: {error}")],
            "reading it needs `get secrets` in the release namespace",
        ),
    }
}

pub fn controller_reaches_redis(f: &FetchedObjects) -> CheckResult {
    let hint = format!(
        "check the controller's --redis-url and that Redis runs: kubectl -n {} logs deployment/{}",
        f.names.namespace,
        f.names.controller()
    );
    match &f.tokens_probe {
        TokensProbe::Listed => CheckResult::success(REDIS),
        TokensProbe::Refused {
            code: 503,
            reason,
            message,
        } if reason == "ServiceUnavailable" => CheckResult::failure(
            REDIS,
            vec![format!("the tokens API answers 503: {message}")],
            hint,
        ),
        TokensProbe::Refused {
            code,
            reason,
            message,
        } => CheckResult::failure(
            REDIS,
            vec![format!("listing tokens failed: {code} {reason}: {message}")],
            "`kubectl get oauthtokens` needs the right to list them (the chart's token-viewer role)",
        ),
        TokensProbe::Unreachable(error) => {
            CheckResult::failure(REDIS, vec![format!("listing tokens failed: {error}")], hint)
        }
        TokensProbe::NotAsked => CheckResult::warning(
            REDIS,
            vec!["not checked: the tokens API is not available".to_owned()],
            "the controller answers for Redis through the tokens API; fix the APIService first",
        ),
    }
}

// --- shared ---

/// "Ready=False SecretNotFound: …", as `kubectl describe` would sum a condition up.
fn condition_line(type_: &str, status: &str, reason: &str, message: &str) -> String {
    let mut line = format!("{type_}={status}");
    if !reason.is_empty() {
        line.push_str(&format!(" {reason}"));
    }
    if !message.is_empty() {
        line.push_str(&format!(": {message}"));
    }
    line
}

/// A check that cannot be judged because what it reads is missing; the check that reads that
/// has already failed.
fn skipped(description: &str, why: &str) -> CheckResult {
    CheckResult::warning(
        description,
        vec![format!("not checked: {why}")],
        "see the check above",
    )
}

fn not_installed_hint(f: &FetchedObjects) -> String {
    format!(
        "is tollgate installed as release {:?} in namespace {}? Pass --release and --namespace \
         (helm list -A shows them)",
        f.names.fullname, f.names.namespace
    )
}
