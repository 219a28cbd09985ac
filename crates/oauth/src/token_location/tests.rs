//! Kong's token-location rule and `hideCredentials`, as functions.

use super::*;

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn bearer_and_token_schemes_in_any_case() {
    assert_eq!(in_header("Bearer abc"), "abc");
    assert_eq!(in_header("bearer abc"), "abc");
    assert_eq!(in_header("TOKEN abc"), "abc");
    assert_eq!(in_header("  Bearer   abc  "), "abc");
    assert_eq!(in_header("Bearer\tabc"), "abc");
}

#[test]
fn anything_else_is_the_whole_value() {
    assert_eq!(in_header("abc"), "abc");
    assert_eq!(in_header("Basic abc"), "Basic abc");
    assert_eq!(in_header("Bearer a b"), "Bearer a b");
    // Only ASCII whitespace separates words, as in Kong's Lua patterns.
    assert_eq!(in_header("Bearer\u{a0}abc"), "Bearer\u{a0}abc");
}

/// The token of a request without the auth header whose body was read.
async fn from_params(query: Option<&str>, content_type: &str, body: &str) -> Option<String> {
    let params = body_parameters(query, Some(content_type), Bytes::from(body.to_owned())).await;
    locate(None, query, Some(&params))
        .token
        .map(Cow::into_owned)
}

#[tokio::test]
async fn access_token_in_a_json_form_or_multipart_body() {
    // 03-access_spec.lua:3189.
    let json = "application/json";
    assert_eq!(
        from_params(None, json, r#"{"access_token":"t"}"#)
            .await
            .as_deref(),
        Some("t")
    );
    // The body wins, even with a value that is no token at all.
    assert_eq!(
        from_params(Some("access_token=q"), json, r#"{"access_token":1}"#).await,
        None
    );
    assert_eq!(
        from_params(Some("access_token=q"), json, "{not json")
            .await
            .as_deref(),
        Some("q")
    );
    let multipart = "multipart/form-data; boundary=b";
    let body = "--b\r\nContent-Disposition: form-data; name=\"access_token\"\r\n\r\nm\r\n--b--\r\n";
    assert_eq!(
        from_params(None, multipart, body).await.as_deref(),
        Some("m")
    );
    assert_eq!(
        from_params(Some("a=1"), FORM, "access_token=f")
            .await
            .as_deref(),
        Some("f")
    );
    assert_eq!(
        from_params(None, FORM, "access_token=a&access_token=b").await,
        None
    );
}

#[test]
fn the_header_wins_and_only_then_the_query_string_is_read() {
    let located = locate(Some("Bearer h"), Some("access_token=q"), None);
    assert_eq!(located.token.as_deref(), Some("h"));
    assert_eq!(located.found_in, FoundIn::Header);
    // A token borrowed from the header: nothing is allocated for it.
    assert!(matches!(located.token, Some(Cow::Borrowed(_))));

    let located = locate(None, Some("a=1&access_token=q"), None);
    assert_eq!(located.token.as_deref(), Some("q"));
    assert_eq!(located.found_in, FoundIn::Parameters);

    let nowhere = locate(None, Some("access_token=a&access_token=b"), None);
    assert_eq!(nowhere.token, None);
    assert_eq!(nowhere.found_in, FoundIn::Nowhere);
    assert_eq!(locate(None, None, None).found_in, FoundIn::Nowhere);
}

#[test]
fn an_empty_header_is_a_token_found_in_the_header() {
    // The bearer check answers it as a missing token; `hideCredentials` still drops it.
    let located = locate(Some(""), Some("access_token=q"), None);
    assert_eq!(located.token.as_deref(), Some(""));
    assert_eq!(located.found_in, FoundIn::Header);
}

#[test]
fn only_a_json_form_or_multipart_body_of_post_put_or_patch_is_read() {
    for method in [Method::POST, Method::PUT, Method::PATCH] {
        assert_eq!(body_to_read(&method, Some(FORM)), Some(BodyKind::Form));
        assert_eq!(
            body_to_read(&method, Some("application/json; charset=utf-8")),
            Some(BodyKind::Json)
        );
        assert_eq!(
            body_to_read(&method, Some("multipart/form-data; boundary=b")),
            Some(BodyKind::Multipart)
        );
        assert_eq!(body_to_read(&method, Some("text/plain")), None);
        assert_eq!(body_to_read(&method, None), None);
    }
    for method in [Method::GET, Method::DELETE, Method::HEAD, Method::OPTIONS] {
        assert_eq!(body_to_read(&method, Some(FORM)), None);
    }
}

#[test]
fn strips_access_token_from_query_only() {
    let uri: Uri = "/event/1?a=1&access_token=xyz&b=%20x".parse().unwrap();
    assert_eq!(without_query_token(&uri).unwrap(), "/event/1?a=1&b=%20x");
    let uri: Uri = "/event/1?access_token=xyz".parse().unwrap();
    assert_eq!(without_query_token(&uri).unwrap(), "/event/1");
    let uri: Uri = "/event/1?access%5Ftoken=xyz&c".parse().unwrap();
    assert_eq!(without_query_token(&uri).unwrap(), "/event/1?c");
}

#[test]
fn strips_access_token_from_form() {
    assert_eq!(
        without_form_token(&Bytes::from_static(b"a=1&access_token=xyz&b=2")).as_ref(),
        b"a=1&b=2"
    );
    // A field that is not UTF-8 reaches the application byte for byte.
    assert_eq!(
        without_form_token(&Bytes::from_static(b"name=Jos\xe9&access_token=xyz")).as_ref(),
        b"name=Jos\xe9"
    );
    let untouched = Bytes::from_static(b"a=1&&b");
    assert_eq!(without_form_token(&untouched), untouched);
}

#[test]
fn hiding_a_header_token_leaves_the_query_and_body_alone() {
    let uri: Uri = "/event/1?access_token=q".parse().unwrap();
    let form = Bytes::from_static(b"access_token=f");
    assert_eq!(
        hide(FoundIn::Header, &uri, Some(&form)),
        Hidden {
            remove_auth_header: true,
            uri: None,
            form_body: None,
        }
    );
}

#[test]
fn hiding_a_parameter_token_cleans_the_query_and_a_form_body() {
    let uri: Uri = "https://iamhost/event/1?a=1&access_token=q"
        .parse()
        .unwrap();
    let form = Bytes::from_static(b"name=x&access_token=f");
    let hidden = hide(FoundIn::Parameters, &uri, Some(&form));
    assert!(!hidden.remove_auth_header);
    assert_eq!(hidden.uri.unwrap(), "https://iamhost/event/1?a=1");
    assert_eq!(hidden.form_body.unwrap().as_ref(), b"name=x");

    // No token anywhere (an anonymous request): the same places are cleaned, and a form body
    // read is forwarded as read.
    let uri: Uri = "/event/1?a=1".parse().unwrap();
    let form = Bytes::from_static(b"name=x");
    let hidden = hide(FoundIn::Nowhere, &uri, Some(&form));
    assert_eq!(hidden.uri, None);
    assert_eq!(hidden.form_body, Some(form));
    assert_eq!(hide(FoundIn::Nowhere, &uri, None).form_body, None);
}
