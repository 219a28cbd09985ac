//! The controller's root store key: made once, kept in a Secret of its own namespace
//! (`--store-key-secret`), so that every replica and every restart seals alike. Pods never
//! see it: each gets its namespace's keys, derived from it (see [`crate::index`]).
//!
//! The Secret holds `current` and, during a rotation, `previous`: the current one seals, both
//! verify. Rotating is moving `current` to `previous`, deleting `current`, and restarting the
//! controller, which makes a new `current`.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use tollgate_store::{KeyPair, MIN_KEY_LEN, StoreKey};

use crate::index::ObjectRef;
use crate::kube::{KeptSecret, Reading, read_or_create};

/// The Secret's data key of the key that seals.
pub const CURRENT_KEY: &str = "current";
/// The Secret's data key of the key before the last rotation, which still verifies.
pub const PREVIOUS_KEY: &str = "previous";

/// What [`key_pair_of`] found in a Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Both keys usable (or no previous one).
    Keys(KeyPair),
    /// `current` is missing: a rotation asked for a new one. The previous key, if any, stays.
    NeedsCurrent { previous: Option<StoreKey> },
}

/// A fresh random key of [`MIN_KEY_LEN`] bytes.
pub fn generate() -> anyhow::Result<StoreKey> {
    let mut bytes = vec![0u8; MIN_KEY_LEN];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(StoreKey::new(bytes)?)
}

/// The keys in `secret`'s data.
pub fn key_pair_of(secret: &Secret) -> Result<Found, String> {
    let data = secret.data.as_ref();
    let read = |name: &str| -> Result<Option<StoreKey>, String> {
        data.and_then(|d| d.get(name))
            .map(|bytes| StoreKey::new(bytes.0.clone()).map_err(|e| format!("`{name}` {e}")))
            .transpose()
    };
    let previous = read(PREVIOUS_KEY)?;
    Ok(match read(CURRENT_KEY)? {
        Some(current) => Found::Keys(KeyPair { current, previous }),
        None => Found::NeedsCurrent { previous },
    })
}

/// The Secret named `name` that stores `keys`.
pub fn secret_of(name: &str, keys: &KeyPair) -> Secret {
    let mut data = std::collections::BTreeMap::new();
    data.insert(
        CURRENT_KEY.to_owned(),
        ByteString(keys.current.expose().to_vec()),
    );
    if let Some(previous) = &keys.previous {
        data.insert(
            PREVIOUS_KEY.to_owned(),
            ByteString(previous.expose().to_vec()),
        );
    }
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
        data: Some(data),
        ..Default::default()
    }
}

/// The root key pair of `secret`: read, completed with a new `current` after a rotation, or
/// created with a new key when the Secret does not exist.
pub async fn load_or_create(client: &Client, secret: &ObjectRef) -> anyhow::Result<KeyPair> {
    let kept = KeptSecret {
        flag: "--store-key-secret",
        what: "store key",
        secret,
    };
    read_or_create(
        client,
        &kept,
        |found| match key_pair_of(found).map_err(anyhow::Error::msg)? {
            Found::Keys(keys) => Ok(Reading::Use(keys)),
            Found::NeedsCurrent { previous } => {
                let keys = KeyPair {
                    current: generate()?,
                    previous,
                };
                let update = Box::new(secret_of(&secret.name, &keys));
                Ok(Reading::Complete {
                    value: keys,
                    update,
                })
            }
        },
        || {
            let keys = KeyPair::new(generate()?);
            let stored = secret_of(&secret.name, &keys);
            Ok((keys, stored))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> StoreKey {
        StoreKey::new(vec![byte; 32]).unwrap()
    }

    #[test]
    fn a_secret_round_trips_its_keys() {
        for keys in [
            KeyPair::new(key(1)),
            KeyPair {
                current: key(1),
                previous: Some(key(2)),
            },
        ] {
            let secret = secret_of("tollgate-store-key", &keys);
            assert_eq!(key_pair_of(&secret), Ok(Found::Keys(keys)));
        }
    }

    #[test]
    fn a_rotation_leaves_previous_and_asks_for_a_new_current() {
        let mut secret = secret_of("s", &KeyPair::new(key(1)));
        let data = secret.data.as_mut().unwrap();
        let old = data.remove(CURRENT_KEY).unwrap();
        data.insert(PREVIOUS_KEY.to_owned(), old);
        assert_eq!(
            key_pair_of(&secret),
            Ok(Found::NeedsCurrent {
                previous: Some(key(1))
            })
        );
        assert_eq!(
            key_pair_of(&Secret::default()),
            Ok(Found::NeedsCurrent { previous: None })
        );
    }

    #[test]
    fn a_short_key_is_an_error_naming_it_without_showing_it() {
        let mut secret = secret_of("s", &KeyPair::new(key(1)));
        secret
            .data
            .as_mut()
            .unwrap()
            .insert(CURRENT_KEY.to_owned(), ByteString(b"short secret".to_vec()));
        let err = key_pair_of(&secret).unwrap_err();
        assert!(err.contains("`current`"), "{err}");
        assert!(err.contains("12 bytes"), "{err}");
        assert!(!err.contains("short secret"), "{err}");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(generate().unwrap(), generate().unwrap());
    }
}
