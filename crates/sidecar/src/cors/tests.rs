//! Kong's cors spec (spec/03-plugins/13-cors/01-access_spec.lua), its header cases ported:
//! each test names Kong's. The origin matching itself is ported in tollgate-api's tests.

use super::*;
use tollgate_api::cors::{CorsSpec, compile};

const DEFAULT_METHODS: &str = "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT";

fn cors(config: serde_json::Value) -> Cors {
    let spec: CorsSpec = serde_json::from_value(config).unwrap();
    compile(&spec).unwrap()
}

/// Kong's `cors2.test`.
fn cors2() -> Cors {
    cors(serde_json::json!({
        "origins": ["example.test"],
        "methods": ["GET"],
        "headers": ["origin", "type", "accepts"],
        "exposedHeaders": ["x-auth-token"],
        "maxAge": 23,
        "credentials": true,
    }))
}

fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder().method(method).uri("/");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

fn preflight_to(cors: &Cors, origin: &str, more: &[(&str, &str)]) -> Response<Full<Bytes>> {
    let mut headers = vec![("origin", origin), ("access-control-request-method", "GET")];
    headers.extend_from_slice(more);
    match Step::of(Some(cors), &request(Method::OPTIONS, &headers)) {
        Step::Answer(response) => response,
        Step::Continue(_) => panic!("a preflight went on"),
    }
}

/// The headers an actual response with `upstream`'s headers leaves with.
fn actual(cors: &Cors, request_headers: &[(&str, &str)], upstream: &[(&str, &str)]) -> HeaderMap {
    let Step::Continue(added) = Step::of(Some(cors), &request(Method::GET, request_headers)) else {
        panic!("a GET was answered as a preflight");
    };
    let mut response = Response::new(());
    for (name, value) in upstream {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    add(response, added).headers().clone()
}

fn get<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

// === HTTP method: OPTIONS ===

#[test]
fn gives_appropriate_defaults() {
    for config in [serde_json::json!({}), serde_json::json!({"origins": []})] {
        let response = preflight_to(&cors(config), "origin1.test", &[]);
        assert_eq!(response.status(), 200);
        let h = response.headers();
        assert_eq!(get(h, "content-length"), Some("0"));
        assert_eq!(
            get(h, "access-control-allow-methods"),
            Some(DEFAULT_METHODS)
        );
        assert_eq!(get(h, "access-control-allow-origin"), Some("*"));
        for absent in [
            "access-control-allow-headers",
            "access-control-expose-headers",
            "access-control-allow-credentials",
            "access-control-max-age",
            "vary",
        ] {
            assert_eq!(get(h, absent), None, "{absent}");
        }
    }
}

#[test]
fn star_with_credentials_reflects_the_origin_as_kong_does() {
    let config = cors(serde_json::json!({"origins": ["*"], "credentials": true}));
    let response = preflight_to(&config, "origin5.test", &[]);
    let h = response.headers();
    assert_eq!(get(h, "access-control-allow-origin"), Some("origin5.test"));
    assert_eq!(get(h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(get(h, "vary"), Some("Origin"));
    // Kong's `responds with the requested Origin (including port) when config.credentials=true`.
    let h = actual(&config, &[("origin", "http://www.example.net:3000")], &[]);
    assert_eq!(
        get(&h, "access-control-allow-origin"),
        Some("http://www.example.net:3000")
    );
    assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(get(&h, "vary"), Some("Origin"));
}

#[test]
fn gives_star_when_origins_list_star_among_others() {
    let config = cors(serde_json::json!({"origins": ["foo.bar", "*"]}));
    let response = preflight_to(&config, "http://www.example.net", &[]);
    assert_eq!(
        get(response.headers(), "access-control-allow-origin"),
        Some("*")
    );
    assert_eq!(
        get(response.headers(), "access-control-allow-credentials"),
        None
    );
    let h = actual(&config, &[("origin", "http://www.example.net")], &[]);
    assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
}

#[test]
fn accepts_config_options() {
    let response = preflight_to(&cors2(), "origin5.test", &[]);
    let h = response.headers();
    assert_eq!(get(h, "content-length"), Some("0"));
    assert_eq!(get(h, "access-control-allow-methods"), Some("GET"));
    assert_eq!(get(h, "access-control-allow-origin"), Some("example.test"));
    assert_eq!(get(h, "access-control-max-age"), Some("23"));
    assert_eq!(get(h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        get(h, "access-control-allow-headers"),
        Some("origin,type,accepts")
    );
    assert_eq!(get(h, "vary"), Some("Origin"));
    assert_eq!(get(h, "access-control-expose-headers"), None);
}

#[test]
fn preflight_continue_leaves_the_preflight_to_what_comes_next() {
    let mut config = cors2();
    config.preflight_continue = true;
    let preflight = request(
        Method::OPTIONS,
        &[
            ("origin", "example.test"),
            ("access-control-request-method", "GET"),
        ],
    );
    assert!(matches!(
        Step::of(Some(&config), &preflight),
        Step::Continue(None)
    ));
}

#[test]
fn replies_with_request_headers_if_present_in_request() {
    let config = cors(serde_json::json!({"origins": ["*"], "credentials": true}));
    let response = preflight_to(
        &config,
        "origin5.test",
        &[("access-control-request-headers", "origin,accepts")],
    );
    assert_eq!(
        get(response.headers(), "access-control-allow-headers"),
        Some("origin,accepts")
    );
}

#[test]
fn supports_private_network() {
    let config =
        cors(serde_json::json!({"origins": ["allowed-domain.test"], "privateNetwork": true}));
    let asked = [("access-control-request-private-network", "true")];
    let response = preflight_to(&config, "allowed-domain.test", &asked);
    assert_eq!(
        get(response.headers(), "access-control-allow-private-network"),
        Some("true")
    );
    let response = preflight_to(&config, "allowed-domain.test", &[]);
    assert_eq!(
        get(response.headers(), "access-control-allow-private-network"),
        None
    );
    let off = cors(serde_json::json!({"origins": ["allowed-domain.test"]}));
    let response = preflight_to(&off, "allowed-domain.test", &asked);
    assert_eq!(
        get(response.headers(), "access-control-allow-private-network"),
        None
    );
}

#[test]
fn options_without_origin_or_request_method_is_no_preflight() {
    let config = cors(serde_json::json!({}));
    for headers in [
        &[][..],
        &[("origin", "http://my-site.test")][..],
        &[("access-control-request-method", "GET")][..],
        &[("origin", ""), ("access-control-request-method", "GET")][..],
    ] {
        let step = Step::of(Some(&config), &request(Method::OPTIONS, headers));
        assert!(matches!(step, Step::Continue(Some(_))), "{headers:?}");
    }
}

// === HTTP method: others ===

#[test]
fn others_give_appropriate_defaults() {
    let h = actual(&cors(serde_json::json!({})), &[], &[]);
    assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
    for absent in [
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-allow-credentials",
        "access-control-max-age",
        "vary",
    ] {
        assert_eq!(get(&h, absent), None, "{absent}");
    }
}

#[test]
fn others_accept_config_options() {
    let h = actual(&cors2(), &[], &[]);
    assert_eq!(get(&h, "access-control-allow-origin"), Some("example.test"));
    assert_eq!(
        get(&h, "access-control-expose-headers"),
        Some("x-auth-token")
    );
    assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(get(&h, "vary"), Some("Origin"));
    assert_eq!(get(&h, "access-control-allow-methods"), None);
    assert_eq!(get(&h, "access-control-max-age"), None);
}

#[test]
fn sets_vary_and_keeps_the_applications_vary() {
    let config = cors(serde_json::json!({"origins": ["example.test"]}));
    let h = actual(
        &config,
        &[("origin", "example.test")],
        &[("vary", "Accept-Encoding")],
    );
    let vary: Vec<_> = h
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);
}

#[test]
fn removes_the_applications_allow_origin_when_no_origin_matches() {
    let config = cors(serde_json::json!({
        "origins": ["a.xxx.test", "allowed-domain.test"],
        "credentials": true,
    }));
    let upstream = [
        ("access-control-allow-origin", "*"),
        ("response-header", "is-added"),
    ];
    let h = actual(&config, &[("origin", "allowed-domain.test")], &upstream);
    assert_eq!(
        get(&h, "access-control-allow-origin"),
        Some("allowed-domain.test")
    );
    assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(get(&h, "vary"), Some("Origin"));
    assert_eq!(get(&h, "response-header"), Some("is-added"));
    let h = actual(&config, &[("origin", "disallowed-domain.test")], &upstream);
    assert_eq!(get(&h, "access-control-allow-origin"), None);
    assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
    // And on a preflight, no header at all for an origin not listed.
    let response = preflight_to(&config, "http://bad-guys.test", &[]);
    assert_eq!(get(response.headers(), "access-control-allow-origin"), None);
}

#[test]
fn star_without_credentials_is_star_without_vary() {
    let config = cors(serde_json::json!({"origins": ["*"], "credentials": false}));
    let h = actual(&config, &[("origin", "http://www.example.net")], &[]);
    assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
    assert_eq!(get(&h, "access-control-allow-credentials"), None);
    assert_eq!(get(&h, "vary"), None);
}

#[test]
fn allow_origin_absent_decides_for_requests_without_origin() {
    for origin in [&[][..], &[("origin", "")][..]] {
        let off = cors(serde_json::json!({
            "allowOriginAbsent": false, "origins": ["foo.bar"],
            "exposedHeaders": ["x-auth-token"], "credentials": true,
        }));
        let h = actual(&off, origin, &[]);
        assert_eq!(get(&h, "access-control-allow-origin"), None);
        assert_eq!(get(&h, "access-control-allow-credentials"), None);
        assert_eq!(get(&h, "access-control-expose-headers"), None);

        let on = cors(serde_json::json!({
            "allowOriginAbsent": true, "origins": ["foo.bar"],
            "exposedHeaders": ["x-auth-token"], "credentials": true,
        }));
        let h = actual(&on, origin, &[]);
        assert_eq!(get(&h, "access-control-allow-origin"), Some("foo.bar"));
        assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            get(&h, "access-control-expose-headers"),
            Some("x-auth-token")
        );
    }
}

#[test]
fn no_cors_block_adds_nothing_and_answers_no_preflight() {
    let preflight = request(
        Method::OPTIONS,
        &[
            ("origin", "http://a.test"),
            ("access-control-request-method", "POST"),
        ],
    );
    assert!(matches!(Step::of(None, &preflight), Step::Continue(None)));
}
