//! What the sidecar and the controller both do around their listeners, written once: wait for
//! SIGINT or SIGTERM, bind a flag's address, write a file whole or not at all, and (with the
//! `token-store` feature) open the token store `--redis-url` names, with the TLS material of
//! `--redis-ca`, `--redis-client-cert` and `--redis-client-key`. The part kubert plays for
//! Linkerd's processes.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;

/// A listener's address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {addr}: cannot listen")]
pub struct BindError {
    /// The flag that named the address, `--admin-listen`, so that the message says what to fix.
    pub flag: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Resolves once the process is asked to stop: SIGINT, or SIGTERM (what Kubernetes sends).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// A listener on `addr`, which the flag `flag` gave.
pub async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { flag, addr, source })
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees half a file, and a crash mid-write leaves the previous content.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = temporary_beside(path);
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

/// Like [`write_atomically`], for a file only its owner may read (mode 0600). A temporary file
/// left there before is removed first: opening it would keep whatever mode it had.
pub fn write_atomically_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = temporary_beside(path);
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&temporary, path)
}

/// `.{name}.tmp` in `path`'s folder: hidden, so that a folder reader skips it, and on the same
/// file system, so that the rename is atomic.
fn temporary_beside(path: &Path) -> PathBuf {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{file_name}.tmp"))
}

#[cfg(feature = "token-store")]
pub use self::token_store::{RedisTlsArgs, TokenStoreError, connect_token_store};

#[cfg(feature = "token-store")]
mod token_store {
    use std::path::PathBuf;

    use tollgate_store::{
        AnyTokenStore, MemoryStore, RedisStore, RedisTls, RedisUrl, StoreError, StoreKeys,
    };

    /// The TLS flags of the Redis connections, the same for the sidecar and the controller.
    // `Debug` shows paths only: the files are read by `load`.
    #[derive(Clone, Debug, Default, clap::Args)]
    pub struct RedisTlsArgs {
        /// PEM bundle of the CA that signed Redis's certificate (and the sentinels'), trusted
        /// instead of the system's roots, for rediss:// and rediss+sentinel:// URLs. Default:
        /// the system's roots.
        #[arg(long, env = "TOLLGATE_REDIS_CA")]
        pub redis_ca: Option<PathBuf>,

        /// Client certificate (PEM, leaf first) offered to a Redis that requires one
        /// (`tls-auth-clients yes`), with --redis-client-key. Default: none.
        #[arg(long, env = "TOLLGATE_REDIS_CLIENT_CERT")]
        pub redis_client_cert: Option<PathBuf>,

        /// The private key (PEM) of --redis-client-cert.
        #[arg(long, env = "TOLLGATE_REDIS_CLIENT_KEY")]
        pub redis_client_key: Option<PathBuf>,
    }

    impl RedisTlsArgs {
        /// The files read and checked, one message per problem naming its flag and file;
        /// refused unless `url` speaks TLS, where they would silently mean nothing.
        pub fn load(&self, url: Option<&RedisUrl>) -> Result<RedisTls, Vec<String>> {
            let tls = RedisTls::load(
                self.redis_ca.as_deref(),
                self.redis_client_cert.as_deref(),
                self.redis_client_key.as_deref(),
            )?;
            if tls.is_configured() && !url.is_some_and(RedisUrl::is_tls) {
                let flag = if self.redis_ca.is_some() {
                    "--redis-ca"
                } else {
                    "--redis-client-cert"
                };
                return Err(vec![format!(
                    "{flag}: only used with a rediss:// or rediss+sentinel:// --redis-url"
                )]);
            }
            Ok(tls)
        }
    }

    /// `--redis-url` names a store that cannot be used.
    #[derive(Debug, thiserror::Error)]
    #[error("--redis-url {url}: cannot use the token store")]
    pub struct TokenStoreError {
        /// Shown with its password redacted.
        pub url: RedisUrl,
        #[source]
        pub source: StoreError,
    }

    /// The Redis store `redis_url` names, sealing with `keys`; without a URL, a store in this
    /// process's memory (which each caller warns about in its own words).
    pub async fn connect_token_store(
        redis_url: Option<&RedisUrl>,
        tls: &RedisTls,
        keys: StoreKeys,
    ) -> Result<AnyTokenStore, TokenStoreError> {
        let Some(url) = redis_url else {
            return Ok(AnyTokenStore::Memory(MemoryStore::new()));
        };
        RedisStore::connect_tls(url.expose(), tls, keys)
            .await
            .map(AnyTokenStore::Redis)
            .map_err(|source| TokenStoreError {
                url: url.clone(),
                source: with_hint(source, tls),
            })
    }

    /// The error, with the flag that likely fixes it when it is one of the TLS failures a
    /// private CA or a client-certificate requirement causes.
    fn with_hint(error: StoreError, tls: &RedisTls) -> StoreError {
        let StoreError::Unavailable(message) = error else {
            return error;
        };
        let untrusted = ["UnknownIssuer", "invalid peer certificate"];
        let refused = ["CertificateRequired", "HandshakeFailure", "BadCertificate"];
        let hint = if untrusted.iter().any(|m| message.contains(m)) {
            Some(
                "Redis's certificate is not signed by a trusted CA: give the CA that signed it with --redis-ca",
            )
        } else if refused.iter().any(|m| message.contains(m)) && !tls.has_client_certificate() {
            Some(
                "Redis requires a client certificate: give one with --redis-client-cert and --redis-client-key",
            )
        } else {
            None
        };
        match hint {
            Some(hint) => StoreError::Unavailable(format!("{message} ({hint})")),
            None => StoreError::Unavailable(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ca.crt"]);
    }

    #[test]
    fn a_private_file_is_its_owners_alone_even_over_a_readable_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        let leftover = dir.path().join(".snapshot.json.tmp");
        for file in [&path, &leftover] {
            std::fs::write(file, "{}").unwrap();
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        write_atomically_private(&path, b"secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert!(!leftover.exists());
    }

    #[tokio::test]
    async fn a_busy_address_names_its_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let error = bind("--admin-listen", addr).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("--admin-listen {addr}: cannot listen")
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
