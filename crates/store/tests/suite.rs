//! One behavioural suite for every store: each case is written once, generic over
//! [`TokenStore`], and `suite!` runs it against a [`MemoryStore`] and against a
//! [`RedisStore`] on a fresh `redis-server`. Below it, what only Redis has: what it holds
//! (no plaintext, hash tags, TTLs), outages, AUTH and TLS.
//!
//! Nothing here asserts that something happened *within* some time: expiry is awaited by
//! polling with a generous deadline, so a slow machine makes the suite slower, not red.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate_store::{
    AnyTokenStore, KeyPair, ListFilter, MemoryStore, REVOCATION_CHANNEL, RedisStore, Reuse,
    RevocationEvent, Revocations, StoreError, StoreKey, StoreKeys, TokenHash, TokenRecord,
    TokenStore,
};
use tollgate_test_support::{FakeSentinel, RedisServer};
use uuid::Uuid;

const NS: &str = "shop";
/// Longest we wait for something that should happen in about a second.
const PATIENCE: Duration = Duration::from_secs(20);
/// A whole case must finish within this, or it hangs somewhere: fail rather than block CI.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

// === fixtures ===

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .try_into()
        .unwrap()
}

/// The store key of these tests: one material for every namespace, as a key file gives.
fn keys() -> StoreKeys {
    keys_of(b'k', None)
}

/// Keys from a material of 32 `byte`s, with an optional previous one, for every namespace.
fn keys_of(byte: u8, previous: Option<u8>) -> StoreKeys {
    let key = |byte| StoreKey::new(vec![byte; 32]).unwrap();
    StoreKeys::everywhere(KeyPair {
        current: key(byte),
        previous: previous.map(key),
    })
}

fn record(namespace: &str) -> TokenRecord {
    TokenRecord {
        id: Uuid::new_v4(),
        namespace: namespace.into(),
        credential_id: Uuid::new_v4(),
        client_id: "client-a".into(),
        service_id: None,
        authenticated_userid: Some("alice".into()),
        scope: "read write".into(),
        expires_in: 7200,
        created_at: now_ms(),
        ttl: 1_209_600,
    }
}

/// A random token, recognisable when searching Redis for plaintext.
fn token() -> String {
    format!("PLAINTEXT-{}", Uuid::new_v4().simple())
}

struct Issued {
    record: TokenRecord,
    access_token: String,
    refresh_token: Option<String>,
}

impl Issued {
    fn access(&self) -> TokenHash {
        TokenHash::of(&self.access_token)
    }

    fn refresh(&self) -> TokenHash {
        TokenHash::of(self.refresh_token.as_deref().unwrap())
    }
}

/// Inserts `record` with a fresh access token and a fresh refresh token.
async fn issue<S: TokenStore>(store: &S, record: TokenRecord) -> Issued {
    let issued = Issued {
        record,
        access_token: token(),
        refresh_token: Some(token()),
    };
    store
        .insert(&issued.record, &issued.access(), Some(&issued.refresh()))
        .await
        .unwrap();
    issued
}

/// Polls `check` until it holds; panics after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: still not the case after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn all_pages<S: TokenStore>(store: &S, filter: &ListFilter, size: usize) -> Vec<TokenRecord> {
    let mut all = Vec::new();
    let mut offset: Option<String> = None;
    loop {
        let page = store
            .list(NS, filter, size, offset.as_deref())
            .await
            .unwrap();
        assert!(page.records.len() <= size);
        all.extend(page.records);
        match page.next_offset {
            Some(next) => offset = Some(next),
            None => return all,
        }
    }
}

fn sorted(mut records: Vec<TokenRecord>) -> Vec<TokenRecord> {
    records.sort_by_key(|r| (r.created_at, r.id));
    records
}

async fn redis() -> (RedisServer, RedisStore) {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), keys()).await.unwrap();
    (server, store)
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = tollgate_store::MemoryStore::new();
                    tokio::time::timeout(super::CASE_TIMEOUT, super::$case(&store))
                        .await
                        .expect("the case hung");
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (server, store) = super::redis().await;
                    tokio::time::timeout(super::CASE_TIMEOUT, super::$case(&store))
                        .await
                        .expect("the case hung");
                    drop(server);
                }
            )*
        }
        mod any {
            // The delegation, once over each variant.
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = tollgate_store::AnyTokenStore::from(tollgate_store::MemoryStore::new());
                    tokio::time::timeout(super::CASE_TIMEOUT, super::$case(&store))
                        .await
                        .expect("the case hung");
                    let (server, store) = super::redis().await;
                    let store = tollgate_store::AnyTokenStore::from(store);
                    tokio::time::timeout(super::CASE_TIMEOUT, super::$case(&store))
                        .await
                        .expect("the case hung");
                    drop(server);
                }
            )*
        }
    };
}

suite!(
    insert_then_find,
    unknown_tokens,
    access_expires_record_stays,
    record_expires,
    zero_lifetimes_never_expire,
    created_at_anchors_lifetimes,
    swap_refresh_replaces,
    concurrent_swaps_one_winner,
    swap_reusing_id_and_refresh,
    list_pages,
    list_pages_with_deletes_between,
    list_filters,
    list_rejects_garbage_offsets,
    delete_by_id,
    insert_same_id_replaces,
    codes_single_use,
    codes_expire,
    namespaces_isolated,
    ping,
    reuse_detected_after_swap,
    reuse_revokes_the_whole_chain,
    reuse_within_grace_changes_nothing,
    reuse_refresh_token_is_never_retired,
    delete_matching_by_user_client_service,
    delete_matching_in_many_batches,
    revocations_published,
    revocations_of_reuse_and_bulk_delete,
);

// === cases ===

async fn insert_then_find<S: TokenStore + Clone>(store: &S) {
    let issued = issue(store, record(NS)).await;
    let r = &issued.record;
    assert_eq!(
        store
            .find_access(NS, &issued.access())
            .await
            .unwrap()
            .as_ref(),
        Some(r)
    );
    assert_eq!(
        store
            .find_refresh(NS, &issued.refresh())
            .await
            .unwrap()
            .as_ref(),
        Some(r)
    );
    assert_eq!(store.get(NS, r.id).await.unwrap().as_ref(), Some(r));

    // Without a refresh token.
    let mut other = record(NS);
    other.service_id = Some(Uuid::new_v4());
    other.authenticated_userid = None;
    let access = TokenHash::of(&token());
    store.insert(&other, &access, None).await.unwrap();
    assert_eq!(
        store.find_access(NS, &access).await.unwrap(),
        Some(other.clone())
    );
    assert_eq!(store.get(NS, other.id).await.unwrap(), Some(other));
}

async fn unknown_tokens<S: TokenStore + Clone>(store: &S) {
    let issued = issue(store, record(NS)).await;
    let unknown = TokenHash::of("never issued");
    assert_eq!(store.find_access(NS, &unknown).await.unwrap(), None);
    assert_eq!(store.find_refresh(NS, &unknown).await.unwrap(), None);
    assert_eq!(store.get(NS, Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(store.take_code(NS, &unknown).await.unwrap(), None);
    assert!(!store.delete(NS, Uuid::new_v4()).await.unwrap());
    // An access token is not a refresh token, and the other way round.
    assert_eq!(
        store.find_refresh(NS, &issued.access()).await.unwrap(),
        None
    );
    assert_eq!(
        store.find_access(NS, &issued.refresh()).await.unwrap(),
        None
    );
    let new = record(NS);
    let swapped = store
        .swap_refresh(NS, &issued.access(), &new, &TokenHash::of(&token()), None)
        .await
        .unwrap();
    assert!(!swapped, "an access token must not refresh");
    assert_eq!(store.get(NS, new.id).await.unwrap(), None);
}

async fn access_expires_record_stays<S: TokenStore + Clone>(store: &S) {
    let mut r = record(NS);
    r.expires_in = 1;
    r.ttl = 3600;
    let issued = issue(store, r).await;
    eventually("the access token expires", || async {
        store
            .find_access(NS, &issued.access())
            .await
            .unwrap()
            .is_none()
    })
    .await;
    // The record and its refresh token live on: that is what refreshing is for.
    assert_eq!(
        store.get(NS, issued.record.id).await.unwrap(),
        Some(issued.record.clone())
    );
    assert_eq!(
        store.find_refresh(NS, &issued.refresh()).await.unwrap(),
        Some(issued.record.clone())
    );
    // Expired access, but the record is listed and can be deleted.
    let page = store
        .list(NS, &ListFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(page.records, std::slice::from_ref(&issued.record));
    assert!(store.delete(NS, issued.record.id).await.unwrap());
}

async fn record_expires<S: TokenStore + Clone>(store: &S) {
    let mut r = record(NS);
    r.expires_in = 0; // bounded by the record
    r.ttl = 1;
    let issued = issue(store, r).await;
    let keep = issue(store, record(NS)).await;
    eventually("the record expires", || async {
        store.get(NS, issued.record.id).await.unwrap().is_none()
    })
    .await;
    assert_eq!(store.find_access(NS, &issued.access()).await.unwrap(), None);
    assert_eq!(
        store.find_refresh(NS, &issued.refresh()).await.unwrap(),
        None
    );
    assert!(!store.delete(NS, issued.record.id).await.unwrap());
    let swapped = store
        .swap_refresh(
            NS,
            &issued.refresh(),
            &record(NS),
            &TokenHash::of(&token()),
            None,
        )
        .await
        .unwrap();
    assert!(!swapped, "an expired refresh token must not refresh");
    let page = store
        .list(NS, &ListFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(page.records, [keep.record]);
}

async fn zero_lifetimes_never_expire<S: TokenStore + Clone>(store: &S) {
    // Issued long ago: with any finite lifetime it would be gone.
    let mut r = record(NS);
    r.expires_in = 0;
    r.ttl = 0;
    r.created_at = now_ms() - 400 * 24 * 3600 * 1000;
    let issued = issue(store, r).await;
    assert_eq!(
        store.find_access(NS, &issued.access()).await.unwrap(),
        Some(issued.record.clone())
    );
    assert_eq!(
        store.find_refresh(NS, &issued.refresh()).await.unwrap(),
        Some(issued.record.clone())
    );

    // A finite access token in a record that lives forever.
    let mut r = record(NS);
    r.expires_in = 1;
    r.ttl = 0;
    let short = issue(store, r).await;
    eventually("the access token expires", || async {
        store
            .find_access(NS, &short.access())
            .await
            .unwrap()
            .is_none()
    })
    .await;
    assert_eq!(
        store.get(NS, short.record.id).await.unwrap(),
        Some(short.record.clone())
    );
    assert_eq!(
        store.find_refresh(NS, &short.refresh()).await.unwrap(),
        Some(short.record)
    );
}

async fn created_at_anchors_lifetimes<S: TokenStore + Clone>(store: &S) {
    // Imported a day after issue: the access token (1 h) is over, the record (14 d) is not.
    let mut r = record(NS);
    r.expires_in = 3600;
    r.created_at = now_ms() - 24 * 3600 * 1000;
    let issued = issue(store, r).await;
    assert_eq!(store.find_access(NS, &issued.access()).await.unwrap(), None);
    assert_eq!(
        store.find_refresh(NS, &issued.refresh()).await.unwrap(),
        Some(issued.record.clone())
    );

    // Entirely over: nothing is stored.
    let mut r = record(NS);
    r.created_at = now_ms() - 15 * 24 * 3600 * 1000;
    let gone = issue(store, r).await;
    assert_eq!(store.get(NS, gone.record.id).await.unwrap(), None);
    assert_eq!(store.find_refresh(NS, &gone.refresh()).await.unwrap(), None);
    let page = store
        .list(NS, &ListFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(page.records, [issued.record]);
}

async fn swap_refresh_replaces<S: TokenStore + Clone>(store: &S) {
    let old = issue(store, record(NS)).await;
    let bystander = issue(store, record(NS)).await;
    let new = Issued {
        record: record(NS),
        access_token: token(),
        refresh_token: Some(token()),
    };
    let swapped = store
        .swap_refresh(
            NS,
            &old.refresh(),
            &new.record,
            &new.access(),
            Some(&new.refresh()),
        )
        .await
        .unwrap();
    assert!(swapped);
    assert_eq!(store.find_access(NS, &old.access()).await.unwrap(), None);
    assert_eq!(store.find_refresh(NS, &old.refresh()).await.unwrap(), None);
    assert_eq!(store.get(NS, old.record.id).await.unwrap(), None);
    assert_eq!(
        store.find_access(NS, &new.access()).await.unwrap(),
        Some(new.record.clone())
    );
    assert_eq!(
        store.find_refresh(NS, &new.refresh()).await.unwrap(),
        Some(new.record.clone())
    );
    assert_eq!(
        store.get(NS, new.record.id).await.unwrap(),
        Some(new.record.clone())
    );
    // Untouched.
    assert_eq!(
        store.find_access(NS, &bystander.access()).await.unwrap(),
        Some(bystander.record.clone())
    );

    // The old refresh token is spent.
    let again = store
        .swap_refresh(
            NS,
            &old.refresh(),
            &record(NS),
            &TokenHash::of(&token()),
            None,
        )
        .await
        .unwrap();
    assert!(!again);
    let listed = all_pages(store, &ListFilter::default(), 10).await;
    assert_eq!(listed, sorted(vec![bystander.record, new.record.clone()]));

    // A new record without refresh token (client credentials style) is fine too.
    let last = record(NS);
    let last_access = TokenHash::of(&token());
    assert!(
        store
            .swap_refresh(NS, &new.refresh(), &last, &last_access, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.find_access(NS, &last_access).await.unwrap(),
        Some(last)
    );
    assert_eq!(store.find_access(NS, &new.access()).await.unwrap(), None);
}

async fn concurrent_swaps_one_winner<S: TokenStore + Clone>(store: &S) {
    let old = issue(store, record(NS)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let store = store.clone();
        let old_refresh = old.refresh();
        tasks.spawn(async move {
            let new = Issued {
                record: record(NS),
                access_token: token(),
                refresh_token: Some(token()),
            };
            let won = store
                .swap_refresh(
                    NS,
                    &old_refresh,
                    &new.record,
                    &new.access(),
                    Some(&new.refresh()),
                )
                .await
                .unwrap();
            (won, new)
        });
    }
    let results = tasks.join_all().await;
    let winners: Vec<&Issued> = results
        .iter()
        .filter(|(won, _)| *won)
        .map(|(_, new)| new)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one concurrent refresh must win");
    for (won, new) in &results {
        let found = store.find_access(NS, &new.access()).await.unwrap();
        assert_eq!(found.is_some(), *won, "only the winner's tokens are stored");
        assert_eq!(store.get(NS, new.record.id).await.unwrap().is_some(), *won);
    }
    let listed = all_pages(store, &ListFilter::default(), 100).await;
    assert_eq!(listed, [winners[0].record.clone()]);
}

async fn swap_reusing_id_and_refresh<S: TokenStore + Clone>(store: &S) {
    let old = issue(store, record(NS)).await;
    // Kong's reuse_refresh_token: same id, same refresh token, new access token, new time.
    let mut renewed = old.record.clone();
    renewed.created_at += 1;
    renewed.scope = "read".into();
    let new_access = TokenHash::of(&token());
    for round in 0..2 {
        let swapped = store
            .swap_refresh(
                NS,
                &old.refresh(),
                &renewed,
                &new_access,
                Some(&old.refresh()),
            )
            .await
            .unwrap();
        assert!(
            swapped,
            "round {round}: the reused refresh token stays live"
        );
        assert_eq!(store.find_access(NS, &old.access()).await.unwrap(), None);
        assert_eq!(
            store.find_access(NS, &new_access).await.unwrap(),
            Some(renewed.clone())
        );
        assert_eq!(
            store.find_refresh(NS, &old.refresh()).await.unwrap(),
            Some(renewed.clone())
        );
        assert_eq!(
            store.get(NS, renewed.id).await.unwrap(),
            Some(renewed.clone())
        );
        let listed = all_pages(store, &ListFilter::default(), 10).await;
        assert_eq!(
            listed,
            [renewed.clone()],
            "round {round}: one record, listed once"
        );
    }
    assert!(store.delete(NS, renewed.id).await.unwrap());
    assert_eq!(store.find_refresh(NS, &old.refresh()).await.unwrap(), None);
    assert_eq!(store.find_access(NS, &new_access).await.unwrap(), None);
}

/// Five records, two of them created in the same millisecond (ties go by id).
async fn five<S: TokenStore>(store: &S) -> Vec<TokenRecord> {
    let base = now_ms() - 10_000;
    let mut records = Vec::new();
    for created_at in [base + 3, base + 1, base + 2, base + 2, base + 4] {
        let mut r = record(NS);
        r.created_at = created_at;
        records.push(issue(store, r).await.record);
    }
    sorted(records)
}

async fn list_pages<S: TokenStore + Clone>(store: &S) {
    let all = five(store).await;
    let filter = ListFilter::default();
    let first = store.list(NS, &filter, 2, None).await.unwrap();
    assert_eq!(first.records, all[0..2]);
    let second = store
        .list(NS, &filter, 2, first.next_offset.as_deref())
        .await
        .unwrap();
    assert_eq!(second.records, all[2..4]);
    let third = store
        .list(NS, &filter, 2, second.next_offset.as_deref())
        .await
        .unwrap();
    assert_eq!(third.records, all[4..5]);
    assert_eq!(third.next_offset, None);

    // A page that ends exactly at the end is the last one.
    let whole = store.list(NS, &filter, 5, None).await.unwrap();
    assert_eq!(whole.records, all);
    assert_eq!(whole.next_offset, None);
    // Size 0 is size 1.
    let one = store.list(NS, &filter, 0, None).await.unwrap();
    assert_eq!(one.records, all[0..1]);
    assert!(one.next_offset.is_some());
    // An empty namespace.
    let empty = store.list("nobody", &filter, 2, None).await.unwrap();
    assert_eq!(empty.records, []);
    assert_eq!(empty.next_offset, None);
}

async fn list_pages_with_deletes_between<S: TokenStore + Clone>(store: &S) {
    let all = five(store).await;
    let filter = ListFilter::default();
    let first = store.list(NS, &filter, 2, None).await.unwrap();
    assert_eq!(first.records, all[0..2]);
    // Delete one already seen and the next one not yet seen.
    assert!(store.delete(NS, all[1].id).await.unwrap());
    assert!(store.delete(NS, all[2].id).await.unwrap());
    let second = store
        .list(NS, &filter, 2, first.next_offset.as_deref())
        .await
        .unwrap();
    assert_eq!(second.records, all[3..5], "no skip, no repeat");
    assert_eq!(second.next_offset, None);

    // The cursor survives the deletion of the very record it points after.
    let all = sorted(store.list(NS, &filter, 100, None).await.unwrap().records);
    let first = store.list(NS, &filter, 1, None).await.unwrap();
    assert!(store.delete(NS, all[0].id).await.unwrap());
    let rest = store
        .list(NS, &filter, 10, first.next_offset.as_deref())
        .await
        .unwrap();
    assert_eq!(rest.records, all[1..]);
}

async fn list_filters<S: TokenStore + Clone>(store: &S) {
    let service = Uuid::new_v4();
    let mut expected_bob = Vec::new();
    let mut expected_client_b = Vec::new();
    let mut expected_service = Vec::new();
    let mut expected_all_three = Vec::new();
    for i in 0..12 {
        let mut r = record(NS);
        r.created_at -= 1000 - i;
        if i % 2 == 0 {
            r.authenticated_userid = Some("bob".into());
        }
        if i % 3 == 0 {
            r.client_id = "client-b".into();
        }
        if i % 4 == 0 {
            r.service_id = Some(service);
        }
        let r = issue(store, r).await.record;
        if i % 2 == 0 {
            expected_bob.push(r.clone());
        }
        if i % 3 == 0 {
            expected_client_b.push(r.clone());
        }
        if i % 4 == 0 {
            expected_service.push(r.clone());
        }
        if i % 12 == 0 {
            expected_all_three.push(r);
        }
    }
    let by_user = ListFilter {
        authenticated_userid: Some("bob".into()),
        ..ListFilter::default()
    };
    let by_client = ListFilter {
        client_id: Some("client-b".into()),
        ..ListFilter::default()
    };
    let by_service = ListFilter {
        service_id: Some(service),
        ..ListFilter::default()
    };
    let by_all = ListFilter {
        authenticated_userid: Some("bob".into()),
        client_id: Some("client-b".into()),
        service_id: Some(service),
    };
    for size in [1, 2, 100] {
        assert_eq!(all_pages(store, &by_user, size).await, expected_bob);
        assert_eq!(all_pages(store, &by_client, size).await, expected_client_b);
        assert_eq!(all_pages(store, &by_service, size).await, expected_service);
        assert_eq!(all_pages(store, &by_all, size).await, expected_all_three);
    }
    let nobody = ListFilter {
        authenticated_userid: Some("nobody".into()),
        ..ListFilter::default()
    };
    let page = store.list(NS, &nobody, 2, None).await.unwrap();
    assert_eq!((page.records, page.next_offset), (vec![], None));
}

async fn list_rejects_garbage_offsets<S: TokenStore + Clone>(store: &S) {
    issue(store, record(NS)).await;
    for garbage in ["", "nope", "00", "Zm9vOmJhcg", &"g".repeat(48)] {
        let result = store
            .list(NS, &ListFilter::default(), 2, Some(garbage))
            .await;
        assert!(
            matches!(result, Err(StoreError::InvalidOffset)),
            "{garbage:?}: {result:?}"
        );
    }
}

async fn delete_by_id<S: TokenStore + Clone>(store: &S) {
    let issued = issue(store, record(NS)).await;
    let other = issue(store, record(NS)).await;
    assert!(store.delete(NS, issued.record.id).await.unwrap());
    assert!(!store.delete(NS, issued.record.id).await.unwrap());
    assert_eq!(store.find_access(NS, &issued.access()).await.unwrap(), None);
    assert_eq!(
        store.find_refresh(NS, &issued.refresh()).await.unwrap(),
        None
    );
    assert_eq!(store.get(NS, issued.record.id).await.unwrap(), None);
    let swapped = store
        .swap_refresh(
            NS,
            &issued.refresh(),
            &record(NS),
            &TokenHash::of(&token()),
            None,
        )
        .await
        .unwrap();
    assert!(!swapped);
    assert_eq!(
        all_pages(store, &ListFilter::default(), 10).await,
        std::slice::from_ref(&other.record)
    );
    assert_eq!(
        store.find_access(NS, &other.access()).await.unwrap(),
        Some(other.record)
    );
}

async fn insert_same_id_replaces<S: TokenStore + Clone>(store: &S) {
    let first = issue(store, record(NS)).await;
    let mut again = first.record.clone();
    again.scope = "admin".into();
    again.created_at += 5;
    let second = issue(store, again).await;
    assert_eq!(store.find_access(NS, &first.access()).await.unwrap(), None);
    assert_eq!(
        store.find_refresh(NS, &first.refresh()).await.unwrap(),
        None
    );
    assert_eq!(
        store.find_access(NS, &second.access()).await.unwrap(),
        Some(second.record.clone())
    );
    assert_eq!(
        all_pages(store, &ListFilter::default(), 10).await,
        [second.record]
    );
}

async fn codes_single_use<S: TokenStore + Clone>(store: &S) {
    let code = TokenHash::of(&token());
    let payload = b"{\"client_id\":\"x\"}\x00\xff".to_vec();
    store.put_code(NS, &code, &payload, 300).await.unwrap();
    // Reading a code leaves it in place: only the exchange that issues tokens takes it.
    assert_eq!(
        store.find_code(NS, &code).await.unwrap(),
        Some(payload.clone())
    );
    assert_eq!(store.find_code("other", &code).await.unwrap(), None);
    assert_eq!(
        store.take_code(NS, &code).await.unwrap(),
        Some(payload.clone())
    );
    assert_eq!(store.take_code(NS, &code).await.unwrap(), None);
    assert_eq!(store.find_code(NS, &code).await.unwrap(), None);

    // Concurrent redemptions: exactly one gets the payload.
    store.put_code(NS, &code, &payload, 300).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.spawn(async move { store.take_code(NS, &code).await.unwrap() });
    }
    let taken: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(taken, std::slice::from_ref(&payload));

    // 0 is forever, like every other lifetime.
    store.put_code(NS, &code, b"forever", 0).await.unwrap();
    assert_eq!(
        store.take_code(NS, &code).await.unwrap(),
        Some(b"forever".to_vec())
    );
}

async fn codes_expire<S: TokenStore + Clone>(store: &S) {
    // Taking a code consumes it, so polling one code cannot tell "expired" from "taken".
    // Instead, many codes of the same lifetime are taken one by one until one has expired;
    // with a poll every 50 ms they last well past the deadline.
    let codes: Vec<TokenHash> = (0..400).map(|_| TokenHash::of(&token())).collect();
    for code in &codes {
        store.put_code(NS, code, b"payload", 1).await.unwrap();
    }
    let mut codes = codes.iter();
    eventually("codes expire", || {
        let code = codes.next().expect("ran out of codes before they expired");
        async move { store.take_code(NS, code).await.unwrap().is_none() }
    })
    .await;
}

async fn namespaces_isolated<S: TokenStore + Clone>(store: &S) {
    let mine = issue(store, record(NS)).await;
    let theirs = issue(store, record("other")).await;
    let code = TokenHash::of(&token());
    store.put_code(NS, &code, b"mine", 300).await.unwrap();

    assert_eq!(
        store.find_access("other", &mine.access()).await.unwrap(),
        None
    );
    assert_eq!(
        store.find_refresh("other", &mine.refresh()).await.unwrap(),
        None
    );
    assert_eq!(store.get("other", mine.record.id).await.unwrap(), None);
    assert_eq!(store.take_code("other", &code).await.unwrap(), None);
    assert!(!store.delete("other", mine.record.id).await.unwrap());
    let swapped = store
        .swap_refresh(
            "other",
            &mine.refresh(),
            &record("other"),
            &TokenHash::of(&token()),
            None,
        )
        .await
        .unwrap();
    assert!(!swapped);
    let listed = store
        .list("other", &ListFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(listed.records, std::slice::from_ref(&theirs.record));

    // All still there for their owners.
    assert_eq!(
        store.find_access(NS, &mine.access()).await.unwrap(),
        Some(mine.record.clone())
    );
    assert_eq!(
        store.take_code(NS, &code).await.unwrap(),
        Some(b"mine".to_vec())
    );
    assert_eq!(
        all_pages(store, &ListFilter::default(), 10).await,
        [mine.record]
    );
    assert_eq!(
        store.find_access("other", &theirs.access()).await.unwrap(),
        Some(theirs.record)
    );
}

async fn ping<S: TokenStore + Clone>(store: &S) {
    store.ping().await.unwrap();
}

/// A fresh pair of tokens for `record`, not yet stored.
fn successor(record: TokenRecord) -> Issued {
    Issued {
        record,
        access_token: token(),
        refresh_token: Some(token()),
    }
}

/// Refreshes `old` into `new`, which must win.
async fn refresh<S: TokenStore>(store: &S, old: &Issued, new: &Issued) {
    let refresh = new.refresh_token.as_ref().map(|_| new.refresh());
    let swapped = store
        .swap_refresh(
            &old.record.namespace,
            &old.refresh(),
            &new.record,
            &new.access(),
            refresh.as_ref(),
        )
        .await
        .unwrap();
    assert!(swapped, "the refresh must win");
}

/// Whether `issued` is entirely gone: access, refresh token and record.
async fn gone<S: TokenStore>(store: &S, issued: &Issued) -> bool {
    let ns = &issued.record.namespace;
    store
        .find_access(ns, &issued.access())
        .await
        .unwrap()
        .is_none()
        && store.get(ns, issued.record.id).await.unwrap().is_none()
        && match &issued.refresh_token {
            Some(_) => store
                .find_refresh(ns, &issued.refresh())
                .await
                .unwrap()
                .is_none(),
            None => true,
        }
}

/// Whether `issued` is entirely there, as it was stored.
async fn intact<S: TokenStore>(store: &S, issued: &Issued) -> bool {
    let ns = &issued.record.namespace;
    let record = Some(issued.record.clone());
    store.find_access(ns, &issued.access()).await.unwrap() == record
        && store.get(ns, issued.record.id).await.unwrap() == record
        && match &issued.refresh_token {
            Some(_) => store.find_refresh(ns, &issued.refresh()).await.unwrap() == record,
            None => true,
        }
}

async fn reuse_detected_after_swap<S: TokenStore + Clone>(store: &S) {
    let old = issue(store, record(NS)).await;
    let bystander = issue(store, record(NS)).await;
    let new = successor(record(NS));
    refresh(store, &old, &new).await;

    // The live refresh token, a never-issued one, and one of another namespace: not reuse.
    let unknown = TokenHash::of(&token());
    for (ns, hash) in [(NS, new.refresh()), (NS, unknown), ("other", old.refresh())] {
        assert_eq!(
            store.revoke_on_reuse(ns, &hash, 0).await.unwrap(),
            Reuse::NotRetired
        );
    }
    assert!(intact(store, &new).await, "nothing changed");

    // The retired one, replayed: its successor goes, with its tokens.
    assert_eq!(
        store.revoke_on_reuse(NS, &old.refresh(), 0).await.unwrap(),
        Reuse::Revoked { records: 1 }
    );
    assert!(gone(store, &new).await);
    assert!(gone(store, &old).await);
    assert!(intact(store, &bystander).await);
    assert_eq!(
        all_pages(store, &ListFilter::default(), 10).await,
        std::slice::from_ref(&bystander.record)
    );
    // Replayed again: still reuse, with nothing left to revoke.
    assert_eq!(
        store.revoke_on_reuse(NS, &old.refresh(), 0).await.unwrap(),
        Reuse::Revoked { records: 0 }
    );
    // The successor's refresh token was deleted, not retired.
    assert_eq!(
        store.revoke_on_reuse(NS, &new.refresh(), 0).await.unwrap(),
        Reuse::NotRetired
    );
    // And a refreshed token cannot refresh again, reuse or not.
    let again = store
        .swap_refresh(
            NS,
            &old.refresh(),
            &record(NS),
            &TokenHash::of(&token()),
            None,
        )
        .await
        .unwrap();
    assert!(!again);
}

async fn reuse_revokes_the_whole_chain<S: TokenStore + Clone>(store: &S) {
    // first -> second -> third (same id, new refresh token) -> fourth, live.
    let first = issue(store, record(NS)).await;
    let second = successor(record(NS));
    refresh(store, &first, &second).await;
    let mut renewed = second.record.clone();
    renewed.created_at += 1;
    let third = successor(renewed);
    refresh(store, &second, &third).await;
    let fourth = successor(record(NS));
    refresh(store, &third, &fourth).await;
    let bystander = issue(store, record(NS)).await;
    assert!(intact(store, &fourth).await);

    // The first token, three generations back, reaches the end of the chain.
    assert_eq!(
        store
            .revoke_on_reuse(NS, &first.refresh(), 0)
            .await
            .unwrap(),
        Reuse::Revoked { records: 1 }
    );
    for issued in [&first, &second, &third, &fourth] {
        assert!(gone(store, issued).await, "{:?}", issued.record.id);
    }
    assert!(intact(store, &bystander).await);
    // Any token of the chain, replayed later, is still recognised.
    for issued in [&second, &third] {
        assert_eq!(
            store
                .revoke_on_reuse(NS, &issued.refresh(), 0)
                .await
                .unwrap(),
            Reuse::Revoked { records: 0 }
        );
    }

    // From the middle of a chain: what came after it goes, a chain ending in a token
    // without a refresh token too (client credentials style).
    let a = issue(store, record(NS)).await;
    let b = successor(record(NS));
    refresh(store, &a, &b).await;
    let c = Issued {
        record: record(NS),
        access_token: token(),
        refresh_token: None,
    };
    refresh(store, &b, &c).await;
    assert!(intact(store, &c).await);
    assert_eq!(
        store.revoke_on_reuse(NS, &b.refresh(), 0).await.unwrap(),
        Reuse::Revoked { records: 1 }
    );
    assert!(gone(store, &c).await);
    assert_eq!(
        all_pages(store, &ListFilter::default(), 10).await,
        [bystander.record]
    );
}

async fn reuse_within_grace_changes_nothing<S: TokenStore + Clone>(store: &S) {
    let old = issue(store, record(NS)).await;
    let new = successor(record(NS));
    refresh(store, &old, &new).await;
    let next = successor(record(NS));
    refresh(store, &new, &next).await;
    for replayed in [&old, &new] {
        assert_eq!(
            store
                .revoke_on_reuse(NS, &replayed.refresh(), 3600)
                .await
                .unwrap(),
            Reuse::WithinGrace
        );
    }
    assert!(intact(store, &next).await, "within the grace window");
    // Past the window (none at all): revoked.
    assert_eq!(
        store.revoke_on_reuse(NS, &new.refresh(), 0).await.unwrap(),
        Reuse::Revoked { records: 1 }
    );
    assert!(gone(store, &next).await);
}

async fn reuse_refresh_token_is_never_retired<S: TokenStore + Clone>(store: &S) {
    // Kong's reuse_refresh_token: same id, same refresh token, new access token.
    let old = issue(store, record(NS)).await;
    let mut kept = old.record.clone();
    kept.created_at += 1;
    let mut current = Issued {
        record: kept,
        access_token: token(),
        refresh_token: old.refresh_token.clone(),
    };
    refresh(store, &old, &current).await;
    for _ in 0..2 {
        // Presenting the very token that keeps working is not reuse, whatever the grace.
        for grace in [0, 3600] {
            assert_eq!(
                store
                    .revoke_on_reuse(NS, &old.refresh(), grace)
                    .await
                    .unwrap(),
                Reuse::NotRetired
            );
        }
        assert!(intact(store, &current).await);
        let mut again = current.record.clone();
        again.created_at += 1;
        let next = Issued {
            record: again,
            access_token: token(),
            refresh_token: old.refresh_token.clone(),
        };
        refresh(store, &current, &next).await;
        assert_eq!(
            store.find_access(NS, &current.access()).await.unwrap(),
            None
        );
        current = next;
        assert!(intact(store, &current).await);
    }
    assert_eq!(
        all_pages(store, &ListFilter::default(), 10).await,
        [current.record.clone()]
    );

    // Same id with a new refresh token: the old refresh token is retired after all, and
    // replaying it deletes the record that kept the id.
    let mut renewed = current.record.clone();
    renewed.created_at += 1;
    let last = successor(renewed);
    refresh(store, &current, &last).await;
    assert_eq!(
        store.revoke_on_reuse(NS, &old.refresh(), 0).await.unwrap(),
        Reuse::Revoked { records: 1 }
    );
    assert!(gone(store, &last).await);
}

async fn delete_matching_by_user_client_service<S: TokenStore + Clone>(store: &S) {
    let service = Uuid::new_v4();
    let mut all = Vec::new();
    for i in 0..12 {
        let mut r = record(NS);
        r.created_at -= 1000 - i;
        if i % 2 == 0 {
            r.authenticated_userid = Some("bob".into());
        }
        if i % 3 == 0 {
            r.client_id = "client-b".into();
        }
        if i % 4 == 0 {
            r.service_id = Some(service);
        }
        all.push(issue(store, r).await);
    }
    let elsewhere = issue(store, {
        let mut r = record("other");
        r.authenticated_userid = Some("bob".into());
        r
    })
    .await;
    let remaining = |deleted: &dyn Fn(usize) -> bool| -> Vec<TokenRecord> {
        (0..12)
            .filter(|i| !deleted(*i))
            .map(|i| all[i].record.clone())
            .collect()
    };

    // By service: 0, 4, 8.
    let by_service = ListFilter {
        service_id: Some(service),
        ..ListFilter::default()
    };
    assert_eq!(store.delete_matching(NS, &by_service).await.unwrap(), 3);
    assert_eq!(
        all_pages(store, &ListFilter::default(), 100).await,
        remaining(&|i| i % 4 == 0)
    );
    for i in [0, 4, 8] {
        assert!(gone(store, &all[i]).await);
    }
    assert_eq!(store.delete_matching(NS, &by_service).await.unwrap(), 0);

    // By client: 3, 6, 9 are left of 0, 3, 6, 9.
    let by_client = ListFilter {
        client_id: Some("client-b".into()),
        ..ListFilter::default()
    };
    assert_eq!(store.delete_matching(NS, &by_client).await.unwrap(), 3);
    assert_eq!(
        all_pages(store, &ListFilter::default(), 100).await,
        remaining(&|i| i % 4 == 0 || i % 3 == 0)
    );

    // By user and client together: nothing left matches both.
    let both = ListFilter {
        authenticated_userid: Some("bob".into()),
        client_id: Some("client-b".into()),
        service_id: None,
    };
    assert_eq!(store.delete_matching(NS, &both).await.unwrap(), 0);

    // By user: 2, 10 are left of the even ones.
    let by_user = ListFilter {
        authenticated_userid: Some("bob".into()),
        ..ListFilter::default()
    };
    assert_eq!(store.delete_matching(NS, &by_user).await.unwrap(), 2);
    let left = remaining(&|i| i % 4 == 0 || i % 3 == 0 || i % 2 == 0);
    assert_eq!(all_pages(store, &ListFilter::default(), 100).await, left);
    assert_eq!(left.len(), 4);
    for i in [1, 5, 7, 11] {
        assert!(intact(store, &all[i]).await);
    }
    // Another namespace is another namespace.
    assert!(intact(store, &elsewhere).await);

    // Everything, with the empty filter; an empty namespace deletes nothing.
    assert_eq!(
        store
            .delete_matching(NS, &ListFilter::default())
            .await
            .unwrap(),
        4
    );
    assert_eq!(all_pages(store, &ListFilter::default(), 100).await, []);
    assert_eq!(
        store
            .delete_matching("nobody", &ListFilter::default())
            .await
            .unwrap(),
        0
    );
    assert!(intact(store, &elsewhere).await);
}

async fn delete_matching_in_many_batches<S: TokenStore + Clone>(store: &S) {
    // More than one batch of either store, half of them matching, interleaved.
    let mut kept = Vec::new();
    for i in 0..1100 {
        let mut r = record(NS);
        if i % 2 == 0 {
            r.client_id = "bulk".into();
        }
        let access = TokenHash::of(&token());
        store.insert(&r, &access, None).await.unwrap();
        if i % 2 != 0 {
            kept.push(r);
        }
    }
    let filter = ListFilter {
        client_id: Some("bulk".into()),
        ..ListFilter::default()
    };
    assert_eq!(store.delete_matching(NS, &filter).await.unwrap(), 550);
    assert_eq!(
        all_pages(store, &ListFilter::default(), 1000).await,
        sorted(kept)
    );
}

/// The next event, failing the test when none comes within [`PATIENCE`].
async fn next_event(events: &mut Revocations) -> RevocationEvent {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("no revocation event came")
        .expect("the subscription ended")
}

/// A subscription, once it reports being subscribed.
async fn subscribed<S: TokenStore>(store: &S) -> Revocations {
    let mut events = store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut events).await, RevocationEvent::Subscribed);
    events
}

/// The next events are revocations of exactly `expected` in `namespace`, in any order;
/// then nothing else was published in between (proved by revoking a sentinel token, which
/// must come next: within one namespace, events arrive in the order they happened).
async fn expect_revoked<S: TokenStore>(
    store: &S,
    events: &mut Revocations,
    namespace: &str,
    expected: &[TokenHash],
) {
    let mut got = Vec::new();
    for _ in expected {
        match next_event(events).await {
            RevocationEvent::Revoked {
                namespace: ns,
                access,
            } => {
                assert_eq!(ns, namespace);
                got.push(access.to_hex());
            }
            other => panic!("expected a revocation, got {other:?}"),
        }
    }
    let mut expected: Vec<String> = expected.iter().map(TokenHash::to_hex).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    let sentinel = issue(store, record(namespace)).await;
    assert!(store.delete(namespace, sentinel.record.id).await.unwrap());
    assert_eq!(
        next_event(events).await,
        RevocationEvent::Revoked {
            namespace: namespace.to_owned(),
            access: sentinel.access()
        },
        "something else was published"
    );
}

async fn revocations_published<S: TokenStore + Clone>(store: &S) {
    let mut events = subscribed(store).await;
    // Issuing announces nothing.
    let deleted = issue(store, record(NS)).await;
    expect_revoked(store, &mut events, NS, &[]).await;

    // delete.
    assert!(store.delete(NS, deleted.record.id).await.unwrap());
    expect_revoked(store, &mut events, NS, &[deleted.access()]).await;
    // Deleting what is gone announces nothing.
    assert!(!store.delete(NS, deleted.record.id).await.unwrap());
    expect_revoked(store, &mut events, NS, &[]).await;

    // A refresh: the old access token, not the new one.
    let old = issue(store, record(NS)).await;
    let new = successor(record(NS));
    refresh(store, &old, &new).await;
    expect_revoked(store, &mut events, NS, &[old.access()]).await;
    // With reuse_refresh_token too.
    let mut kept = new.record.clone();
    kept.created_at += 1;
    let renewed = Issued {
        record: kept,
        access_token: token(),
        refresh_token: new.refresh_token.clone(),
    };
    refresh(store, &new, &renewed).await;
    expect_revoked(store, &mut events, NS, &[new.access()]).await;

    // An insert replacing a record: its old access token. Inserting the same again (an
    // idempotent retry) revokes nothing.
    let mut replacement = renewed.record.clone();
    replacement.scope = "read".into();
    let replaced = issue(store, replacement.clone()).await;
    expect_revoked(store, &mut events, NS, &[renewed.access()]).await;
    store
        .insert(&replacement, &replaced.access(), Some(&replaced.refresh()))
        .await
        .unwrap();
    expect_revoked(store, &mut events, NS, &[]).await;

    // A record whose access token had expired already: deleting it revokes no token.
    let mut r = record(NS);
    r.expires_in = 60;
    r.created_at = now_ms() - 3600 * 1000;
    let stale = issue(store, r).await;
    assert!(store.delete(NS, stale.record.id).await.unwrap());
    expect_revoked(store, &mut events, NS, &[]).await;

    // Other namespaces are told apart, odd names included.
    for namespace in ["other", "we}ird:ns %", "é"] {
        let theirs = issue(store, record(namespace)).await;
        assert!(store.delete(namespace, theirs.record.id).await.unwrap());
        expect_revoked(store, &mut events, namespace, &[theirs.access()]).await;
    }

    // Several subscribers each hear everything.
    let mut second = subscribed(store).await;
    let both = issue(store, record(NS)).await;
    assert!(store.delete(NS, both.record.id).await.unwrap());
    let expected = RevocationEvent::Revoked {
        namespace: NS.to_owned(),
        access: both.access(),
    };
    assert_eq!(next_event(&mut second).await, expected);
    expect_revoked(store, &mut events, NS, &[both.access()]).await;
}

async fn revocations_of_reuse_and_bulk_delete<S: TokenStore + Clone>(store: &S) {
    let mut events = subscribed(store).await;

    // Reuse: every live access token of the chain.
    let first = issue(store, record(NS)).await;
    let second = successor(record(NS));
    refresh(store, &first, &second).await;
    let third = successor(record(NS));
    refresh(store, &second, &third).await;
    expect_revoked(store, &mut events, NS, &[first.access(), second.access()]).await;
    assert_eq!(
        store
            .revoke_on_reuse(NS, &first.refresh(), 3600)
            .await
            .unwrap(),
        Reuse::WithinGrace
    );
    expect_revoked(store, &mut events, NS, &[]).await;
    assert_eq!(
        store
            .revoke_on_reuse(NS, &first.refresh(), 0)
            .await
            .unwrap(),
        Reuse::Revoked { records: 1 }
    );
    expect_revoked(store, &mut events, NS, &[third.access()]).await;
    assert_eq!(
        store
            .revoke_on_reuse(NS, &first.refresh(), 0)
            .await
            .unwrap(),
        Reuse::Revoked { records: 0 }
    );
    expect_revoked(store, &mut events, NS, &[]).await;

    // Bulk delete: each matching access token.
    let mut matching = Vec::new();
    for i in 0..5 {
        let mut r = record(NS);
        if i % 2 == 0 {
            r.authenticated_userid = Some("mallory".into());
        }
        let issued = issue(store, r).await;
        if i % 2 == 0 {
            matching.push(issued.access());
        }
    }
    let filter = ListFilter {
        authenticated_userid: Some("mallory".into()),
        ..ListFilter::default()
    };
    assert_eq!(store.delete_matching(NS, &filter).await.unwrap(), 3);
    expect_revoked(store, &mut events, NS, &matching).await;
    assert_eq!(store.delete_matching(NS, &filter).await.unwrap(), 0);
    expect_revoked(store, &mut events, NS, &[]).await;
}

// === Redis only: what Redis holds ===

/// Every key with its type and its whole value as text.
fn dump(server: &RedisServer) -> Vec<(String, String)> {
    server
        .keys()
        .into_iter()
        .map(|key| {
            let kind = server.command(&["TYPE", &key]).to_string();
            let value = match kind.as_str() {
                "string" => server.command(&["GET", &key]),
                "hash" => server.command(&["HGETALL", &key]),
                "zset" => server.command(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]),
                other => panic!("unexpected key type {other} of {key}"),
            };
            (key, value.to_string())
        })
        .collect()
}

#[tokio::test]
async fn redis_holds_no_plaintext_tokens() {
    let (server, store) = redis().await;
    let mut secrets = Vec::new();
    for namespace in [NS, "other"] {
        for _ in 0..3 {
            let issued = issue(&store, record(namespace)).await;
            secrets.push(issued.access_token.clone());
            secrets.push(issued.refresh_token.clone().unwrap());
        }
        let code = token();
        store
            .put_code(namespace, &TokenHash::of(&code), b"{}", 300)
            .await
            .unwrap();
        secrets.push(code);
    }
    // A refreshed pair too.
    let old = issue(&store, record(NS)).await;
    let new = Issued {
        record: record(NS),
        access_token: token(),
        refresh_token: Some(token()),
    };
    assert!(
        store
            .swap_refresh(
                NS,
                &old.refresh(),
                &new.record,
                &new.access(),
                Some(&new.refresh())
            )
            .await
            .unwrap()
    );
    let old_refresh = old.refresh();
    secrets.extend([old.access_token, old.refresh_token.unwrap()]);
    secrets.extend([new.access_token.clone(), new.refresh_token.clone().unwrap()]);
    // A chain revoked by reuse, and a bulk delete, leave only hashes behind too.
    let first = issue(&store, record(NS)).await;
    let second = successor(record(NS));
    refresh(&store, &first, &second).await;
    let third = successor(record(NS));
    refresh(&store, &second, &third).await;
    assert_eq!(
        store
            .revoke_on_reuse(NS, &first.refresh(), 0)
            .await
            .unwrap(),
        Reuse::Revoked { records: 1 }
    );
    for issued in [first, second, third] {
        secrets.push(issued.access_token);
        secrets.extend(issued.refresh_token);
    }
    let mut r = record("other");
    r.client_id = "bulk".into();
    let bulk = issue(&store, r).await;
    let filter = ListFilter {
        client_id: Some("bulk".into()),
        ..ListFilter::default()
    };
    assert_eq!(store.delete_matching("other", &filter).await.unwrap(), 1);
    secrets.extend([bulk.access_token, bulk.refresh_token.unwrap()]);

    let dump = dump(&server);
    assert!(!dump.is_empty());
    for (key, value) in &dump {
        for secret in &secrets {
            assert!(!key.contains(secret), "key {key} holds a token");
            assert!(
                !value.contains(secret),
                "value of {key} holds a token: {value}"
            );
        }
        assert!(
            !key.contains("PLAINTEXT") && !value.contains("PLAINTEXT"),
            "{key}: {value}"
        );
    }
    // What is there instead: the hashes.
    let hash = new.access().to_hex();
    assert!(
        dump.iter()
            .any(|(key, _)| key.ends_with(&format!(":at:{hash}")))
    );
    // The retired refresh token: its hash, leading to the ids of old and new record.
    let retired = dump
        .iter()
        .find(|(key, _)| key == &format!("{{tg:shop}}:retired:{}", old_refresh.to_hex()))
        .map(|(_, value)| value.clone());
    let expected = format!("{}|{}|", old.record.id, new.record.id);
    assert!(
        retired
            .as_ref()
            .is_some_and(|v| v.starts_with(&expected)
                && v.ends_with(&format!("|{}", new.refresh().to_hex()))),
        "{retired:?}"
    );
}

#[tokio::test]
async fn redis_keys_carry_the_namespace_tag() {
    let (server, store) = redis().await;
    for namespace in [NS, "other", "we}ird:ns"] {
        let issued = issue(&store, record(namespace)).await;
        store
            .put_code(namespace, &TokenHash::of(&token()), b"{}", 300)
            .await
            .unwrap();
        // A refresh leaves a `retired` key; reuse detection and bulk deletes write nothing
        // new but must not write elsewhere either.
        let new = successor(record(namespace));
        refresh(&store, &issued, &new).await;
        let next = successor(record(namespace));
        refresh(&store, &new, &next).await;
        assert_eq!(
            store
                .revoke_on_reuse(namespace, &new.refresh(), 0)
                .await
                .unwrap(),
            Reuse::Revoked { records: 1 }
        );
        let kept = issue(&store, record(namespace)).await;
        let doomed = issue(&store, {
            let mut r = record(namespace);
            r.client_id = "doomed".into();
            r
        })
        .await;
        let filter = ListFilter {
            client_id: Some("doomed".into()),
            ..ListFilter::default()
        };
        assert_eq!(store.delete_matching(namespace, &filter).await.unwrap(), 1);
        assert!(gone(&store, &doomed).await);
        assert!(intact(&store, &kept).await);
    }
    let keys = server.keys();
    let tags: std::collections::BTreeSet<&str> = keys
        .iter()
        .map(|key| {
            assert!(key.starts_with("{tg:"), "{key} lacks the tag");
            // The tag is what lies between the first `{` and the first `}`.
            let end = key.find('}').unwrap();
            assert_eq!(&key[end..end + 2], "}:", "{key}");
            &key[1..end]
        })
        .collect();
    assert_eq!(
        tags.into_iter().collect::<Vec<_>>(),
        ["tg:other", "tg:shop", "tg:we%7Dird%3Ans"]
    );
    for (kind, per_namespace) in [
        ("at:", 1),
        ("rt:", 1),
        ("tok:", 1),
        ("code:", 1),
        ("retired:", 2),
    ] {
        assert_eq!(
            keys.iter()
                .filter(|k| k.contains(&format!("}}:{kind}")))
                .count(),
            3 * per_namespace,
            "{per_namespace} {kind} key(s) per namespace in {keys:?}"
        );
    }
    assert!(keys.contains(&"{tg:shop}:idx".to_string()), "{keys:?}");
    assert!(keys.contains(&"{tg:shop}:exp".to_string()), "{keys:?}");
}

fn pttl(server: &RedisServer, key: &str) -> i64 {
    server
        .command(&["PTTL", key])
        .as_integer()
        .unwrap_or_else(|| panic!("PTTL {key}"))
}

#[tokio::test]
async fn redis_ttls_as_specified() {
    let (server, store) = redis().await;
    let prefix = "{tg:shop}:";
    let key = |kind: &str, hash: &TokenHash| format!("{prefix}{kind}:{}", hash.to_hex());

    // Access 100 s inside a record of 10 000 s.
    let mut r = record(NS);
    r.expires_in = 100;
    r.ttl = 10_000;
    let issued = issue(&store, r).await;
    let at = pttl(&server, &key("at", &issued.access()));
    let rt = pttl(&server, &key("rt", &issued.refresh()));
    let tok = pttl(&server, &format!("{prefix}tok:{}", issued.record.id));
    assert!(0 < at && at <= 100_000, "access PTTL {at}");
    assert!(100_000 < rt && rt <= 10_000_000, "refresh PTTL {rt}");
    assert!(100_000 < tok && tok <= 10_000_000, "record PTTL {tok}");
    assert_eq!(pttl(&server, &format!("{prefix}idx")), -1);
    assert_eq!(pttl(&server, &format!("{prefix}exp")), -1);

    // The access token never outlives its record.
    let mut r = record(NS);
    r.expires_in = 10_000;
    r.ttl = 100;
    let bounded = issue(&store, r).await;
    let at = pttl(&server, &key("at", &bounded.access()));
    assert!(0 < at && at <= 100_000, "bounded access PTTL {at}");
    let mut r = record(NS);
    r.expires_in = 0;
    r.ttl = 100;
    let bounded = issue(&store, r).await;
    let at = pttl(&server, &key("at", &bounded.access()));
    assert!(
        0 < at && at <= 100_000,
        "access PTTL {at} of a never-expiring token"
    );

    // Forever is no TTL at all.
    let mut r = record(NS);
    r.expires_in = 0;
    r.ttl = 0;
    let forever = issue(&store, r).await;
    assert_eq!(pttl(&server, &key("at", &forever.access())), -1);
    assert_eq!(pttl(&server, &key("rt", &forever.refresh())), -1);
    assert_eq!(
        pttl(&server, &format!("{prefix}tok:{}", forever.record.id)),
        -1
    );
    let mut r = record(NS);
    r.expires_in = 100;
    r.ttl = 0;
    let access_only = issue(&store, r).await;
    let at = pttl(&server, &key("at", &access_only.access()));
    assert!(0 < at && at <= 100_000, "access PTTL {at}");
    assert_eq!(pttl(&server, &key("rt", &access_only.refresh())), -1);

    // Codes: as given.
    let code = TokenHash::of(&token());
    store.put_code(NS, &code, b"{}", 300).await.unwrap();
    let left = pttl(&server, &key("code", &code));
    assert!(0 < left && left <= 300_000, "code PTTL {left}");
    store.put_code(NS, &code, b"{}", 0).await.unwrap();
    assert_eq!(pttl(&server, &key("code", &code)), -1);

    // Swapping sets the new record's TTLs, and the old keys are gone.
    let mut r = record(NS);
    r.expires_in = 50;
    r.ttl = 500;
    let new = Issued {
        record: r,
        access_token: token(),
        refresh_token: Some(token()),
    };
    assert!(
        store
            .swap_refresh(
                NS,
                &issued.refresh(),
                &new.record,
                &new.access(),
                Some(&new.refresh())
            )
            .await
            .unwrap()
    );
    assert_eq!(pttl(&server, &key("at", &issued.access())), -2);
    assert_eq!(pttl(&server, &key("rt", &issued.refresh())), -2);
    let at = pttl(&server, &key("at", &new.access()));
    let rt = pttl(&server, &key("rt", &new.refresh()));
    assert!(0 < at && at <= 50_000, "new access PTTL {at}");
    assert!(50_000 < rt && rt <= 500_000, "new refresh PTTL {rt}");
    // The retired refresh token is remembered for as long as it would have lived.
    let retired = pttl(&server, &key("retired", &issued.refresh()));
    assert!(
        500_000 < retired && retired <= 10_000_000,
        "retired PTTL {retired}"
    );
    // Forever, for a record that lives forever.
    let next = successor(record(NS));
    refresh(&store, &forever, &next).await;
    assert_eq!(pttl(&server, &key("retired", &forever.refresh())), -1);
    // And nothing, when the refresh token stays.
    let mut kept = next.record.clone();
    kept.created_at += 1;
    let same = Issued {
        record: kept,
        access_token: token(),
        refresh_token: next.refresh_token.clone(),
    };
    refresh(&store, &next, &same).await;
    assert_eq!(pttl(&server, &key("retired", &next.refresh())), -2);
}

#[tokio::test]
async fn redis_index_stays_bounded() {
    let (server, store) = redis().await;
    let mut short = Vec::new();
    for _ in 0..20 {
        let mut r = record(NS);
        r.ttl = 1;
        short.push(issue(&store, r).await.record.id);
    }
    let zcard = |key: &str| server.command(&["ZCARD", key]).as_integer().unwrap();
    assert_eq!(zcard("{tg:shop}:idx"), 20);
    eventually("the short records expire", || async {
        for id in &short {
            if store.get(NS, *id).await.unwrap().is_some() {
                return false;
            }
        }
        true
    })
    .await;
    // Nobody lists; writes alone prune (a few members each).
    for _ in 0..2 {
        issue(&store, record(NS)).await;
    }
    assert_eq!(zcard("{tg:shop}:idx"), 2);
    assert_eq!(zcard("{tg:shop}:exp"), 2);
}

#[tokio::test]
async fn redis_list_prunes_expired_members() {
    let (server, store) = redis().await;
    let keep = issue(&store, record(NS)).await;
    let mut r = record(NS);
    r.ttl = 1;
    let short = issue(&store, r).await;
    eventually("the record expires", || async {
        store.get(NS, short.record.id).await.unwrap().is_none()
    })
    .await;
    let page = store
        .list(NS, &ListFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(page.records, [keep.record]);
    let members = server
        .command(&["ZRANGE", "{tg:shop}:idx", "0", "-1"])
        .strings();
    assert_eq!(members.len(), 1, "{members:?}");
}

#[tokio::test]
async fn redis_separate_connections_one_winner() {
    // Sixteen sidecars, each with its own connection, refresh the same token at once.
    let (server, store) = redis().await;
    let old = issue(&store, record(NS)).await;
    let mut stores = Vec::new();
    for _ in 0..16 {
        stores.push(RedisStore::connect(&server.url(), keys()).await.unwrap());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for sidecar in stores {
        let old_refresh = old.refresh();
        tasks.spawn(async move {
            let new = record(NS);
            sidecar
                .swap_refresh(
                    NS,
                    &old_refresh,
                    &new,
                    &TokenHash::of(&token()),
                    Some(&TokenHash::of(&token())),
                )
                .await
                .unwrap()
        });
    }
    let wins = tasks
        .join_all()
        .await
        .into_iter()
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1);
}

// === Redis only: seals ===

/// Redis's reply to `GET key`, as bytes.
fn raw(server: &RedisServer, key: &str) -> String {
    server.command(&["GET", key]).as_string().unwrap()
}

fn access_key(namespace: &str, hash: &TokenHash) -> String {
    format!("{{tg:{namespace}}}:at:{}", hash.to_hex())
}

fn refresh_key(namespace: &str, hash: &TokenHash) -> String {
    format!("{{tg:{namespace}}}:rt:{}", hash.to_hex())
}

#[tokio::test]
async fn a_record_written_without_the_key_is_absent() {
    let (server, store) = redis().await;
    let mut forged = record(NS);
    forged.authenticated_userid = Some("root".into());
    forged.expires_in = 0;
    let json = serde_json::to_string(&forged).unwrap();
    let mine = token();
    let key = access_key(NS, &TokenHash::of(&mine));
    // As the store wrote records before seals, and with a seal made up.
    server.command(&["SET", &key, &json]);
    assert_eq!(
        store.find_access(NS, &TokenHash::of(&mine)).await.unwrap(),
        None
    );
    server.command(&["SET", &key, &format!("{}.{json}", "0".repeat(64))]);
    assert_eq!(
        store.find_access(NS, &TokenHash::of(&mine)).await.unwrap(),
        None
    );
    // A record of the same shape as a genuine one, in the record hash, is not listed either.
    let tok = format!("{{tg:{NS}}}:tok:{}", forged.id);
    server.command(&["HSET", &tok, "record", &json]);
    server.command(&[
        "ZADD",
        &format!("{{tg:{NS}}}:idx"),
        "0",
        &format!("{:020}:{}", forged.created_at, forged.id),
    ]);
    assert_eq!(store.get(NS, forged.id).await.unwrap(), None);
    let page = store
        .list(NS, &ListFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(page.records, vec![]);
    assert_eq!(store.keys().unverified_total(), 4);
}

#[tokio::test]
async fn a_genuine_value_moved_to_another_key_or_namespace_is_absent() {
    let (server, store) = redis().await;
    let victim = issue(&store, record(NS)).await;
    let genuine = raw(&server, &access_key(NS, &victim.access()));
    let mine = token();
    server.command(&["SET", &access_key(NS, &TokenHash::of(&mine)), &genuine]);
    assert_eq!(
        store.find_access(NS, &TokenHash::of(&mine)).await.unwrap(),
        None
    );
    server.command(&["SET", &access_key("other", &victim.access()), &genuine]);
    assert_eq!(
        store.find_access("other", &victim.access()).await.unwrap(),
        None
    );
    // The genuine one still works where it belongs.
    assert_eq!(
        store.find_access(NS, &victim.access()).await.unwrap(),
        Some(victim.record.clone())
    );
    assert_eq!(store.keys().unverified_total(), 2);
}

#[tokio::test]
async fn a_forged_refresh_key_neither_finds_nor_refreshes_a_record() {
    let (server, store) = redis().await;
    let victim = issue(&store, record(NS)).await;
    let genuine = raw(&server, &refresh_key(NS, &victim.refresh()));
    let mine = token();
    let mine_hash = TokenHash::of(&mine);
    // The victim's record id, plainly, then the victim's genuine sealed id, under my token.
    for forged in [victim.record.id.to_string(), genuine] {
        server.command(&["SET", &refresh_key(NS, &mine_hash), &forged]);
        assert_eq!(store.find_refresh(NS, &mine_hash).await.unwrap(), None);
        let next = successor(record(NS));
        assert!(
            !store
                .swap_refresh(
                    NS,
                    &mine_hash,
                    &next.record,
                    &next.access(),
                    Some(&next.refresh())
                )
                .await
                .unwrap()
        );
        assert_eq!(store.find_access(NS, &next.access()).await.unwrap(), None);
    }
    // The victim's own refresh token still works.
    assert_eq!(
        store.find_refresh(NS, &victim.refresh()).await.unwrap(),
        Some(victim.record.clone())
    );
}

#[tokio::test]
async fn a_refresh_key_swapped_after_its_check_does_not_refresh() {
    // The swap re-checks, atomically, that the refresh key holds what was verified: a value
    // moved there by someone else in between does not count.
    let (server, store) = redis().await;
    let first = issue(&store, record(NS)).await;
    let other = issue(&store, record(NS)).await;
    let others = raw(&server, &refresh_key(NS, &other.refresh()));
    server.command(&["SET", &refresh_key(NS, &first.refresh()), &others]);
    let next = successor(record(NS));
    assert!(
        !store
            .swap_refresh(
                NS,
                &first.refresh(),
                &next.record,
                &next.access(),
                Some(&next.refresh())
            )
            .await
            .unwrap()
    );
    assert!(store.get(NS, other.record.id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_forged_or_moved_authorization_code_is_absent() {
    let (server, store) = redis().await;
    let code = TokenHash::of(&token());
    store
        .put_code(NS, &code, b"{\"user\":\"alice\"}", 300)
        .await
        .unwrap();
    let genuine = raw(&server, &format!("{{tg:{NS}}}:code:{}", code.to_hex()));
    let mine = TokenHash::of(&token());
    let mine_key = format!("{{tg:{NS}}}:code:{}", mine.to_hex());
    server.command(&["SET", &mine_key, &genuine]);
    assert_eq!(store.take_code(NS, &mine).await.unwrap(), None);
    server.command(&["SET", &mine_key, "{\"user\":\"root\"}"]);
    assert_eq!(store.take_code(NS, &mine).await.unwrap(), None);
    assert_eq!(
        store.take_code(NS, &code).await.unwrap().as_deref(),
        Some(&b"{\"user\":\"alice\"}"[..])
    );
}

#[tokio::test]
async fn replicas_share_tokens_by_key_and_rotation_keeps_the_previous_one() {
    let server = RedisServer::start();
    let first = RedisStore::connect(&server.url(), keys_of(1, None))
        .await
        .unwrap();
    let issued = issue(&first, record(NS)).await;
    let found = |store: RedisStore| {
        let access = issued.access();
        async move { store.find_access(NS, &access).await.unwrap().is_some() }
    };
    let same = RedisStore::connect(&server.url(), keys_of(1, None))
        .await
        .unwrap();
    assert!(found(same).await, "a replica with the same key file");
    let stranger = RedisStore::connect(&server.url(), keys_of(2, None))
        .await
        .unwrap();
    assert!(!found(stranger.clone()).await, "another key file");
    let rotated = RedisStore::connect(&server.url(), keys_of(2, Some(1)))
        .await
        .unwrap();
    assert!(
        found(rotated.clone()).await,
        "the previous key still verifies"
    );
    // The rotated store seals with its current key: the old one cannot read that.
    let fresh = issue(&rotated, record(NS)).await;
    assert!(
        first
            .find_access(NS, &fresh.access())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        stranger
            .find_access(NS, &fresh.access())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_namespace_without_a_key_stores_and_finds_nothing() {
    let server = RedisServer::start();
    let key = StoreKey::new(vec![7; 32]).unwrap();
    let keys = StoreKeys::per_namespace([(NS.to_owned(), KeyPair::new(key))]);
    let store = RedisStore::connect(&server.url(), keys).await.unwrap();
    issue(&store, record(NS)).await;
    let other = record("other");
    let err = store
        .insert(&other, &TokenHash::of(&token()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("no store key"), "{err}");
    let code = TokenHash::of(&token());
    assert!(store.put_code("other", &code, b"x", 0).await.is_err());
    assert_eq!(store.take_code("other", &code).await.unwrap(), None);
}

// === Redis only: revocations ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_revocations_reach_every_sidecar() {
    let (server, store) = redis().await;
    let other = RedisStore::connect(&server.url(), keys()).await.unwrap();
    let mut mine = subscribed(&store).await;
    let mut theirs = subscribed(&other).await;
    let mut wire = server.subscribe(REVOCATION_CHANNEL);
    assert_eq!(REVOCATION_CHANNEL, "tollgate:revoked");

    // Revoked through one sidecar, heard by both.
    for namespace in [NS, "we}ird:ns %"] {
        let issued = issue(&store, record(namespace)).await;
        assert!(store.delete(namespace, issued.record.id).await.unwrap());
        let expected = RevocationEvent::Revoked {
            namespace: namespace.to_owned(),
            access: issued.access(),
        };
        assert_eq!(next_event(&mut mine).await, expected);
        assert_eq!(next_event(&mut theirs).await, expected);
    }
    // On the wire: `<escaped namespace> <hex SHA-256>`, no token.
    let (channel, payload) = wire.next_message();
    assert_eq!(channel, REVOCATION_CHANNEL);
    let payload = String::from_utf8(payload).unwrap();
    let (namespace, hash) = payload.split_once(' ').unwrap();
    assert_eq!(namespace, NS);
    assert!(TokenHash::from_hex(hash).is_some(), "{payload}");
    let (_, payload) = wire.next_message();
    assert!(
        String::from_utf8(payload)
            .unwrap()
            .starts_with("we%7Dird%3Ans%20%25 "),
    );

    // Garbage on the channel, from someone else, is ignored.
    for garbage in ["", "shop", "shop not-a-hash", "a b c"] {
        server.command(&["PUBLISH", REVOCATION_CHANNEL, garbage]);
    }
    expect_revoked(&store, &mut mine, NS, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_revocations_lost_and_restored_after_a_restart() {
    let (mut server, store) = redis().await;
    let mut events = subscribed(&store).await;
    for round in 0..2 {
        server.kill();
        assert_eq!(
            next_event(&mut events).await,
            RevocationEvent::Lost,
            "round {round}"
        );
        server.restart();
        assert_eq!(
            next_event(&mut events).await,
            RevocationEvent::Subscribed,
            "round {round}"
        );
        eventually("the store reconnects", || async {
            bounded("ping", store.ping()).await.is_ok()
        })
        .await;
        let issued = issue(&store, record(NS)).await;
        assert!(store.delete(NS, issued.record.id).await.unwrap());
        expect_revoked(&store, &mut events, NS, &[issued.access()]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_revocations_lost_when_redis_stops_answering() {
    // A connection that stays open but gets no answers (as in a network partition) is
    // noticed by the subscription's health check.
    let (server, store) = redis().await;
    let mut events = subscribed(&store).await;
    server.command(&["CLIENT", "PAUSE", "10000"]);
    assert_eq!(next_event(&mut events).await, RevocationEvent::Lost);
    server.command(&["CLIENT", "UNPAUSE"]);
    assert_eq!(next_event(&mut events).await, RevocationEvent::Subscribed);
    let issued = issue(&store, record(NS)).await;
    assert!(store.delete(NS, issued.record.id).await.unwrap());
    expect_revoked(&store, &mut events, NS, &[issued.access()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_revocations_a_slow_consumer_is_told_it_lost_some() {
    let (server, store) = redis().await;
    let mut events = subscribed(&store).await;
    let numsub = || {
        server
            .command(&["PUBSUB", "NUMSUB", REVOCATION_CHANNEL])
            .strings()
            .get(1)
            .cloned()
    };
    assert_eq!(numsub().as_deref(), Some("1"));
    // Far more than the subscription buffers, while nobody reads.
    let published = 3000;
    server.command(&[
        "EVAL",
        "for i = 1, tonumber(ARGV[1]) do redis.call('PUBLISH', KEYS[1], ARGV[2]) end",
        "1",
        REVOCATION_CHANNEL,
        &published.to_string(),
        &format!("{NS} {}", TokenHash::of("x").to_hex()),
    ]);
    // Rather than buffer without bound, the subscription lets go of Redis…
    eventually("the subscription drops its connection", || async {
        numsub().as_deref() == Some("0")
    })
    .await;
    // …and tells the consumer, after what it did buffer.
    let mut revoked = 0;
    loop {
        match next_event(&mut events).await {
            RevocationEvent::Revoked { .. } => revoked += 1,
            RevocationEvent::Lost => break,
            RevocationEvent::Subscribed => panic!("subscribed again before Lost"),
        }
    }
    assert!(0 < revoked && revoked < published, "{revoked}");
    assert_eq!(next_event(&mut events).await, RevocationEvent::Subscribed);
    assert_eq!(numsub().as_deref(), Some("1"));
    expect_revoked(&store, &mut events, NS, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_revocations_unsubscribe_when_dropped() {
    let (server, store) = redis().await;
    let numsub = || {
        server
            .command(&["PUBSUB", "NUMSUB", REVOCATION_CHANNEL])
            .strings()
            .get(1)
            .cloned()
    };
    let events = subscribed(&store).await;
    let any = subscribed(&AnyTokenStore::from(store.clone())).await;
    assert_eq!(numsub().as_deref(), Some("2"));
    drop(events);
    drop(any);
    eventually("the subscriptions end", || async {
        numsub().as_deref() == Some("0")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscribe_while_down_is_an_error() {
    let (mut server, store) = redis().await;
    server.kill();
    let result = bounded("subscribe", store.subscribe()).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_revocations_a_slow_consumer_is_told_it_lost_some() {
    let store = MemoryStore::new();
    let mut events = subscribed(&store).await;
    for _ in 0..5000 {
        issue(&store, record(NS)).await;
    }
    assert_eq!(
        store
            .delete_matching(NS, &ListFilter::default())
            .await
            .unwrap(),
        5000
    );
    assert_eq!(next_event(&mut events).await, RevocationEvent::Lost);
    assert_eq!(next_event(&mut events).await, RevocationEvent::Subscribed);
    // Then what is still buffered.
    assert!(matches!(
        next_event(&mut events).await,
        RevocationEvent::Revoked { .. }
    ));
}

// === Redis only: outages, AUTH, TLS ===

/// Runs `op` under a generous timeout that fails the test: an outage must produce an error,
/// not a hang.
async fn bounded<T>(what: &str, op: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), op)
        .await
        .unwrap_or_else(|_| panic!("{what} hung while Redis was down"))
}

#[tokio::test]
async fn redis_outage_fails_fast_and_recovers() {
    let (mut server, store) = redis().await;
    let issued = issue(&store, record(NS)).await;
    server.kill();

    for round in 0..3 {
        let r = bounded("find_access", store.find_access(NS, &issued.access())).await;
        assert!(
            matches!(r, Err(StoreError::Unavailable(_))),
            "round {round}: {r:?}"
        );
        let r = bounded("insert", store.insert(&record(NS), &issued.access(), None)).await;
        assert!(
            matches!(r, Err(StoreError::Unavailable(_))),
            "round {round}: {r:?}"
        );
        let r = bounded(
            "swap_refresh",
            store.swap_refresh(NS, &issued.refresh(), &record(NS), &issued.access(), None),
        )
        .await;
        assert!(
            matches!(r, Err(StoreError::Unavailable(_))),
            "round {round}: {r:?}"
        );
        let r = bounded("list", store.list(NS, &ListFilter::default(), 10, None)).await;
        assert!(
            matches!(r, Err(StoreError::Unavailable(_))),
            "round {round}: {r:?}"
        );
        let r = bounded("ping", store.ping()).await;
        assert!(
            matches!(r, Err(StoreError::Unavailable(_))),
            "round {round}: {r:?}"
        );
    }

    // Back, empty (no persistence): the same store object works again, scripts included.
    server.restart();
    eventually("the store reconnects", || async {
        bounded("ping", store.ping()).await.is_ok()
    })
    .await;
    assert_eq!(store.find_access(NS, &issued.access()).await.unwrap(), None);
    let again = issue(&store, record(NS)).await;
    assert_eq!(
        store.find_access(NS, &again.access()).await.unwrap(),
        Some(again.record.clone())
    );
    let new = record(NS);
    assert!(
        store
            .swap_refresh(NS, &again.refresh(), &new, &TokenHash::of(&token()), None)
            .await
            .unwrap()
    );
    assert!(store.delete(NS, new.id).await.unwrap());
}

#[tokio::test]
async fn redis_down_at_connect_is_an_error() {
    let (mut server, _store) = redis().await;
    server.kill();
    let result = bounded("connect", RedisStore::connect(&server.url(), keys())).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn redis_auth_from_the_url_never_shown() {
    let password = "correct-horse-battery";
    let server = RedisServer::start_with_args(&["--requirepass", password]);
    let url = format!("redis://:{password}@127.0.0.1:{}", server.port());
    let store = RedisStore::connect(&url, keys()).await.unwrap();
    let mut events = subscribed(&store).await;
    let issued = issue(&store, record(NS)).await;
    assert_eq!(
        store.find_access(NS, &issued.access()).await.unwrap(),
        Some(issued.record.clone())
    );
    expect_revoked(&store, &mut events, NS, &[]).await;
    let shown = format!("{events:?}");
    assert!(!shown.contains(password), "{shown}");
    for shown in [
        format!("{store:?}"),
        format!("{:?}", AnyTokenStore::from(store.clone())),
    ] {
        assert!(!shown.contains(password), "{shown}");
        assert!(shown.contains(&server.port().to_string()), "{shown}");
    }

    // A wrong password and a missing one: errors, without the password in them.
    let wrong = format!("redis://:not-{password}@127.0.0.1:{}", server.port());
    let err = bounded("connect", RedisStore::connect(&wrong, keys()))
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(password), "{shown}");
    // Without a password, the server refuses commands.
    let anonymous = RedisStore::connect(&server.url(), keys()).await;
    match anonymous {
        Err(err) => assert!(matches!(err, StoreError::Unavailable(_))),
        Ok(store) => assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        )),
    }
    // And a garbage URL.
    let err = RedisStore::connect("redis://:hunter2@[::1", keys())
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tollgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let ca_file = write("ca.pem", ca.pem());
    let cert_file = write("cert.pem", cert.pem());
    let key_file = write("key.pem", key.serialize_pem());
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    // The plain port stays open for the harness's readiness check.
    let server = RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://localhost:{tls_port}");
    let store = RedisStore::connect_with_ca(&url, ca.pem().as_bytes(), keys())
        .await
        .unwrap();
    let mut events = subscribed(&store).await;
    let issued = issue(&store, record(NS)).await;
    assert_eq!(
        store.find_access(NS, &issued.access()).await.unwrap(),
        Some(issued.record.clone())
    );
    assert!(store.delete(NS, issued.record.id).await.unwrap());
    expect_revoked(&store, &mut events, NS, &[issued.access()]).await;
    assert!(format!("{store:?}").contains("rediss://"));

    // Not trusted without the CA.
    let untrusted = bounded("connect", RedisStore::connect(&url, keys())).await;
    assert!(
        matches!(untrusted, Err(StoreError::Unavailable(_))),
        "{untrusted:?}"
    );
    drop(server);
}

// === Redis only: Sentinel ===

#[tokio::test]
async fn a_sentinel_naming_a_replica_is_not_believed() {
    let master = RedisServer::start_with_args(&["--requirepass", "s3cret"]);
    let replica = RedisServer::start_replica_of(
        &master,
        &["--masterauth", "s3cret", "--requirepass", "s3cret"],
    );
    let lying = FakeSentinel::naming("127.0.0.1", replica.port());
    let url = format!("redis+sentinel://:s3cret@127.0.0.1:{}/m", lying.port());
    let err = bounded("connect", RedisStore::connect(&url, keys()))
        .await
        .unwrap_err()
        .to_string();
    let named = format!("names 127.0.0.1:{}, which is not a master", replica.port());
    assert!(err.contains(&named), "{err}");
    assert!(!err.contains("s3cret"), "{err}");

    // A sentinel further on the list names the master: that one is used.
    let honest = FakeSentinel::naming("127.0.0.1", master.port());
    let url = format!(
        "redis+sentinel://:s3cret@127.0.0.1:{},127.0.0.1:{}/m",
        lying.port(),
        honest.port()
    );
    let store = bounded("connect", RedisStore::connect(&url, keys()))
        .await
        .unwrap();
    let issued = issue(&store, record(NS)).await;
    assert_eq!(
        store.find_access(NS, &issued.access()).await.unwrap(),
        Some(issued.record.clone())
    );
    assert!(master.keys().iter().any(|k| k.contains(":at:")));
    let shown = format!("{store:?}");
    assert!(shown.contains("redis+sentinel://127.0.0.1:"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[tokio::test]
async fn the_store_and_its_subscriber_follow_the_master_the_sentinels_name_next() {
    let first = RedisServer::start();
    let second = RedisServer::start();
    let sentinel = FakeSentinel::naming("127.0.0.1", first.port());
    let url = format!("redis+sentinel://127.0.0.1:{}/m", sentinel.port());
    let store = bounded("connect", RedisStore::connect(&url, keys()))
        .await
        .unwrap();
    let mut events = subscribed(&store).await;
    issue(&store, record(NS)).await;
    assert!(first.keys().iter().any(|k| k.contains(":at:")));

    // What Sentinel does in a failover: name another master, demote the old one (and drop
    // its clients).
    sentinel.name("127.0.0.1", second.port());
    let second_port = second.port().to_string();
    first.command(&["REPLICAOF", "127.0.0.1", &second_port]);
    first.command(&["CLIENT", "KILL", "TYPE", "normal"]);
    first.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);

    // Writes fail until the store follows, then land on the new master.
    let deadline = Instant::now() + Duration::from_secs(20);
    let issued = loop {
        let candidate = record(NS);
        let access = TokenHash::of(&format!("access {}", candidate.id));
        if store.insert(&candidate, &access, None).await.is_ok() {
            break (candidate, access);
        }
        assert!(
            Instant::now() < deadline,
            "the store never followed the new master"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        second
            .keys()
            .iter()
            .any(|k| k.contains(&issued.0.id.to_string())),
        "{:?}",
        second.keys()
    );

    // The subscription said it was lost, came back, and hears the new master's revocations.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lost = false;
    loop {
        let event = bounded("an event", events.next()).await.unwrap();
        match event {
            RevocationEvent::Lost => lost = true,
            RevocationEvent::Subscribed if lost => break,
            _ => {}
        }
        assert!(Instant::now() < deadline);
    }
    assert!(store.delete(NS, issued.0.id).await.unwrap());
    expect_revoked(&store, &mut events, NS, &[issued.1]).await;
}

#[test]
fn memory_store_debug() {
    let shown = format!("{:?}", AnyTokenStore::from(MemoryStore::new()));
    assert!(shown.starts_with("Memory("), "{shown}");
}

// === Redis only: Redis Cluster ===

/// Three `redis-server`s joined into one cluster, the slots split evenly between them.
async fn cluster() -> Vec<RedisServer> {
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            RedisServer::start_with_args(&[
                "--cluster-enabled",
                "yes",
                // Relative to the node's own working directory.
                "--cluster-config-file",
                "nodes.conf",
            ])
        })
        .collect();
    let ranges = [("0", "5460"), ("5461", "10922"), ("10923", "16383")];
    for (node, (low, high)) in nodes.iter().zip(ranges) {
        let reply = node.command(&["CLUSTER", "ADDSLOTSRANGE", low, high]);
        assert_eq!(reply.to_string(), "OK", "{reply:?}");
    }
    for node in &nodes[1..] {
        let reply = nodes[0].command(&["CLUSTER", "MEET", "127.0.0.1", &node.port().to_string()]);
        assert_eq!(reply.to_string(), "OK", "{reply:?}");
    }
    eventually("the cluster forms", || async {
        nodes.iter().all(|node| {
            let info = node.command(&["CLUSTER", "INFO"]).to_string();
            // Every node must also know every other's address, its own included.
            let slots = node.command(&["CLUSTER", "SLOTS"]).to_string();
            info.contains("cluster_state:ok")
                && info.contains("cluster_known_nodes:3")
                && slots.matches("127.0.0.1").count() == 3
        })
    })
    .await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    let nodes = cluster().await;
    let store = RedisStore::connect(&nodes[1].url(), keys()).await.unwrap();
    assert!(format!("{store:?}").contains("(cluster)"), "{store:?}");
    // One subscription, on one node, hears the revocations of every node.
    let mut events = subscribed(&store).await;

    // Namespaces land on different nodes, and each works there, scripts included.
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..12 {
        let namespace = format!("ns-{i}");
        let tag = format!("{{tg:{namespace}}}");
        let slot = nodes[0]
            .command(&["CLUSTER", "KEYSLOT", &tag])
            .as_integer()
            .unwrap();
        owners.insert(slot * 3 / 16384);

        let issued = issue(&store, record(&namespace)).await;
        let found = store
            .find_access(&namespace, &issued.access())
            .await
            .unwrap();
        assert_eq!(found.as_ref(), Some(&issued.record));
        let new = record(&namespace);
        let new_access = TokenHash::of(&token());
        let swapped = store
            .swap_refresh(&namespace, &issued.refresh(), &new, &new_access, None)
            .await
            .unwrap();
        assert!(swapped);
        assert_eq!(
            store
                .find_refresh(&namespace, &issued.refresh())
                .await
                .unwrap(),
            None
        );
        let page = store
            .list(&namespace, &ListFilter::default(), 10, None)
            .await
            .unwrap();
        assert_eq!(page.records, std::slice::from_ref(&new));
        assert!(store.delete(&namespace, new.id).await.unwrap());
        for access in [issued.access(), new_access] {
            assert_eq!(
                next_event(&mut events).await,
                RevocationEvent::Revoked {
                    namespace: namespace.clone(),
                    access
                }
            );
        }
        let code = TokenHash::of(&token());
        store.put_code(&namespace, &code, b"c", 300).await.unwrap();
        assert_eq!(
            store.take_code(&namespace, &code).await.unwrap(),
            Some(b"c".to_vec())
        );
    }
    assert!(owners.len() >= 2, "all namespaces on one node: {owners:?}");

    // The shared cases, each on an empty cluster.
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {$(
            tokio::time::timeout(CASE_TIMEOUT, $case(&store)).await.expect(stringify!($case));
            for node in &nodes {
                node.command(&["FLUSHALL"]);
            }
        )*};
    }
    cases!(
        insert_then_find,
        unknown_tokens,
        swap_refresh_replaces,
        concurrent_swaps_one_winner,
        swap_reusing_id_and_refresh,
        list_pages,
        list_pages_with_deletes_between,
        list_filters,
        delete_by_id,
        insert_same_id_replaces,
        codes_single_use,
        namespaces_isolated,
        ping,
        reuse_detected_after_swap,
        reuse_revokes_the_whole_chain,
        reuse_within_grace_changes_nothing,
        reuse_refresh_token_is_never_retired,
        delete_matching_by_user_client_service,
        delete_matching_in_many_batches,
        revocations_published,
        revocations_of_reuse_and_bulk_delete,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_subscription_moves_to_another_node() {
    let mut nodes = cluster().await;
    // The remaining nodes keep serving their slots once the third is marked failed.
    for node in &nodes {
        let reply = node.command(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
        assert_eq!(reply.to_string(), "OK", "{reply:?}");
    }
    let store = RedisStore::connect(&nodes[1].url(), keys()).await.unwrap();
    let mut events = subscribed(&store).await;
    // The node the URL names goes away: the subscription is lost, and taken up again on a
    // node that remains.
    nodes[1].kill();
    assert_eq!(next_event(&mut events).await, RevocationEvent::Lost);
    assert_eq!(next_event(&mut events).await, RevocationEvent::Subscribed);
    // A namespace served by a node that remains: its revocations still arrive.
    let namespace = (0..)
        .map(|i| format!("ns-{i}"))
        .find(|namespace| {
            let tag = format!("{{tg:{namespace}}}");
            let slot = nodes[0]
                .command(&["CLUSTER", "KEYSLOT", &tag])
                .as_integer()
                .unwrap();
            !(5461..=10922).contains(&slot)
        })
        .unwrap();
    // The store's own connection may fail a few requests while it learns the new topology.
    let deadline = Instant::now() + PATIENCE;
    let access = loop {
        let r = record(&namespace);
        let access = TokenHash::of(&token());
        let attempt = async {
            store.insert(&r, &access, None).await?;
            store.delete(&namespace, r.id).await
        };
        if let Ok(true) = bounded("insert and delete", attempt).await {
            break access;
        }
        assert!(
            Instant::now() < deadline,
            "the remaining nodes are still not served after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A failed attempt may have revoked something before: skip that.
    loop {
        match next_event(&mut events).await {
            RevocationEvent::Revoked {
                namespace: ns,
                access: revoked,
            } => {
                assert_eq!(ns, namespace);
                if revoked == access {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}
