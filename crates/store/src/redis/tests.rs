//! The pure parts of the Redis store: key names, members, payloads, lifetimes, what its
//! messages show. The store against a real Redis is `tests/suite.rs`.

use redis::Client;
use uuid::Uuid;

use super::connection::{describe, scrub_password};
use super::layout::{
    CLOCK_SKEW, Keys, PAYLOAD_AT, access_still_valid, member, member_id, parse_revocation,
    revocation_payload,
};
use crate::{TokenHash, TokenRecord};

#[test]
fn namespaces_are_escaped_one_to_one() {
    assert_eq!(Keys::new("default").prefix, "{tg:default}:");
    assert_eq!(Keys::new("team-a.b_c").prefix, "{tg:team-a.b_c}:");
    assert_eq!(Keys::new("a}b").prefix, "{tg:a%7Db}:");
    assert_eq!(Keys::new("a:b").prefix, "{tg:a%3Ab}:");
    assert_ne!(Keys::new("a%3Ab").prefix, Keys::new("a:b").prefix);
}

#[test]
fn revocation_payloads_round_trip() {
    let hash = TokenHash::of("token");
    for namespace in ["default", "we}ird:ns", "a b", "100%", "é", ""] {
        let payload = revocation_payload(namespace, &hash);
        assert_eq!(payload.matches(' ').count(), 1, "{PAYLOAD_AT}");
        assert_eq!(
            parse_revocation(payload.as_bytes()),
            Some((namespace.to_owned(), hash)),
            "{PAYLOAD_AT}"
        );
    }
    assert_eq!(
        revocation_payload("shop", &hash),
        format!("shop {}", hash.to_hex())
    );
    for garbage in [
        "",
        "shop",
        "shop nothex",
        "sh}op 00",
        "%zz 00",
        "%4",
        &format!("shop {}00", hash.to_hex()),
    ] {
        assert_eq!(parse_revocation(garbage.as_bytes()), None, "{garbage}");
    }
    assert_eq!(parse_revocation(b"\xff abc"), None);
}

#[test]
fn members_sort_like_created_at_then_id() {
    let low = Uuid::from_u128(1);
    let high = Uuid::from_u128(u128::MAX);
    let mut members = [
        member(10, high),
        member(9, high),
        member(10, low),
        member(1_700_000_000_000, low),
    ];
    members.sort();
    assert_eq!(
        members,
        [
            member(9, high),
            member(10, low),
            member(10, high),
            member(1_700_000_000_000, low)
        ]
    );
    assert_eq!(member_id(&member(10, high)).ok(), Some(high));
    assert!(member_id("garbage").is_err());
}

#[test]
fn a_put_back_access_value_ends_at_its_deadline_give_or_take_the_skew() {
    let record = TokenRecord {
        id: Uuid::nil(),
        namespace: "ns".into(),
        credential_id: Uuid::nil(),
        client_id: "c".into(),
        service_id: None,
        authenticated_userid: None,
        scope: String::new(),
        expires_in: 100,
        created_at: 1_000_000,
        ttl: 0,
    };
    let deadline = 1_000_000 + 100_000;
    let skew = CLOCK_SKEW.as_millis() as u64;
    assert!(access_still_valid(&record, deadline - 1));
    assert!(access_still_valid(&record, deadline + skew - 1));
    assert!(!access_still_valid(&record, deadline + skew));
    let forever = TokenRecord {
        expires_in: 0,
        ..record
    };
    assert!(access_still_valid(&forever, u64::MAX));
}

#[test]
fn passwords_are_scrubbed() {
    let url = "redis://user:hunter2@redis:6379/0";
    assert_eq!(
        scrub_password(url, "bad hunter2 thing".into()),
        "bad *** thing"
    );
    assert_eq!(scrub_password("redis://redis", "x".into()), "x");
    assert_eq!(
        scrub_password("rediss://:p%40ss@h/", "p%40ss".into()),
        "***"
    );
}

#[test]
fn describe_hides_the_password() {
    let client = Client::open("redis://user:hunter2@localhost:6390/2").unwrap();
    assert_eq!(describe(&client), "redis://user@localhost:6390/2");
}
