//! The standard `process_*` metrics every Prometheus client exports (CPU seconds, resident
//! memory, open and maximum file descriptors, start time), read from `/proc` at each scrape,
//! and `<prefix>_build_info`.
//!
//! Read by hand rather than through a crate: five numbers from three small files do not pay
//! for a dependency's build time on two cores. Where `/proc` is absent (not Linux), the
//! process metrics are left out rather than reported as zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Linux reports process times in USER_HZ, which the kernel fixes at 100 for userspace on
/// every architecture it still supports, whatever its internal tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self/stat` holds that the metrics need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Since boot, in seconds.
    pub start_after_boot_seconds: f64,
    pub virtual_memory_bytes: u64,
}

/// Parses `/proc/self/stat`. The command name (field 2) may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // Fields from the third on (`state` is the first here).
    let fields: Vec<&str> = after_name.split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    Some(Stat {
        cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
        start_after_boot_seconds: field(22)? as f64 / TICKS_PER_SECOND,
        virtual_memory_bytes: field(23)?,
    })
}

/// The `btime` line of `/proc/stat`: when the machine booted, in Unix seconds.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// The `VmRSS` line of `/proc/self/status`, in bytes.
pub fn parse_resident_bytes(text: &str) -> Option<u64> {
    let value = text.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit on open files in `/proc/self/limits`; `None` when unlimited.
pub fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `process_*` metrics, read at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        if let Some(stat) = read("/proc/self/stat").as_deref().and_then(parse_stat) {
            let cpu = ConstCounter::new(stat.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stat.virtual_memory_bytes as f64,
            )?;
            if let Some(boot) = read("/proc/stat").as_deref().and_then(parse_boot_time) {
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds",
                    boot as f64 + stat.start_after_boot_seconds,
                )?;
            }
        }
        if let Some(rss) = read("/proc/self/status")
            .as_deref()
            .and_then(parse_resident_bytes)
        {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss as f64,
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            // Less the one read_dir itself holds open.
            let open = fds.count().saturating_sub(1);
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                open as f64,
            )?;
        }
        if let Some(max) = read("/proc/self/limits").as_deref().and_then(parse_max_fds) {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                max as f64,
            )?;
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    /// `release` or `debug`.
    profile: &'static str,
}

/// Registers the `process_*` metrics in `root`: unprefixed, as every exporter names them.
pub fn register_metrics(root: &mut Registry) {
    root.register_collector(Box::new(ProcessCollector));
}

/// Registers `build_info{version,profile}` (1) in a process's prefixed registry.
pub fn register_build_info(registry: &mut Registry) {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    registry.register(
        "build",
        "The tollgate build serving: its version and build profile",
        Info::new(BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            profile,
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis_of_the_name() {
        let stat = "4242 (tollgate (x) y) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 130 0 0 20 0 3 0 98765 123456789 2048 18446744073709551615";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(parsed.cpu_seconds, 3.8);
        assert_eq!(parsed.start_after_boot_seconds, 987.65);
        assert_eq!(parsed.virtual_memory_bytes, 123_456_789);
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
    }

    #[test]
    fn boot_time_resident_memory_and_fd_limit_are_read_from_their_lines() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1764680000\nprocesses 9\n"),
            Some(1_764_680_000)
        );
        assert_eq!(
            parse_resident_bytes("Name:\ttollgate\nVmRSS:\t    5120 kB\nThreads:\t2\n"),
            Some(5120 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
    }

    #[test]
    fn the_process_metrics_of_this_process_are_exported_unprefixed() {
        let mut root = Registry::default();
        register_metrics(&mut root);
        register_build_info(root.sub_registry_with_prefix("tollgate"));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &root).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains("tollgate_build_info{version=\""), "{text}");
    }
}
