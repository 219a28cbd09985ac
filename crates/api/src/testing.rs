//! Fixtures for tests, behind the `testing` feature: the resources and snapshot types built
//! from their defaults, so that a test names only the fields it is about, and a new field
//! touches only the code that uses it.
//!
//! Resources are read from minimal JSON, so they get exactly the defaults of the CRD (and of
//! a manifest file). Snapshot types have no defaults of their own: [`snapshot`] gives each the
//! values the compiler would give the article's objects. Change a field with struct update
//! syntax: `Service { routes: vec![], ..snapshot::service("default", "svc", "/event") }`.
//!
//! The secrets are the article's (`provisionkey`, `clientsecret`), hashed with
//! [`DIGEST_ITERATIONS`] so that verifying them costs nothing.

pub mod resources;
pub mod snapshot;

/// The provision key of every fixture service.
pub const PROVISION_KEY: &str = "provisionkey";
/// The client secret of every confidential fixture application.
pub const CLIENT_SECRET: &str = "clientsecret";
/// PBKDF2 iterations of the fixtures' secret digests: few, to keep tests fast.
pub const DIGEST_ITERATIONS: u32 = 10;
/// The one redirect URI of every fixture application.
pub const REDIRECT_URI: &str = "https://localhost/callback";
