//! What the index keeps of each injected pod: its labels, what its serving certificate is made
//! from, the services it selects, and the channel its sidecar's stream reads.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tollgate_api::Snapshot;

/// What a pod's channel carries: its snapshot, and when the index made it (push latency).
#[derive(Clone, Debug)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub made_at: Instant,
}

/// The receiving end of one pod's snapshots. Closed when the pod is deleted.
pub type SnapshotRx = watch::Receiver<Published>;

/// What a pod's serving certificate is made from, as the API server (or the files) last
/// told it: never what the pod's sidecar asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub uid: Option<String>,
    /// `status.podIPs` (or `status.podIP`); empty until the pod has an address.
    pub ips: Vec<IpAddr>,
    /// The `tollgate.dev/tls-dns-names` annotation as written, not yet validated.
    pub tls_dns_names: Option<String>,
    /// `spec.hostNetwork`: its IP is the node's, not the pod's own.
    pub host_network: bool,
}

/// One pod, as the index keeps it.
pub(super) struct PodEntry {
    pub(super) labels: BTreeMap<String, String>,
    pub(super) identity: PodIdentity,
    /// Selected OAuthServices, by name.
    pub(super) selected: Vec<String>,
    /// The version of the snapshot last sent (0: none yet), its selection's.
    pub(super) version: u64,
    /// The version last written to this pod's stream.
    pub(super) delivered: Option<u64>,
    pub(super) tx: watch::Sender<Published>,
}

// === impl PodIdentity ===

impl PodIdentity {
    /// The pod's uid, addresses and certificate annotation. Addresses that do not parse are
    /// left out: the API server validates them, so there are none.
    pub fn of(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        let listed = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|ip| ip.ip.as_str());
        let single = status.and_then(|s| s.pod_ip.as_deref());
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in listed.chain(single).filter_map(|ip| ip.parse().ok()) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        Self {
            uid: pod.metadata.uid.clone(),
            ips,
            tls_dns_names: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(tollgate_inject::ANNOTATION_TLS_DNS_NAMES))
                .cloned(),
            host_network: pod
                .spec
                .as_ref()
                .and_then(|spec| spec.host_network)
                .unwrap_or(false),
        }
    }
}
