//! Request-header authentication over certificates made here: only a certificate of the
//! request-header CA with an allowed name turns the `X-Remote-*` headers into an identity.

use std::collections::BTreeMap;

use http::HeaderMap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::*;

/// A CA: its PEM, and what signs with it.
pub(crate) fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A client certificate with common name `cn`, signed by `issuer`.
pub(crate) fn client(cn: &str, issuer: &Issuer<'static, KeyPair>) -> Vec<CertificateDer<'static>> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    vec![params.signed_by(&key, issuer).unwrap().der().clone()]
}

pub(crate) fn config_map(ca_pem: &str, allowed: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("requestheader-client-ca-file".to_owned(), ca_pem.to_owned()),
        ("requestheader-allowed-names".to_owned(), allowed.to_owned()),
        (
            "requestheader-username-headers".to_owned(),
            r#"["X-Remote-User"]"#.to_owned(),
        ),
        (
            "requestheader-group-headers".to_owned(),
            r#"["X-Remote-Group"]"#.to_owned(),
        ),
        (
            "requestheader-extra-headers-prefix".to_owned(),
            r#"["X-Remote-Extra-"]"#.to_owned(),
        ),
        // What an API server also publishes; not read.
        ("client-ca-file".to_owned(), "ignored".to_owned()),
    ])
}

fn proxied() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-remote-user", "alice".parse().unwrap());
    headers.append("x-remote-group", "ops".parse().unwrap());
    headers.append("x-remote-group", "system:authenticated".parse().unwrap());
    headers.insert(
        "x-remote-extra-authentication.kubernetes.io%2fpod-name",
        "iris-0".parse().unwrap(),
    );
    headers
}

fn settings(ca_pem: &str, allowed: &str) -> RequestHeaderConfig {
    RequestHeaderConfig::from_config_map(&config_map(ca_pem, allowed))
        .unwrap()
        .unwrap()
}

#[test]
fn the_front_proxy_s_certificate_makes_the_headers_the_identity() {
    let (pem, issuer) = ca("front-proxy-ca");
    let config = settings(&pem, r#"["front-proxy-client"]"#);
    let chain = client("front-proxy-client", &issuer);
    let who = config
        .authenticate(Some(&chain), &proxied(), UnixTime::now())
        .unwrap()
        .unwrap();
    assert_eq!(who.username, "alice");
    assert_eq!(who.groups, ["ops", "system:authenticated"]);
    assert_eq!(
        who.extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["iris-0".to_owned()])
    );
    // An empty list of allowed names allows any name the CA signed.
    let any = settings(&pem, "[]");
    let other = client("someone-else", &issuer);
    assert!(
        any.authenticate(Some(&other), &proxied(), UnixTime::now())
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_certificate_of_another_ca_is_refused() {
    let (pem, _) = ca("front-proxy-ca");
    let (_, stranger) = ca("front-proxy-ca");
    let config = settings(&pem, r#"["front-proxy-client"]"#);
    let forged = client("front-proxy-client", &stranger);
    assert_eq!(
        config.authenticate(Some(&forged), &proxied(), UnixTime::now()),
        Err(Refusal::UntrustedCertificate)
    );
}

#[test]
fn a_name_not_allowed_is_refused() {
    let (pem, issuer) = ca("front-proxy-ca");
    let config = settings(&pem, r#"["front-proxy-client"]"#);
    // Signed by the right CA (say, a kubelet's or a user's client certificate), wrong name.
    let chain = client("system:node:worker-1", &issuer);
    assert_eq!(
        config.authenticate(Some(&chain), &proxied(), UnixTime::now()),
        Err(Refusal::NameNotAllowed("system:node:worker-1".into()))
    );
}

#[test]
fn headers_without_a_certificate_are_ignored() {
    let (pem, issuer) = ca("front-proxy-ca");
    let config = settings(&pem, r#"["front-proxy-client"]"#);
    assert_eq!(
        config.authenticate(None, &proxied(), UnixTime::now()),
        Ok(None)
    );
    assert_eq!(
        config.authenticate(Some(&[]), &proxied(), UnixTime::now()),
        Ok(None)
    );
    // The right certificate with no user named is no identity either.
    let chain = client("front-proxy-client", &issuer);
    assert_eq!(
        config.authenticate(Some(&chain), &HeaderMap::new(), UnixTime::now()),
        Err(Refusal::NoUser)
    );
}

#[test]
fn the_config_map_is_read_or_named_when_wrong() {
    assert!(
        RequestHeaderConfig::from_config_map(&BTreeMap::new())
            .unwrap()
            .is_none()
    );
    let (pem, _) = ca("front-proxy-ca");
    let mut data = config_map(&pem, "front-proxy-client");
    let error = RequestHeaderConfig::from_config_map(&data).err().unwrap();
    assert!(
        error
            .to_string()
            .starts_with("requestheader-allowed-names: not a JSON list"),
        "{error}"
    );
    data = config_map("not a certificate", "[]");
    let error = RequestHeaderConfig::from_config_map(&data).err().unwrap();
    assert!(
        error
            .to_string()
            .starts_with("requestheader-client-ca-file:"),
        "{error}"
    );
}

#[test]
fn extra_keys_are_unescaped_and_lower_cased() {
    assert_eq!(unescape_extra_key("Scopes"), "scopes");
    assert_eq!(
        unescape_extra_key("authentication.kubernetes.io%2Fpod-name"),
        "authentication.kubernetes.io/pod-name"
    );
    assert_eq!(unescape_extra_key("bad%zz"), "bad%zz");
}
