//! The controller's CA kept in a Secret (`--ca-secret`), so that every replica, and the next
//! one after a restart, signs with the same CA the injected pods trust.

use anyhow::Context;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;

use super::kept_secret::{KeptSecret, Reading, read_or_create};
use crate::ca::Ca;
use crate::index::ObjectRef;

/// Keys of the CA Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";

/// The CA stored in `secret`; made and stored there when the Secret does not exist.
pub async fn load_or_create_ca(client: &Client, secret: &ObjectRef) -> anyhow::Result<Ca> {
    let kept = KeptSecret {
        flag: "--ca-secret",
        what: "CA",
        secret,
    };
    read_or_create(
        client,
        &kept,
        |found| {
            Ok(Reading::Use(
                ca_from_secret(found).context("not a usable CA")?,
            ))
        },
        || {
            let ca = Ca::generate().context("cannot make the controller's CA")?;
            let stored = ca_secret(&secret.name, &ca);
            Ok((ca, stored))
        },
    )
    .await
}

/// The CA in a Secret's `ca.crt` and `ca.key`.
pub fn ca_from_secret(secret: &Secret) -> anyhow::Result<Ca> {
    let read = |key: &str| -> anyhow::Result<String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .with_context(|| format!("no key `{key}`"))?;
        String::from_utf8(bytes.0.clone()).with_context(|| format!("`{key}` is not PEM text"))
    };
    let cert = read(CA_CERT_KEY)?;
    let key = read(CA_KEY_KEY)?;
    Ca::from_pem(&cert, &key).map_err(anyhow::Error::new)
}

/// The Secret that stores `ca`.
pub fn ca_secret(name: &str, ca: &Ca) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "tollgate".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            [
                (
                    CA_CERT_KEY.to_owned(),
                    ByteString(ca.cert_pem().as_bytes().to_vec()),
                ),
                (
                    CA_KEY_KEY.to_owned(),
                    ByteString(ca.key_pem().expose().as_bytes().to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_survives_its_secret() {
        let ca = Ca::generate().unwrap();
        let secret = ca_secret("tollgate-ca", &ca);
        assert_eq!(secret.metadata.name.as_deref(), Some("tollgate-ca"));
        let back = ca_from_secret(&secret).unwrap();
        assert_eq!(back.cert_pem(), ca.cert_pem());
        let error = ca_from_secret(&Secret::default()).err().unwrap();
        assert!(error.to_string().contains("no key `ca.crt`"), "{error}");
    }
}
