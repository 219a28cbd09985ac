//! Seals on what the Redis store keeps, so that whoever can write to Redis cannot forge a
//! token, a refresh token or an authorization code, nor move a genuine one elsewhere.
//!
//! Every value a read trusts is stored as `<64 hex digits of HMAC-SHA256>.<payload>`. The MAC
//! covers a fixed context string, the Redis key name the value is stored under (its
//! namespace's hash tag included) and the payload. So a value copied to another key, to
//! another token's key, or to another namespace does not verify, and neither does anything
//! written without the key.
//!
//! The MAC key of a namespace is derived with HKDF-SHA256 from that namespace's key material,
//! the namespace as `info`: a standalone sidecar has one material for every namespace (from
//! `--store-key-file`), a controller-fed one only its own namespace's (from its snapshot).
//! Rotation: the current key seals; the current and the previous key verify.
//!
//! The controller holds one root key pair, and hands each pod only its namespace's material,
//! [`KeyPair::for_namespace`]: a pod of one namespace learns nothing that verifies another's.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Key material shorter than this is refused: 256 bits, the MAC's own strength.
pub const MIN_KEY_LEN: usize = 32;

/// Bound on the MAC keys derived and remembered for a store with one material for every
/// namespace; past it, keys are derived for each use. A sidecar serves a handful.
const DERIVED_CACHE: usize = 1024;

/// Bound on the key names remembered as already logged, so the log says each forged key
/// once and the memory holding that list stays bounded.
const LOGGED_KEYS: usize = 10_000;

/// Separates these MACs from any other use of the same key.
const CONTEXT: &[u8] = b"tollgate-store-v1\0";

/// HKDF info prefix of a namespace's material derived from the controller's root key: not
/// the namespace alone, which derives MAC keys.
const NAMESPACE_MATERIAL: &[u8] = b"tollgate namespace store key\0";

/// Length of the hex MAC and of the `.` after it: what precedes a sealed payload. The scripts
/// read payloads from position `SEAL_PREFIX + 1` (Lua counts from 1).
pub(crate) const SEAL_PREFIX: usize = 65;

/// Key material: at least [`MIN_KEY_LEN`] bytes. Never shown (`Debug` prints its length).
#[derive(Clone, PartialEq, Eq)]
pub struct StoreKey(Arc<[u8]>);

/// The keys of one namespace (or of all): the current one seals, both verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPair {
    pub current: StoreKey,
    pub previous: Option<StoreKey>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("holds {0} bytes; a store key needs at least {MIN_KEY_LEN}")]
    TooShort(usize),
}

/// The keys a store seals and verifies with, and what it counts of values that failed.
/// Cloning shares them; [`StoreKeys::replace_namespaces`] swaps in new ones at run time (a
/// new snapshot, a rotation), for every clone at once.
#[derive(Clone)]
pub struct StoreKeys {
    inner: Arc<Inner>,
}

struct Inner {
    source: RwLock<Source>,
    /// MAC keys derived from `source`, by namespace; emptied when `source` changes.
    derived: RwLock<HashMap<String, Arc<Sealer>>>,
    unverified: AtomicU64,
    logged: Mutex<HashSet<String>>,
}

enum Source {
    /// One material for every namespace (standalone: `--store-key-file`).
    Everywhere(KeyPair),
    /// A material per namespace; other namespaces have no key (controller-fed).
    PerNamespace(HashMap<String, KeyPair>),
    /// The controller's root pair: each namespace's material derived from it.
    Root(KeyPair),
}

/// The MAC keys of one namespace.
pub(crate) struct Sealer {
    current: HmacSha256,
    previous: Option<HmacSha256>,
}

// === impl StoreKey ===

impl StoreKey {
    pub fn new(material: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let material = material.into();
        if material.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(material.len()));
        }
        Ok(Self(material.into()))
    }

    /// A key file's bytes: all of them, but one trailing newline (`\n` or `\r\n`), which
    /// editors and `echo` add.
    pub fn from_file_contents(contents: &[u8]) -> Result<Self, KeyError> {
        let contents = contents
            .strip_suffix(b"\r\n")
            .or_else(|| contents.strip_suffix(b"\n"))
            .unwrap_or(contents);
        Self::new(contents)
    }

    /// The material, for whoever must store or send it (the controller's Secret and
    /// snapshots).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({} bytes)", self.0.len())
    }
}

// === impl KeyPair ===

impl KeyPair {
    pub fn new(current: StoreKey) -> Self {
        Self {
            current,
            previous: None,
        }
    }

    /// The material of `namespace` derived from this root pair, each key on its own: what
    /// the controller sends that namespace's pods.
    pub fn for_namespace(&self, namespace: &str) -> KeyPair {
        let derive = |root: &StoreKey| {
            let mut material = vec![0u8; MIN_KEY_LEN];
            let mut info = NAMESPACE_MATERIAL.to_vec();
            info.extend_from_slice(namespace.as_bytes());
            Hkdf::<Sha256>::new(None, root.expose())
                .expand(&info, &mut material)
                .expect("HKDF output of 32 bytes");
            StoreKey(material.into())
        };
        KeyPair {
            current: derive(&self.current),
            previous: self.previous.as_ref().map(derive),
        }
    }
}

// === impl StoreKeys ===

impl StoreKeys {
    /// One key pair for every namespace, each namespace deriving its own MAC key from it.
    pub fn everywhere(keys: KeyPair) -> Self {
        Self::with_source(Source::Everywhere(keys))
    }

    /// The controller's root pair: every namespace's keys derived from it as
    /// [`KeyPair::for_namespace`] derives what the namespace's pods get, so both agree.
    pub fn from_root(root: KeyPair) -> Self {
        Self::with_source(Source::Root(root))
    }

    /// A key pair per namespace; any other namespace can neither seal nor verify.
    pub fn per_namespace(keys: impl IntoIterator<Item = (String, KeyPair)>) -> Self {
        Self::with_source(Source::PerNamespace(keys.into_iter().collect()))
    }

    fn with_source(source: Source) -> Self {
        Self {
            inner: Arc::new(Inner {
                source: RwLock::new(source),
                derived: RwLock::new(HashMap::new()),
                unverified: AtomicU64::new(0),
                logged: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Replaces the keys with these per-namespace ones, for every clone of this handle.
    pub fn replace_namespaces(&self, keys: impl IntoIterator<Item = (String, KeyPair)>) {
        let source = Source::PerNamespace(keys.into_iter().collect());
        *self.inner.source.write().unwrap_or_else(|e| e.into_inner()) = source;
        self.inner
            .derived
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Values refused so far because their seal did not verify.
    pub fn unverified_total(&self) -> u64 {
        self.inner.unverified.load(Ordering::Relaxed)
    }

    /// The MAC keys of `namespace`; `None` when this store has no key for it.
    pub(crate) fn sealer(&self, namespace: &str) -> Option<Arc<Sealer>> {
        if let Some(sealer) = self
            .inner
            .derived
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
        {
            return Some(sealer.clone());
        }
        let sealer = {
            let source = self.inner.source.read().unwrap_or_else(|e| e.into_inner());
            let sealer = match &*source {
                Source::Everywhere(pair) => Sealer::derive(namespace, pair),
                Source::PerNamespace(pairs) => Sealer::derive(namespace, pairs.get(namespace)?),
                Source::Root(root) => Sealer::derive(namespace, &root.for_namespace(namespace)),
            };
            Arc::new(sealer)
        };
        let mut derived = self
            .inner
            .derived
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if derived.len() < DERIVED_CACHE {
            derived.insert(namespace.to_owned(), sealer.clone());
        }
        Some(sealer)
    }

    /// Notes that the value under `key` did not verify: counted every time, logged the first
    /// time for each key.
    pub(crate) fn refused(&self, key: &str) {
        self.inner.unverified.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut logged = self.inner.logged.lock().unwrap_or_else(|e| e.into_inner());
            if logged.len() >= LOGGED_KEYS {
                logged.clear();
            }
            logged.insert(key.to_owned())
        };
        if first {
            tracing::warn!(
                key,
                "the token store holds a value whose seal does not verify: ignored, as if absent (written without this namespace's store key, or moved from another key)"
            );
        }
    }
}

impl fmt::Debug for StoreKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = self.inner.source.read().unwrap_or_else(|e| e.into_inner());
        let mut out = f.debug_struct("StoreKeys");
        match &*source {
            Source::Everywhere(_) | Source::Root(_) => out.field("namespaces", &"all"),
            Source::PerNamespace(pairs) => out.field("namespaces", &pairs.len()),
        };
        out.finish_non_exhaustive()
    }
}

// === impl Sealer ===

impl Sealer {
    fn derive(namespace: &str, pair: &KeyPair) -> Self {
        Self {
            current: mac_key(&pair.current, namespace),
            previous: pair.previous.as_ref().map(|key| mac_key(key, namespace)),
        }
    }

    /// `payload` sealed for storage under `key`.
    pub(crate) fn seal(&self, key: &str, payload: &[u8]) -> Vec<u8> {
        let tag = tag(&self.current, key, payload);
        let mut sealed = Vec::with_capacity(SEAL_PREFIX + payload.len());
        sealed.extend_from_slice(hex::encode(tag).as_bytes());
        sealed.push(b'.');
        sealed.extend_from_slice(payload);
        sealed
    }

    /// The payload of `sealed`, read from `key`, if its seal verifies under the current or
    /// the previous key; `None` for anything else.
    pub(crate) fn open<'a>(&self, key: &str, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let (hex_tag, rest) = sealed.split_at_checked(SEAL_PREFIX - 1)?;
        let payload = rest.strip_prefix(b".")?;
        let mut claimed = [0u8; 32];
        hex::decode_to_slice(hex_tag, &mut claimed).ok()?;
        let verifies = |mac: &HmacSha256| {
            let mut mac = mac.clone();
            feed(&mut mac, key, payload);
            // `verify_slice` compares in constant time.
            mac.verify_slice(&claimed).is_ok()
        };
        (verifies(&self.current) || self.previous.as_ref().is_some_and(verifies)).then_some(payload)
    }
}

/// The keyed MAC state of one namespace: HKDF-SHA256 of the material, the namespace as info.
fn mac_key(key: &StoreKey, namespace: &str) -> HmacSha256 {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(None, key.expose())
        .expand(namespace.as_bytes(), &mut okm)
        // 32 bytes is far below HKDF-SHA256's limit of 255 × 32.
        .expect("HKDF output of 32 bytes");
    <HmacSha256 as Mac>::new_from_slice(&okm).expect("HMAC takes a key of any length")
}

fn feed(mac: &mut HmacSha256, key: &str, payload: &[u8]) {
    mac.update(CONTEXT);
    // The key name's length first, so that no (key, payload) pair reads as another.
    mac.update(&(key.len() as u64).to_be_bytes());
    mac.update(key.as_bytes());
    mac.update(payload);
}

fn tag(mac: &HmacSha256, key: &str, payload: &[u8]) -> [u8; 32] {
    let mut mac = mac.clone();
    feed(&mut mac, key, payload);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> StoreKey {
        StoreKey::new(vec![byte; 32]).unwrap()
    }

    fn sealer(pair: KeyPair, namespace: &str) -> Arc<Sealer> {
        StoreKeys::everywhere(pair).sealer(namespace).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_under_its_own_key_name_only() {
        let s = sealer(KeyPair::new(key(1)), "shop");
        let sealed = s.seal("{tg:shop}:at:aa", b"{\"x\":1}");
        assert_eq!(sealed.len(), SEAL_PREFIX + 7);
        assert_eq!(sealed[SEAL_PREFIX - 1], b'.');
        assert_eq!(s.open("{tg:shop}:at:aa", &sealed), Some(&b"{\"x\":1}"[..]));
        assert_eq!(s.open("{tg:shop}:at:ab", &sealed), None);
        assert_eq!(s.open("{tg:shop}:tok:aa", &sealed), None);
    }

    #[test]
    fn anything_changed_fails() {
        let s = sealer(KeyPair::new(key(1)), "shop");
        let sealed = s.seal("k", b"payload");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(s.open("k", &bad), None, "byte {i}");
        }
        let mut longer = sealed.clone();
        longer.push(b'x');
        assert_eq!(s.open("k", &longer), None);
        for garbage in [
            &b""[..],
            b"payload",
            b".payload",
            &sealed[..SEAL_PREFIX - 1],
        ] {
            assert_eq!(s.open("k", garbage), None);
        }
    }

    #[test]
    fn namespaces_and_materials_derive_different_keys() {
        let shop = sealer(KeyPair::new(key(1)), "shop");
        let other = sealer(KeyPair::new(key(1)), "other");
        let stranger = sealer(KeyPair::new(key(2)), "shop");
        let sealed = shop.seal("k", b"v");
        assert_eq!(other.open("k", &sealed), None);
        assert_eq!(stranger.open("k", &sealed), None);
        // The same material and namespace: replicas given one key file agree.
        assert_eq!(
            sealer(KeyPair::new(key(1)), "shop").open("k", &sealed),
            Some(&b"v"[..])
        );
    }

    #[test]
    fn rotation_the_current_seals_and_both_verify() {
        let old = sealer(KeyPair::new(key(1)), "ns");
        let rotated = sealer(
            KeyPair {
                current: key(2),
                previous: Some(key(1)),
            },
            "ns",
        );
        let by_old = old.seal("k", b"v");
        let by_new = rotated.seal("k", b"v");
        assert_eq!(rotated.open("k", &by_old), Some(&b"v"[..]));
        assert_eq!(rotated.open("k", &by_new), Some(&b"v"[..]));
        assert_eq!(old.open("k", &by_new), None);
        let next = sealer(
            KeyPair {
                current: key(3),
                previous: Some(key(2)),
            },
            "ns",
        );
        assert_eq!(next.open("k", &by_old), None, "two rotations ago");
    }

    #[test]
    fn per_namespace_keys_serve_only_their_namespace() {
        let keys = StoreKeys::per_namespace([("a".to_owned(), KeyPair::new(key(1)))]);
        assert!(keys.sealer("a").is_some());
        assert!(keys.sealer("b").is_none());
        let sealed = keys.sealer("a").unwrap().seal("k", b"v");
        keys.replace_namespaces([("b".to_owned(), KeyPair::new(key(1)))]);
        assert!(keys.sealer("a").is_none(), "replaced keys are forgotten");
        assert_eq!(keys.sealer("b").unwrap().open("k", &sealed), None);
    }

    #[test]
    fn the_controller_and_its_pods_agree_and_namespaces_stay_apart() {
        let root = KeyPair {
            current: key(1),
            previous: Some(key(2)),
        };
        let controller = StoreKeys::from_root(root.clone());
        let shop = root.for_namespace("shop");
        assert_eq!(shop.current.expose().len(), MIN_KEY_LEN);
        assert!(shop.previous.is_some());
        assert_ne!(
            shop.current, root.current,
            "the root never leaves the controller"
        );
        assert_ne!(shop, root.for_namespace("other"));
        let pod = StoreKeys::per_namespace([("shop".to_owned(), shop)]);
        let sealed = pod.sealer("shop").unwrap().seal("k", b"v");
        assert_eq!(
            controller.sealer("shop").unwrap().open("k", &sealed),
            Some(&b"v"[..])
        );
        let sealed = controller.sealer("shop").unwrap().seal("k", b"w");
        assert_eq!(
            pod.sealer("shop").unwrap().open("k", &sealed),
            Some(&b"w"[..])
        );
        // A pod of another namespace holds nothing that verifies shop's values.
        let other = StoreKeys::per_namespace([("shop".to_owned(), root.for_namespace("other"))]);
        assert_eq!(other.sealer("shop").unwrap().open("k", &sealed), None);
    }

    #[test]
    fn key_files_need_32_bytes_and_lose_one_trailing_newline() {
        assert_eq!(
            StoreKey::from_file_contents(&[b'x'; 31]),
            Err(KeyError::TooShort(31))
        );
        let mut with_newline = vec![b'x'; 31];
        with_newline.push(b'\n');
        assert_eq!(
            StoreKey::from_file_contents(&with_newline),
            Err(KeyError::TooShort(31))
        );
        with_newline.insert(0, b'y');
        let key = StoreKey::from_file_contents(&with_newline).unwrap();
        assert_eq!(key.expose().len(), 32);
        let mut crlf = vec![b'x'; 32];
        crlf.extend_from_slice(b"\r\n");
        assert_eq!(
            StoreKey::from_file_contents(&crlf).unwrap().expose(),
            &[b'x'; 32]
        );
        let mut two = vec![b'x'; 32];
        two.extend_from_slice(b"\n\n");
        assert_eq!(
            StoreKey::from_file_contents(&two).unwrap().expose().len(),
            33
        );
    }

    #[test]
    fn debug_never_shows_the_material() {
        let material = b"correct horse battery staple 1234";
        let key = StoreKey::new(material.to_vec()).unwrap();
        let keys = StoreKeys::everywhere(KeyPair::new(key.clone()));
        let shown = format!("{key:?} {keys:?} {:?}", KeyPair::new(key.clone()));
        assert!(!shown.contains("horse"), "{shown}");
    }

    #[test]
    fn refusals_are_counted_every_time() {
        let keys = StoreKeys::everywhere(KeyPair::new(key(1)));
        keys.refused("k1");
        keys.refused("k1");
        keys.refused("k2");
        assert_eq!(keys.unverified_total(), 3);
    }
}
