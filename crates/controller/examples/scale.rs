//! The controller at the scale of an IAM estate (`make bench-controller`): for each number of
//! OAuthApplications and of pods, the index's resident memory, the time to recompile one
//! change (a rotated client secret), and the time until every stream client holds it through
//! the real stream handler (`StreamServer`, in process, no TLS).
//!
//! `BENCH_SIZES=1000x10,10000x1000` chooses the sizes (applications x pods); by default
//! 1,000, 10,000 and 50,000 applications, each at 10, 100 and 1,000 pods. Each number of
//! applications runs in a process of its own (so that one size's memory is not another's),
//! which adds its pods in steps: the replicas of one Deployment (`app=iris`, selected by one
//! OAuthService) and three pods of another (`app=web`, selected by another).
//!
//! One application in ten is confidential, with a Secret of its own: the compiler hashes each
//! client secret with 10 ms of PBKDF2 once, and 50,000 of them would take the run's whole
//! budget before measuring anything. With `BENCH_DOC=<file>`, the table and a chart replace
//! what stands between the file's `bench-controller` markers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use tokio::sync::{mpsc, watch};
use tollgate_api::manifests::Resources;
use tollgate_api::resources::{Consumer, OAuthApplication, OAuthService};
use tollgate_controller::auth::StaticTokens;
use tollgate_controller::index::{Index, SharedIndex};
use tollgate_controller::metrics::Metrics;
use tollgate_controller::stream::StreamServer;

const DEFAULT_SIZES: &str = "1000x10,1000x100,1000x1000,10000x10,10000x100,10000x1000,\
                             50000x10,50000x100,50000x1000";
/// Pods of the other Deployment, with a selection of their own.
const OTHER_PODS: usize = 3;
const BEGIN: &str = "<!-- bench-controller:begin -->";
const END: &str = "<!-- bench-controller:end -->";

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

fn service(name: &str, route: &str, app: &str) -> OAuthService {
    object(serde_json::json!({
        "apiVersion": "oauth.tollgate.dev/v1alpha1", "kind": "OAuthService",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"upstream": {"port": 52773}, "routes": [{"pathPrefix": route}],
                 "podSelector": {"matchLabels": {"app": app}},
                 "oauth2": {"provisionKeySecretRef": {"name": "pk"}, "enablePasswordGrant": true}},
    }))
}

fn secret(name: &str, key: &str, value: &str) -> Secret {
    object(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"namespace": "default", "name": name},
        "stringData": {key: value},
    }))
}

fn consumer(i: usize) -> Consumer {
    object(serde_json::json!({
        "apiVersion": "oauth.tollgate.dev/v1alpha1", "kind": "Consumer",
        "metadata": {"namespace": "default", "name": format!("consumer-{i}")}, "spec": {},
    }))
}

/// Application `i` of consumer `i / 10`; confidential when `i` is a multiple of 10.
fn application(i: usize) -> OAuthApplication {
    let mut spec = serde_json::json!({
        "consumerRef": {"name": format!("consumer-{}", i / 10)},
        "clientId": format!("client-{i}"),
        "redirectUris": ["https://app.example.com/callback"],
    });
    if i.is_multiple_of(10) {
        spec["clientSecretRef"] = serde_json::json!({"name": format!("app-{i}-secret")});
    } else {
        spec["clientType"] = serde_json::json!("public");
    }
    object(serde_json::json!({
        "apiVersion": "oauth.tollgate.dev/v1alpha1", "kind": "OAuthApplication",
        "metadata": {"namespace": "default", "name": format!("app-{i}")}, "spec": spec,
    }))
}

fn pod(name: &str, app: &str) -> Pod {
    object(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "default", "name": name, "labels": {"app": app}},
    }))
}

fn pod_names(pods: usize) -> Vec<(String, &'static str)> {
    let mut names: Vec<(String, &'static str)> = (0..pods.saturating_sub(OTHER_PODS))
        .map(|i| (format!("iris-{i}"), "iris"))
        .collect();
    names.extend((0..OTHER_PODS.min(pods)).map(|i| (format!("web-{i}"), "web")));
    names
}

/// Resident memory of this process, in bytes (Linux).
fn resident() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One measured size, as a child process prints it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    applications: usize,
    pods: usize,
    /// What building the index added to the process, before any pod.
    index_mib: f64,
    /// The whole process with every stream open.
    resident_mib: f64,
    build_s: f64,
    recompile_ms: f64,
    visible_ms: f64,
    visible_worst_ms: f64,
}

/// The version in a snapshot line, read from its head: each frame of the in-process body is
/// one whole line, and the version is the snapshot's first field.
fn version_of(frame: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = br#""version":"#;
    let head = &frame[..frame.len().min(128)];
    let at = head.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let digits: String = head[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|b| char::from(*b))
        .collect();
    digits.parse().ok()
}

async fn one_application_count(applications: usize, pod_counts: &[usize]) -> Vec<Row> {
    let mut resources = Resources {
        services: vec![
            service("iris", "/event", "iris"),
            service("web", "/web", "web"),
        ],
        secrets: vec![secret("pk", "provisionKey", "provisionkey")],
        ..Default::default()
    };
    for i in 0..applications.div_ceil(10) {
        resources.consumers.push(consumer(i));
    }
    for i in 0..applications {
        resources.applications.push(application(i));
        if i.is_multiple_of(10) {
            let name = format!("app-{i}-secret");
            resources
                .secrets
                .push(secret(&name, "clientSecret", &format!("s-{i}")));
        }
    }
    let most = pod_counts.iter().copied().max().unwrap_or(0);
    let tokens: String = pod_names(most)
        .iter()
        .map(|(name, _)| format!("token-{name} default/{name}\n"))
        .collect();

    let before = resident();
    let started = Instant::now();
    let mut index = Index::new(1);
    index.replace_all(resources, &[]);
    let build_s = started.elapsed().as_secs_f64();
    let index_mib = mib(resident().saturating_sub(before));

    let index = SharedIndex::new(index);
    let (_stop, stopped) = watch::channel(false);
    let server = Arc::new(StreamServer::new(
        index.clone(),
        Arc::new(StaticTokens::parse(&tokens).expect("tokens")),
        Metrics::new(),
        stopped,
    ));
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<u64>();
    let mut open: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut rows = Vec::new();
    let mut change = 0;
    for &pods in pod_counts {
        let names = pod_names(pods);
        {
            let mut index = index.lock();
            for (name, app) in &names {
                index.apply_pod(&pod(name, app));
            }
        }
        let mut opened = 0;
        for (name, _) in &names {
            // Pods of an earlier step keep their streams.
            if !open.insert(name.clone()) {
                continue;
            }
            // Asking for deltas, as the sidecar does.
            let path = tollgate_api::stream::delta_snapshots_path("default", name);
            let request = Request::get(path)
                .header("authorization", format!("Bearer token-{name}"))
                .body(())
                .expect("request");
            let mut body = server.handle(request).await.into_body();
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(version) = frame.data_ref().and_then(|d| version_of(d)) {
                        let _ = seen_tx.send(version);
                    }
                }
            });
            opened += 1;
        }
        for _ in 0..opened {
            seen.recv().await;
        }
        let connected = open.len();
        let resident_mib = mib(resident());

        let changes = if applications * pods >= 10_000_000 {
            3
        } else {
            5
        };
        let mut recompiles = Vec::new();
        let mut visible = Vec::new();
        for _ in 0..changes {
            change += 1;
            let started = Instant::now();
            let floor = {
                let mut index = index.lock();
                let floor = index.latest_version();
                let value = format!("rotated-{change}");
                index.apply_secret(secret("app-0-secret", "clientSecret", &value));
                recompiles.push(started.elapsed());
                floor
            };
            let mut holding = 0;
            while holding < connected {
                match seen.recv().await {
                    Some(version) if version > floor => holding += 1,
                    Some(_) => {}
                    None => panic!("the streams ended"),
                }
            }
            visible.push(started.elapsed());
        }
        recompiles.sort();
        visible.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        rows.push(Row {
            applications,
            pods,
            index_mib,
            resident_mib,
            build_s,
            recompile_ms: ms(recompiles[recompiles.len() / 2]),
            visible_ms: ms(visible[visible.len() / 2]),
            visible_worst_ms: ms(visible[visible.len() - 1]),
        });
    }
    rows
}

fn sizes() -> BTreeMap<usize, Vec<usize>> {
    let text = std::env::var("BENCH_SIZES").unwrap_or_else(|_| DEFAULT_SIZES.to_owned());
    let mut sizes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for size in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = size
            .split_once('x')
            .and_then(|(a, p)| Some((a.parse().ok()?, p.parse().ok()?)));
        let Some((applications, pods)) = parsed else {
            eprintln!("BENCH_SIZES: `{size}` is not <applications>x<pods>, such as 10000x1000");
            std::process::exit(64);
        };
        sizes.entry(applications).or_default().push(pods);
    }
    for pods in sizes.values_mut() {
        pods.sort_unstable();
        pods.dedup();
    }
    sizes
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| applications | pods | index resident (MiB) | process resident (MiB) | built in (s) \
         | one change recompiled (ms) | visible to every stream, median (ms) | worst (ms) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} |\n",
            r.applications,
            r.pods,
            r.index_mib,
            r.resident_mib,
            r.build_s,
            r.recompile_ms,
            r.visible_ms,
            r.visible_worst_ms
        ));
    }
    out
}

/// Bars of the process's resident memory and of the change's time, one line per size.
fn chart(rows: &[Row]) -> String {
    const WIDTH: f64 = 40.0;
    let most_mib = rows.iter().map(|r| r.resident_mib).fold(1.0, f64::max);
    let most_ms = rows.iter().map(|r| r.visible_ms).fold(1.0, f64::max);
    let mut out = String::from("```\n");
    out.push_str(&format!(
        "{:>14}  {:<48}{}\n",
        "apps x pods", "process resident (MiB)", "change visible everywhere (ms, log scale)"
    ));
    for r in rows {
        let memory = ((r.resident_mib / most_mib) * WIDTH).round() as usize;
        let log = |v: f64| (1.0 + v).log10();
        let time = ((log(r.visible_ms) / log(most_ms)) * WIDTH).round() as usize;
        let size = format!("{} x {}", r.applications, r.pods);
        let memory = format!("{} {:.0}", "#".repeat(memory.max(1)), r.resident_mib);
        let time = format!("{} {:.1}", "=".repeat(time.max(1)), r.visible_ms);
        out.push_str(&format!("{size:>14}  {memory:<48}{time}\n"));
    }
    out.push_str("```\n");
    out
}

/// Memory per application: the least-squares slope of the index's memory against applications.
fn slope_per_application(rows: &[Row]) -> Option<f64> {
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.applications as f64, r.index_mib * 1024.0 * 1024.0))
        .collect();
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let spread: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    (spread > 0.0).then(|| {
        points
            .iter()
            .map(|p| (p.0 - mean_x) * (p.1 - mean_y))
            .sum::<f64>()
            / spread
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, applications, pods] = args.as_slice()
        && flag == "--child"
    {
        let applications: usize = applications.parse().expect("applications");
        let pods: Vec<usize> = pods.split(',').filter_map(|p| p.parse().ok()).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        for row in runtime.block_on(one_application_count(applications, &pods)) {
            println!("{}", serde_json::to_string(&row).expect("json"));
        }
        return;
    }

    let exe = std::env::current_exe().expect("the example's path");
    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();
    for (applications, pods) in sizes() {
        let pods_arg: Vec<String> = pods.iter().map(usize::to_string).collect();
        eprintln!("{applications} applications, pods {pods:?} …");
        let output = std::process::Command::new(&exe)
            .args(["--child", &applications.to_string(), &pods_arg.join(",")])
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("the child process");
        assert!(output.status.success(), "the child process failed");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let row: Row = serde_json::from_str(line).expect("a row");
            eprintln!(
                "  {}",
                table(std::slice::from_ref(&row))
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            rows.push(row);
        }
    }
    let mut section = format!(
        "Measured by `make bench-controller` on {} cores in {:.0} s (release build without \
         fat LTO).\n\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    section.push_str(&table(&rows));
    section.push('\n');
    section.push_str(&chart(&rows));
    if let Some(slope) = slope_per_application(&rows) {
        section.push_str(&format!(
            "\nIndex memory against applications: {slope:.0} bytes per application \
             (least squares over the rows above).\n"
        ));
    }
    print!("{section}");

    if let Ok(doc) = std::env::var("BENCH_DOC") {
        let text = std::fs::read_to_string(&doc).expect("BENCH_DOC is readable");
        let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
            eprintln!("{doc}: no `{BEGIN}` … `{END}` markers to write between");
            std::process::exit(64);
        };
        let updated = format!("{}{BEGIN}\n{section}{}", &text[..begin], &text[end..]);
        std::fs::write(&doc, updated).expect("BENCH_DOC is writable");
        eprintln!("wrote {doc}");
    }
}
