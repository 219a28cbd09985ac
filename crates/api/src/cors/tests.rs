//! Kong's cors spec (spec/03-plugins/13-cors/01-access_spec.lua), its origin cases ported
//! one for one, and the cases where tollgate is stricter than Kong on purpose.

use super::*;

fn spec(origins: &[&str]) -> CorsSpec {
    serde_json::from_value(serde_json::json!({ "origins": origins })).unwrap()
}

fn allowed(origins: &[&str]) -> AllowedOrigins {
    compile(&spec(origins)).unwrap().origins
}

/// What Kong's spec writes for a case: `Some(true)` the request's origin, `Some(false)` no
/// header, or the exact value.
enum Expect {
    Reflected,
    Refused,
    Sent(&'static str),
}
use Expect::{Reflected, Refused, Sent};

/// The request origins of Kong's `regex_testcases`.
const EVIL: &str = "http://evil.test";
const FOO: &str = "http://foo.test";
const FOO_EVIL: &str = "http://foo.test.evil.test";
const SUB_FOO: &str = "http://something.foo.test";
const EVILFOO: &str = "http://evilfoo.test";
const FOO_80: &str = "http://foo.test:80";
const FOO_8000: &str = "http://foo.test:8000";
const FOO_8000_TLS: &str = "https://foo.test:8000";
const FOO_90: &str = "http://foo.test:90";
const FOOBTEST: &str = "http://foobtest";
const BAR_1234: &str = "https://bar.test:1234";

fn check(origins: &[&str], cases: &[(&str, Expect)]) {
    let allowed = allowed(origins);
    for (origin, expect) in cases {
        let answer = allowed.answer(Some(origin));
        let want = match expect {
            Reflected => OriginAnswer::Origin(Cow::Borrowed(*origin)),
            Sent(value) => OriginAnswer::Origin(Cow::Borrowed(*value)),
            Refused => OriginAnswer::Nobody,
        };
        assert_eq!(answer, want, "origins {origins:?}, Origin {origin}");
    }
}

#[test]
fn one_plain_entry_is_sent_as_written_whatever_the_origin() {
    for only in ["foo.test", "https://bar.test:1234"] {
        let cases: Vec<_> = [
            EVIL,
            FOO,
            FOO_EVIL,
            SUB_FOO,
            EVILFOO,
            FOO_80,
            FOO_8000,
            FOO_8000_TLS,
            FOO_90,
            FOOBTEST,
            BAR_1234,
        ]
        .into_iter()
        .map(|origin| (origin, Sent(only)))
        .collect();
        check(&[only], &cases);
    }
}

#[test]
fn a_regex_without_colon_matches_the_whole_host() {
    let cases = [
        (EVIL, Refused),
        (FOO, Reflected),
        (FOO_EVIL, Refused),
        (SUB_FOO, Refused),
        (EVILFOO, Refused),
        (FOO_80, Sent("http://foo.test")),
        (FOO_8000, Reflected),
        (FOO_8000_TLS, Reflected),
        (FOO_90, Reflected),
        (FOOBTEST, Refused),
        (BAR_1234, Refused),
    ];
    check(&["foo\\.test"], &cases);
}

#[test]
fn a_subdomain_regex_without_colon_matches_the_whole_host() {
    let cases = [
        (EVIL, Refused),
        (FOO, Reflected),
        (FOO_EVIL, Refused),
        (SUB_FOO, Reflected),
        (EVILFOO, Refused),
        (FOO_80, Sent("http://foo.test")),
        (FOO_8000, Reflected),
        (FOO_8000_TLS, Reflected),
        (FOO_90, Reflected),
        (FOOBTEST, Refused),
        (BAR_1234, Refused),
    ];
    check(&["(.*[./])?foo\\.test"], &cases);
    // The same with a plain entry beside it (Kong's multiple-entry cases).
    check(&["bar.test", "(.*\\.)?foo\\.test"], &cases);
}

#[test]
fn a_regex_with_colon_matches_scheme_host_and_port() {
    let cases = [
        (EVIL, Refused),
        (FOO, Refused),
        (FOO_EVIL, Refused),
        (SUB_FOO, Refused),
        (EVILFOO, Refused),
        (FOO_80, Refused),
        (FOO_8000, Reflected),
        (FOO_8000_TLS, Reflected),
        (FOO_90, Refused),
        (FOOBTEST, Refused),
        (BAR_1234, Refused),
    ];
    check(&["(.*[./])?foo\\.test:8000"], &cases);
    check(&["bar.test", "(.*[./])?foo\\.test:8000"], &cases);
}

#[test]
fn an_https_regex_with_port_refuses_http() {
    let cases = [
        (EVIL, Refused),
        (FOO, Refused),
        (FOO_EVIL, Refused),
        (SUB_FOO, Refused),
        (FOO_80, Refused),
        (FOO_8000, Refused),
        (FOO_8000_TLS, Reflected),
        (FOO_90, Refused),
        (FOOBTEST, Refused),
        (BAR_1234, Refused),
    ];
    check(&["https://(.*[.])?foo\\.test:8000"], &cases);
    check(&["bar.test", "https://(.*\\.)?foo\\.test:8000"], &cases);
}

#[test]
fn an_explicitly_anchored_regex_works_as_written() {
    let cases = [
        (EVIL, Refused),
        (FOO, Reflected),
        (FOO_EVIL, Refused),
        (SUB_FOO, Reflected),
        (FOO_80, Sent("http://foo.test")),
        (FOO_8000, Refused),
        (FOO_8000_TLS, Refused),
        (FOO_90, Reflected),
        (FOOBTEST, Refused),
        (BAR_1234, Refused),
    ];
    check(&["^http://(.*[.])?foo\\.test(:(80|90))?$"], &cases);
}

#[test]
fn several_plain_entries_compare_whole_normalized_origins() {
    let all_refused: Vec<_> = [
        EVIL, FOO, FOO_EVIL, FOO_80, FOO_8000, FOO_90, FOOBTEST, BAR_1234,
    ]
    .into_iter()
    .map(|o| (o, Refused))
    .collect();
    check(&["foo.test", "bar.test"], &all_refused);

    let cases = [
        (EVIL, Refused),
        (FOO, Reflected),
        (FOO_EVIL, Refused),
        (FOO_80, Sent("http://foo.test")),
        (FOO_8000, Refused),
        (FOO_90, Refused),
        (FOOBTEST, Refused),
        (BAR_1234, Reflected),
    ];
    check(&["http://foo.test", "https://bar.test:1234"], &cases);
}

#[test]
fn kongs_validates_scheme_and_port_case() {
    let cases = [
        ("http://my-site.test", Reflected),
        ("http://my-site.test:80", Sent("http://my-site.test")),
        ("http://my-site.test:8000", Refused),
        ("https://my-site.test", Refused),
        ("https://my-other-site.test:9000", Reflected),
        ("https://my-other-site.test:9001", Refused),
        ("http://my-site.test.bad-guys.test", Refused),
    ];
    check(
        &["http://my-site.test", "https://my-other-site.test:9000"],
        &cases,
    );
}

#[test]
fn kongs_origin_host_cases_without_a_scheme() {
    // cors6: plain entries without a scheme equal an Origin written the same way only.
    let cases = [
        ("example.test", Reflected),
        ("http://example.test", Refused),
        ("https://example.test", Refused),
        ("http://www.example.net", Refused),
    ];
    check(&["example.test", "example.org"], &cases);
    // cors9: a regex on the host.
    let cases = [
        ("example.test", Reflected),
        ("www.example.test", Reflected),
        ("example-foo.test", Reflected),
        ("www.example-foo.test", Reflected),
        ("www.example-fo0.test", Refused),
    ];
    check(&[r".*\.?example(?:-foo)?.test"], &cases);
}

#[test]
fn every_origin_is_star_without_vary() {
    for origins in [&[][..], &["*"][..]] {
        let allowed = allowed(origins);
        assert_eq!(allowed, AllowedOrigins::Every);
        assert_eq!(
            allowed.answer(Some("http://x.test")),
            OriginAnswer::Every { vary: false }
        );
        assert_eq!(allowed.answer(None), OriginAnswer::Every { vary: false });
    }
}

#[test]
fn star_among_other_entries_is_star_with_vary_when_an_origin_is_sent() {
    let allowed = allowed(&["foo.bar", "*"]);
    assert_eq!(
        allowed.answer(Some("http://www.example.net")),
        OriginAnswer::Every { vary: true }
    );
    assert_eq!(allowed.answer(None), OriginAnswer::Nobody);
}

#[test]
fn methods_default_to_kongs_list() {
    let cors = compile(&spec(&[])).unwrap();
    assert_eq!(
        cors.methods,
        "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"
    );
    assert_eq!(cors.headers, None);
    assert_eq!(cors.exposed_headers, None);
    assert!(cors.allow_origin_absent);
    assert!(!cors.credentials && !cors.preflight_continue && !cors.private_network);
}

// === stricter than Kong, on purpose ===

#[test]
fn an_alternation_is_anchored_in_every_branch() {
    // Kong appends `$` and anchors the start: its first branch matches
    // `foo.test.evil.test`, as a host any attacker can register.
    check(
        &["foo\\.test|bar\\.test"],
        &[
            ("http://foo.test", Reflected),
            ("http://bar.test", Reflected),
            ("http://foo.test.evil.test", Refused),
            ("http://evil.bar.test", Refused),
        ],
    );
}

#[test]
fn an_origin_no_browser_sends_is_never_matched() {
    let allowed = allowed(&["(.*\\.)?example\\.com", "https://app.example.com"]);
    for origin in [
        "http://evil.test#.example.com",
        "http://evil.test/.example.com",
        "http://app.example.com@evil.test",
        "https://app.example.com:443x",
        "http://:80",
        "https://app.example.com/",
    ] {
        assert_eq!(
            allowed.answer(Some(origin)),
            OriginAnswer::Nobody,
            "{origin}"
        );
    }
}

#[test]
fn ipv6_origins_keep_their_brackets_and_lose_a_default_port() {
    // `[` is a regex character to Kong as here: the brackets are escaped.
    let allowed = allowed(&[r"http://\[::1\]:8080", r"https://\[::1\]"]);
    assert_eq!(
        allowed.answer(Some("http://[::1]:8080")),
        OriginAnswer::Origin(Cow::Borrowed("http://[::1]:8080"))
    );
    assert_eq!(
        allowed.answer(Some("https://[::1]:443")),
        OriginAnswer::Origin(Cow::Borrowed("https://[::1]"))
    );
    assert_eq!(allowed.answer(Some("http://[::1]")), OriginAnswer::Nobody);
}

#[test]
fn a_plain_entry_copied_with_a_trailing_slash_still_matches() {
    check(
        &["https://app.example.com/", "https://other.example.com"],
        &[("https://app.example.com", Reflected)],
    );
}

// === refusals ===

#[test]
fn a_bad_regex_is_refused_naming_the_entry() {
    let error = compile(&spec(&["https://app.example.com", "*.example.com"])).unwrap_err();
    assert!(
        error.starts_with("cors.origins[1] `*.example.com` is not a regular expression"),
        "{error}"
    );
    assert!(error.contains("(.*\\.)?example\\.com"), "{error}");
    // Checked even beside `*`, which would make it unused.
    assert!(compile(&spec(&["*", "(unclosed"])).is_err());
    // Kong's PCRE look-arounds are not supported: said, not silently different.
    let error = compile(&spec(&["a.test", "(?!evil).*\\.test"])).unwrap_err();
    assert!(error.starts_with("cors.origins[1]"), "{error}");
}

#[test]
fn an_empty_origin_or_a_header_that_is_no_name_is_refused() {
    assert!(
        compile(&spec(&["a.test", ""]))
            .unwrap_err()
            .starts_with("cors.origins[1] is empty")
    );
    let bad: CorsSpec =
        serde_json::from_value(serde_json::json!({ "headers": ["X-Ok", "Bad\r\nSet-Cookie: a"] }))
            .unwrap();
    assert!(
        compile(&bad)
            .unwrap_err()
            .starts_with("cors.headers[1] `Bad\\r\\nSet-Cookie: a` is not a header name")
    );
    let bad: CorsSpec =
        serde_json::from_value(serde_json::json!({ "exposedHeaders": ["a,b"] })).unwrap();
    assert!(
        compile(&bad)
            .unwrap_err()
            .starts_with("cors.exposedHeaders[0]")
    );
}

#[test]
fn a_snapshot_with_a_regex_round_trips_and_a_bad_one_is_refused_on_reading() {
    let cors = compile(&spec(&["a.test", "(.*\\.)?b\\.test"])).unwrap();
    let json = serde_json::to_value(&cors).unwrap();
    let back: Cors = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, cors);
    assert!(back.origins.answer(Some("http://x.b.test")) != OriginAnswer::Nobody);
    let mut bad = json;
    bad["origins"]["entries"][1]["regex"] = "(".into();
    assert!(serde_json::from_value::<Cors>(bad).is_err());
}

// === Kong's 02-schema_spec.lua, and the resource's refusal ===

#[test]
fn kongs_schema_cases() {
    for valid in ["*", "example.com", r".*\.example(?:-foo)?\.com"] {
        assert!(compile(&spec(&[valid])).is_ok(), "{valid}");
    }
    // Kong's invalid entry is `invalid_**regex`, which PCRE refuses but `regex-lite` reads as
    // `invalid_*regex`; an unclosed bracket is refused by both.
    let error = compile(&spec(&[r".*.example.com", "invalid_[regex"])).unwrap_err();
    assert!(
        error.starts_with("cors.origins[1] `invalid_[regex` is not a regular expression"),
        "{error}"
    );
    let fake: Result<CorsSpec, _> =
        serde_json::from_value(serde_json::json!({"methods": ["FAKE"]}));
    assert!(
        fake.unwrap_err()
            .to_string()
            .contains("unknown variant `FAKE`")
    );
}

#[test]
fn a_service_with_a_bad_origin_regex_is_left_out_with_its_reason() {
    use crate::compile::Reason;
    use crate::manifests::Resources;
    use crate::testing::resources::{secret, service};

    let mut bad = service("default", "sampleirisservice", &["/event"]);
    bad.spec.cors = Some(spec(&["(unclosed"]));
    let mut good = service("default", "other", &["/other"]);
    good.spec.cors = Some(spec(&["https://app.example.com", r"(.*\.)?example\.com"]));
    let resources = Resources {
        services: vec![bad, good],
        secrets: vec![
            secret(
                "default",
                "sampleirisservice-provision-key",
                "provisionKey",
                "pk",
            ),
            secret("default", "other-provision-key", "provisionKey", "pk"),
        ],
        ..Default::default()
    };
    let compiled = crate::compile(&resources);
    let [error] = &compiled.errors[..] else {
        panic!("{:?}", compiled.errors);
    };
    assert_eq!(error.reason, Reason::Invalid);
    assert_eq!(error.name, "sampleirisservice");
    assert!(
        error
            .message
            .starts_with("cors.origins[0] `(unclosed` is not a regular expression"),
        "{}",
        error.message
    );
    let [served] = &compiled.snapshot.services[..] else {
        panic!("{:?}", compiled.snapshot.services);
    };
    let cors = served.cors.as_ref().expect("the cors block compiled");
    assert!(matches!(cors.origins, AllowedOrigins::Listed { .. }));
}
