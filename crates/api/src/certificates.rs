//! How an injected sidecar gets its serving certificate from the controller, as plain data.
//!
//! The sidecar makes a key pair that never leaves its process and sends
//! `POST /v1/certificates/{namespace}/{pod}` on the snapshot stream's listener, with its
//! pod's service-account token (the stream's authentication) and a PKCS#10 certificate
//! signing request (DER) as the body. The controller answers an [`IssuedCertificate`]: a
//! certificate signed by its CA for names *it* chose from the pod (its IP, `localhost` and the
//! pod's `tollgate.dev/tls-dns-names` annotation). The request only proves that the sidecar
//! holds the key: whatever names or extensions it asks for are ignored.

use serde::{Deserialize, Serialize};

/// Prefix of the path: `/v1/certificates/{namespace}/{pod}`.
pub const CERTIFICATES_PATH: &str = "/v1/certificates";
/// Content type of the request body: a DER PKCS#10 request (RFC 5967).
pub const CSR_CONTENT_TYPE: &str = "application/pkcs10";
/// Content type of the answer.
pub const ISSUED_CONTENT_TYPE: &str = "application/json";
/// A certificate request for one key and no extension is a few hundred bytes.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// The controller's answer to a certificate request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificate {
    /// PEM: the pod's certificate, then the CA certificate that signed it.
    pub certificate_chain: String,
    /// Unix seconds: the certificate's `notBefore`.
    pub not_before: u64,
    /// Unix seconds: the certificate's `notAfter`.
    pub not_after: u64,
}

/// `/v1/certificates/{namespace}/{pod}`.
pub fn certificates_path(namespace: &str, pod: &str) -> String {
    format!("{CERTIFICATES_PATH}/{namespace}/{pod}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_camel_case_json() {
        let issued = IssuedCertificate {
            certificate_chain: "PEM".into(),
            not_before: 1,
            not_after: 2,
        };
        let json = serde_json::to_value(&issued).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"certificateChain": "PEM", "notBefore": 1, "notAfter": 2})
        );
        assert_eq!(certificates_path("ns", "p"), "/v1/certificates/ns/p");
    }
}
