//! A Secret the controller keeps for itself (its CA, its root store key): read, completed,
//! or created when it does not exist. Replicas that start together race here, and the race
//! is settled once for both: whoever creates (or completes) the Secret first wins, and the
//! others, answered 409, read the winner's on their next round.

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::index::ObjectRef;

/// Rounds of read, then create or complete, before giving up on a Secret that keeps changing.
const ROUNDS: usize = 3;

/// Which Secret, and how to name it in messages.
pub struct KeptSecret<'a> {
    /// The flag that names it, for errors: `--ca-secret`.
    pub flag: &'a str,
    /// What it keeps, for the log: `CA`.
    pub what: &'a str,
    pub secret: &'a ObjectRef,
}

/// What a Secret that exists holds.
pub enum Reading<T> {
    /// What is needed.
    Use(T),
    /// Not all of it: `value`, once `update` is merged into the Secret (guarded by the
    /// resourceVersion that was read).
    Complete { value: T, update: Box<Secret> },
}

/// The value kept in `kept`: read with `read`, or made with `create` (the value and the
/// Secret that stores it) when the Secret does not exist.
pub async fn read_or_create<T>(
    client: &Client,
    kept: &KeptSecret<'_>,
    read: impl Fn(&Secret) -> anyhow::Result<Reading<T>>,
    create: impl Fn() -> anyhow::Result<(T, Secret)>,
) -> anyhow::Result<T> {
    let KeptSecret { flag, what, secret } = kept;
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
    for _ in 0..ROUNDS {
        let found = api
            .get_opt(&secret.name)
            .await
            .with_context(|| format!("{flag} {secret}: cannot read the Secret"))?;
        let Some(found) = found else {
            let (value, stored) = create()?;
            match api.create(&PostParams::default(), &stored).await {
                Ok(_) => {
                    tracing::info!(%secret, "made a new {what} and stored it in its Secret");
                    return Ok(value);
                }
                Err(error) if is_conflict(&error) => continue,
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("{flag} {secret}: cannot create the Secret"));
                }
            }
        };
        let (value, mut update) = match read(&found).with_context(|| format!("{flag} {secret}"))? {
            Reading::Use(value) => return Ok(value),
            Reading::Complete { value, update } => (value, update),
        };
        update.metadata.resource_version = found.metadata.resource_version.clone();
        match api
            .patch(
                &secret.name,
                &PatchParams::default(),
                &Patch::Merge(&*update),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(%secret, "completed its Secret with a new {what}");
                return Ok(value);
            }
            Err(error) if is_conflict(&error) => continue,
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("{flag} {secret}: cannot update the Secret"));
            }
        }
    }
    anyhow::bail!("{flag} {secret}: the Secret keeps changing; retry")
}

/// Another replica created or changed the Secret first: read theirs.
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
