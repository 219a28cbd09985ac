//! The one thin layer that talks to the API server: it reads what the checks need, once, and
//! keeps each error as text for the check that reads it. No verdict is made here.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Client, Config};

use crate::fetched::{
    CaCertificate, Fetched, FetchedObjects, NamedCertificate, ObservedResource, TokensProbe,
};
use crate::names::{
    API_SERVICE, CA_CERT_KEY, CA_CONFIG_MAP, CERT_MANAGER_INJECT, ChartNames, TOKENS_GROUP_VERSION,
};
use crate::pre::{PreFetched, Right, install_rights};

/// A client of the kubeconfig's context (`KUBECONFIG`, `~/.kube/config`, or the pod's
/// ServiceAccount), each request bounded by `timeout`; and the API server's URL.
pub async fn client(timeout: Duration) -> Result<(Client, String), String> {
    let mut config = Config::infer().await.map_err(|e| e.to_string())?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // kube retries a 429, 503 or 504 up to 15 times, backing off to 1000 s: a check must
    // report the tokens API's 503 (Redis unreachable), not wait minutes for it to pass.
    config.default_retry = false;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    Ok((client, url))
}

/// The namespace of the kubeconfig's current context, if it names one.
pub fn context_namespace() -> Option<String> {
    let kubeconfig = kube::config::Kubeconfig::read().ok()?;
    let current = kubeconfig.current_context.as_deref()?;
    kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == current)?
        .context
        .as_ref()?
        .namespace
        .clone()
}

/// The API server's version: whether it answers at all.
pub async fn version(client: &Client) -> Fetched<k8s_openapi::apimachinery::pkg::version::Info> {
    client.apiserver_version().await.map_err(describe)
}

/// What `--pre` reads.
pub async fn fetch_pre(client: &Client, namespace: &str) -> PreFetched {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut rights = Vec::new();
    for right in install_rights(namespace) {
        let allowed = access(&reviews, &right).await;
        rights.push((right, allowed));
    }
    PreFetched {
        version: version(client).await,
        rights,
    }
}

async fn access(reviews: &Api<SelfSubjectAccessReview>, right: &Right) -> Fetched<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(right.verb.to_owned()),
                group: Some(right.group.to_owned()),
                resource: Some(right.resource.to_owned()),
                namespace: right.namespace.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .map_err(describe)?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Everything the checks of an installed release read.
pub async fn fetch_install(
    client: &Client,
    names: ChartNames,
    resource_namespace: Option<&str>,
    cert_expiry_days: u32,
) -> FetchedObjects {
    let namespace = names.namespace.as_str();
    let expected = tollgate_api::resources::crds();
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crds = Vec::new();
    for crd in &expected {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let got = crd_api.get_opt(&name).await.map_err(describe);
        crds.push((name, got));
    }
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get_opt(&names.controller())
        .await
        .map_err(describe);
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(&names.controller())
        .await
        .map_err(describe);
    let webhook_configuration = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(&names.webhook_configuration())
        .await
        .map_err(describe);
    let ca = fetch_ca(client, &names).await;
    let api_service = Api::<APIService>::all(client.clone())
        .get_opt(API_SERVICE)
        .await
        .map_err(describe);
    let tokens_probe = if available(&api_service) {
        probe_tokens(client, namespace).await
    } else {
        TokensProbe::NotAsked
    };

    let mut serving_certificates = Vec::new();
    match &ca {
        Ok(Some(ca)) => serving_certificates.push(NamedCertificate {
            what: format!("the controller's CA ({})", ca.source),
            pem: Ok(ca.pem.clone()),
        }),
        Ok(None) => {}
        Err(error) => serving_certificates.push(NamedCertificate {
            what: format!(
                "the controller's CA (Secret {namespace}/{})",
                names.ca_secret()
            ),
            pem: Err(error.clone()),
        }),
    }
    let by_cert_manager = matches!(&webhook_configuration, Ok(Some(c))
        if c.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(CERT_MANAGER_INJECT)));
    if by_cert_manager {
        let name = names.webhook_tls_secret();
        serving_certificates.push(NamedCertificate {
            what: format!("the webhook's certificate (Secret {namespace}/{name})"),
            pem: secret_key(client, namespace, &name, "tls.crt")
                .await
                .and_then(|pem| pem.ok_or_else(|| "not found".to_owned())),
        });
    }

    let resources = fetch_resources(client, &expected, resource_namespace).await;
    FetchedObjects {
        names,
        now: Timestamp::now(),
        cert_expiry_days,
        crds,
        deployment,
        lease,
        webhook_configuration,
        ca,
        api_service,
        tokens_probe,
        serving_certificates,
        resources,
    }
}

fn available(api_service: &Fetched<Option<APIService>>) -> bool {
    let Ok(Some(api_service)) = api_service else {
        return false;
    };
    api_service
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Available" && c.status == "True")
}

/// The controller's CA certificate: from its Secret, or, for a user who may not read
/// Secrets, from the ConfigMap the controller publishes it in (in namespaces with injected
/// pods; with two installs in a cluster, possibly the other's: the Secret is the one truth).
async fn fetch_ca(client: &Client, names: &ChartNames) -> Fetched<Option<CaCertificate>> {
    let secret = names.ca_secret();
    let from_secret = secret_key(client, &names.namespace, &secret, CA_CERT_KEY).await;
    match &from_secret {
        Ok(Some(pem)) => {
            return Ok(Some(CaCertificate {
                pem: pem.clone(),
                source: format!("Secret {}/{secret}", names.namespace),
            }));
        }
        Ok(None) => return Ok(None),
        // Refused: a user who may not read Secrets may read the published certificate.
        Err(_) => {}
    }
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    let params = ListParams::default()
        .fields(&format!("metadata.name={CA_CONFIG_MAP}"))
        .limit(1);
    let published = match config_maps.list(&params).await {
        Ok(list) => list.items.into_iter().find_map(|c| {
            let pem = c.data?.remove(CA_CERT_KEY)?;
            Some(CaCertificate {
                pem,
                source: format!(
                    "ConfigMap {}/{CA_CONFIG_MAP}",
                    c.metadata.namespace.unwrap_or_default()
                ),
            })
        }),
        Err(_) => None,
    };
    // Without it, the Secret's refusal says more than the fallback's.
    published
        .map(Some)
        .ok_or_else(|| from_secret.err().unwrap_or_default())
}

/// One key of a Secret, as text. The rest of the Secret (the CA's key) is dropped here.
async fn secret_key(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Fetched<Option<String>> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(describe)?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|mut data| data.remove(key))
        .and_then(|bytes| String::from_utf8(bytes.0).ok()))
}

/// A one-item list of the tokens API: the controller answers it from Redis.
async fn probe_tokens(client: &Client, namespace: &str) -> TokensProbe {
    let request = http::Request::get(format!(
        "/apis/{TOKENS_GROUP_VERSION}/namespaces/{namespace}/oauthtokens?limit=1"
    ))
    .body(Vec::new());
    let Ok(request) = request else {
        return TokensProbe::Unreachable(format!("bad namespace {namespace:?}"));
    };
    match client.request_text(request).await {
        Ok(_) => TokensProbe::Listed,
        Err(kube::Error::Api(status)) => TokensProbe::Refused {
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        Err(error) => TokensProbe::Unreachable(error.to_string()),
    }
}

/// The objects of the three kinds in `namespace` (or every one), with their status.
async fn fetch_resources(
    client: &Client,
    crds: &[CustomResourceDefinition],
    namespace: Option<&str>,
) -> Fetched<Vec<ObservedResource>> {
    let mut out = Vec::new();
    for crd in crds {
        let Some(version) = crd.spec.versions.iter().find(|v| v.storage) else {
            continue;
        };
        let group = crd.spec.group.clone();
        let resource = ApiResource {
            api_version: format!("{group}/{}", version.name),
            group,
            version: version.name.clone(),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
        };
        let api = match namespace {
            Some(namespace) => {
                Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
            }
            None => Api::<DynamicObject>::all_with(client.clone(), &resource),
        };
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("{}: {}", resource.plural, describe(e)))?;
        for object in list.items {
            let status = object
                .data
                .get("status")
                .cloned()
                .and_then(|s| serde_json::from_value(s).ok())
                .unwrap_or_default();
            out.push(ObservedResource {
                kind: resource.kind.clone(),
                namespace: object.metadata.namespace.unwrap_or_default(),
                name: object.metadata.name.unwrap_or_default(),
                generation: object.metadata.generation,
                status,
            });
        }
    }
    Ok(out)
}

/// An error as one line: Kubernetes' code, reason and message when it answered.
pub fn describe(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.reason.is_empty() => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        kube::Error::Api(status) => format!("{}: {}", status.code, status.message),
        other => other.to_string(),
    }
}
