//! The custom resources users `kubectl apply`, derived into CRDs.
// TODO(helper): implement.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "oauth.tollgate.dev",
    version = "v1alpha1",
    kind = "OAuthService",
    namespaced
)]
pub struct OAuthServiceSpec {}

#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "oauth.tollgate.dev",
    version = "v1alpha1",
    kind = "Consumer",
    namespaced
)]
pub struct ConsumerSpec {}

#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "oauth.tollgate.dev",
    version = "v1alpha1",
    kind = "OAuthApplication",
    namespaced
)]
pub struct OAuthApplicationSpec {}
