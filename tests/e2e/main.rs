//! End-to-end tests: the `tollgate` binary driven the way a user drives it, over real TLS,
//! against a real `redis-server` and a localhost upstream.

mod harness;

mod admin;
mod article;
mod check;
mod cli;
mod cluster;
mod controller;
mod cors;
mod grants;
mod kong_access_spec;
mod kong_api_spec;
mod kong_invalidations_spec;
mod kong_schema_spec;
mod kong_spec;
mod limits;
mod memory;
#[cfg(feature = "control-plane")]
mod migrate;
mod oauth_client;
mod observe;
mod path_and_headers;
mod pod_certs;
mod proxy;
mod redis_faults;
mod redis_sentinel;
mod redis_tls;
mod sealed_store;
mod secret_hashes;
mod secrets;
mod stream_deltas;
mod tls;
mod token_endpoint;
mod upstream;
mod websocket;
