//! Deltas over random pairs of snapshots, and every way a delta can be refused.

use super::*;
use crate::SecretDigest;
use crate::snapshot::{KeyMaterial, NamespaceStoreKey};
use crate::testing::snapshot::{application, consumer, service};

/// xorshift64*: random enough for test data, and the same run after run.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn store_key(generation: u8) -> NamespaceStoreKey {
    NamespaceStoreKey {
        namespace: "a".into(),
        current: KeyMaterial(vec![generation; 32]),
        previous: None,
    }
}

/// A snapshot of a few of twelve names in two namespaces, each entry in one of a few
/// variants, sorted as the compiler sorts.
fn random_snapshot(random: &mut Random, version: u64) -> Snapshot {
    let mut snapshot = Snapshot {
        version,
        ..Snapshot::default()
    };
    for namespace in ["a", "b"] {
        for n in 0..12 {
            let name = format!("e{n:02}");
            if random.below(3) != 0 {
                let mut entry = service(namespace, &name, &format!("/{name}"));
                entry.upstream.port = 8000 + random.below(3) as u16;
                snapshot.services.push(entry);
            }
            if random.below(3) != 0 {
                let mut entry = consumer(namespace, &name);
                entry.username = format!("user-{}", random.below(3));
                snapshot.consumers.push(entry);
            }
            if random.below(3) != 0 {
                // Unique within the namespace, as the compiler makes them.
                let client_id = format!("{name}-{}", random.below(3));
                let mut entry = application(namespace, &name, &name, &client_id);
                if random.below(2) == 0 {
                    entry.client_secret = None;
                }
                snapshot.applications.push(entry);
            }
        }
    }
    snapshot.store_key = match random.below(3) {
        0 => None,
        generation => Some(store_key(generation as u8)),
    };
    snapshot
}

#[test]
fn applying_the_diff_of_two_snapshots_gives_the_second() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let old = random_snapshot(&mut random, round);
        let version = round + 1 + random.below(5);
        let new = random_snapshot(&mut random, version);
        let delta = diff(&old, &new);
        assert_eq!(apply(&old, &delta).as_ref(), Ok(&new), "round {round}");
        // And through the wire.
        let json = serde_json::to_vec(&delta).unwrap();
        let back: Delta = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, delta);
        assert_eq!(apply(&old, &back).as_ref(), Ok(&new), "round {round}");
    }
}

#[test]
fn a_delta_holds_only_what_changed() {
    let mut random = Random(7);
    let old = random_snapshot(&mut random, 1);
    let same = Snapshot {
        version: 2,
        ..old.clone()
    };
    let delta = diff(&old, &same);
    assert!(delta.is_empty(), "{delta:?}");
    assert_eq!(
        serde_json::to_string(&delta).unwrap(),
        r#"{"from":1,"version":2}"#
    );

    let mut rotated = same.clone();
    rotated.applications[0].client_secret = Some(SecretDigest::with_iterations("new", 10));
    let removed = rotated.consumers.remove(0);
    let delta = diff(&old, &rotated);
    assert_eq!(delta.applications.put, [rotated.applications[0].clone()]);
    assert!(delta.applications.removed.is_empty());
    assert_eq!(delta.consumers.removed, [EntryKey::of(&removed)]);
    assert!(delta.consumers.put.is_empty() && delta.services.is_empty());
    assert_eq!(delta.len(), 2);
    assert_eq!(delta.store_key, None);
}

#[test]
fn a_delta_applies_to_its_own_version_only_and_goes_forward() {
    let old = Snapshot {
        version: 5,
        ..Snapshot::default()
    };
    let new = Snapshot {
        version: 6,
        services: vec![service("a", "s", "/s")],
        ..Snapshot::default()
    };
    let delta = diff(&old, &new);
    let older = Snapshot {
        version: 4,
        ..old.clone()
    };
    assert_eq!(
        apply(&older, &delta),
        Err(DeltaError::WrongBase {
            from: 5,
            current: 4
        })
    );
    let backwards = Delta {
        version: 5,
        ..delta.clone()
    };
    assert_eq!(
        apply(&old, &backwards),
        Err(DeltaError::NotForward {
            from: 5,
            version: 5
        })
    );
}

#[test]
fn a_delta_cannot_make_what_a_snapshot_may_not_hold() {
    let old = Snapshot {
        version: 1,
        consumers: vec![consumer("a", "c")],
        applications: vec![application("a", "one", "c", "shared")],
        ..Snapshot::default()
    };
    let put = |applications: Vec<Application>| Delta {
        from: 1,
        version: 2,
        applications: Changes {
            put: applications,
            removed: vec![],
        },
        ..Delta::default()
    };

    // A second application with the first one's client_id.
    let stolen = put(vec![application("a", "two", "c", "shared")]);
    assert_eq!(
        apply(&old, &stolen),
        Err(DeltaError::Invalid(InvalidSnapshot::DuplicateClientId {
            namespace: "a".into()
        }))
    );
    // The same client_id in another namespace is another client.
    assert!(apply(&old, &put(vec![application("b", "two", "c", "shared")])).is_ok());

    // One key put twice.
    let twice = put(vec![
        application("a", "two", "c", "x"),
        application("a", "two", "c", "y"),
    ]);
    assert!(matches!(
        apply(&old, &twice),
        Err(DeltaError::Invalid(InvalidSnapshot::DuplicateEntry {
            collection: "application",
            ..
        }))
    ));

    // Another application's id.
    let mut same_id = application("a", "two", "c", "two");
    same_id.id = old.applications[0].id;
    assert!(matches!(
        apply(&old, &put(vec![same_id])),
        Err(DeltaError::Invalid(InvalidSnapshot::DuplicateId { .. }))
    ));

    // Removing what is not there, or putting and removing one key.
    let missing = Delta {
        from: 1,
        version: 2,
        consumers: Changes {
            put: vec![],
            removed: vec![EntryKey {
                namespace: "a".into(),
                name: "nobody".into(),
            }],
        },
        ..Delta::default()
    };
    assert!(matches!(
        apply(&old, &missing),
        Err(DeltaError::RemovesMissing {
            collection: "consumer",
            ..
        })
    ));
    let both = Delta {
        consumers: Changes {
            put: vec![consumer("a", "c")],
            removed: vec![EntryKey::of(&consumer("a", "c"))],
        },
        ..missing
    };
    assert!(matches!(
        apply(&old, &both),
        Err(DeltaError::PutAndRemoved { .. })
    ));
}

#[test]
fn a_delta_shows_no_store_key_in_debug_or_errors() {
    let old = Snapshot::default();
    let new = Snapshot {
        version: 1,
        store_key: Some(NamespaceStoreKey {
            namespace: "a".into(),
            current: KeyMaterial(b"very secret key material, 32 b!!".to_vec()),
            previous: None,
        }),
        ..Snapshot::default()
    };
    let delta = diff(&old, &new);
    assert!(delta.store_key.is_some());
    let shown = format!("{delta:?}");
    assert!(!shown.contains("secret key"), "{shown}");
    let error = apply(&new, &delta).unwrap_err().to_string();
    assert!(!error.contains("secret key"), "{error}");
    // And a removed key is a change too.
    let back = diff(&new, &Snapshot { version: 2, ..old });
    assert_eq!(back.store_key, Some(StoreKeyChange { key: None }));
    assert_eq!(apply(&new, &back).unwrap().store_key, None);
}

#[test]
fn one_rotated_secret_among_10_000_applications_costs_well_under_10_kib() {
    let mut old = Snapshot {
        version: 1,
        services: vec![service("shop", "svc", "/api")],
        ..Snapshot::default()
    };
    for n in 0..10_000 {
        let name = format!("app-{n:05}");
        old.consumers.push(consumer("shop", &name));
        old.applications
            .push(application("shop", &name, &name, &format!("client-{n:05}")));
    }
    let mut new = Snapshot {
        version: 2,
        ..old.clone()
    };
    new.applications[4321].client_secret = Some(SecretDigest::new("rotated"));
    let delta = diff(&old, &new);
    let line = crate::stream::Frame::Delta { delta }.to_line();
    let whole = crate::stream::snapshot_line(&new);
    // `cargo test -p tollgate-api delta -- --nocapture` shows the numbers PERFORMANCE.md cites.
    eprintln!("delta {} bytes, whole {} bytes", line.len(), whole.len());
    assert!(line.len() < 10 * 1024, "{} bytes", line.len());
    assert!(
        whole.len() > 100 * line.len(),
        "{} vs {}",
        whole.len(),
        line.len()
    );
}
