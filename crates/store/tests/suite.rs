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
    AnyTokenStore, ListFilter, MemoryStore, RedisStore, StoreError, TokenHash, TokenRecord,
    TokenStore,
};
use tollgate_test_support::RedisServer;
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
    let store = RedisStore::connect(&server.url()).await.unwrap();
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
    assert_eq!(
        store.take_code(NS, &code).await.unwrap(),
        Some(payload.clone())
    );
    assert_eq!(store.take_code(NS, &code).await.unwrap(), None);

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
    secrets.extend([old.access_token, old.refresh_token.unwrap()]);
    secrets.extend([new.access_token.clone(), new.refresh_token.clone().unwrap()]);

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
        // Expired index members are pruned by a later write: make sure `exp` exists too.
        let _ = issued;
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
    for kind in ["at:", "rt:", "tok:", "code:"] {
        assert_eq!(
            keys.iter()
                .filter(|k| k.contains(&format!("}}:{kind}")))
                .count(),
            3,
            "one {kind} key per namespace in {keys:?}"
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
        stores.push(RedisStore::connect(&server.url()).await.unwrap());
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
    let result = bounded("connect", RedisStore::connect(&server.url())).await;
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
    let store = RedisStore::connect(&url).await.unwrap();
    let issued = issue(&store, record(NS)).await;
    assert_eq!(
        store.find_access(NS, &issued.access()).await.unwrap(),
        Some(issued.record)
    );
    for shown in [
        format!("{store:?}"),
        format!("{:?}", AnyTokenStore::from(store.clone())),
    ] {
        assert!(!shown.contains(password), "{shown}");
        assert!(shown.contains(&server.port().to_string()), "{shown}");
    }

    // A wrong password and a missing one: errors, without the password in them.
    let wrong = format!("redis://:not-{password}@127.0.0.1:{}", server.port());
    let err = bounded("connect", RedisStore::connect(&wrong))
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(password), "{shown}");
    // Without a password, the server refuses commands.
    let anonymous = RedisStore::connect(&server.url()).await;
    match anonymous {
        Err(err) => assert!(matches!(err, StoreError::Unavailable(_))),
        Ok(store) => assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        )),
    }
    // And a garbage URL.
    let err = RedisStore::connect("redis://:hunter2@[::1")
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
    let store = RedisStore::connect_with_ca(&url, ca.pem().as_bytes())
        .await
        .unwrap();
    let issued = issue(&store, record(NS)).await;
    assert_eq!(
        store.find_access(NS, &issued.access()).await.unwrap(),
        Some(issued.record)
    );
    assert!(format!("{store:?}").contains("rediss://"));

    // Not trusted without the CA.
    let untrusted = bounded("connect", RedisStore::connect(&url)).await;
    assert!(
        matches!(untrusted, Err(StoreError::Unavailable(_))),
        "{untrusted:?}"
    );
    drop(server);
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
    let store = RedisStore::connect(&nodes[1].url()).await.unwrap();
    assert!(format!("{store:?}").contains("(cluster)"), "{store:?}");

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
    );
}
