//! The node's own metrics, read from `/proc` and the mounted filesystems, under
//! node-exporter's metric names, label names, types and units, so dashboards
//! and alerts written for node-exporter work unchanged.
//!
//! What it guarantees: reading never panics and never blocks the runtime. Each
//! group ("collector" in node-exporter's words: `cpu`, `stat`, `meminfo`,
//! `loadavg`, `netdev`, `diskstats`, `filesystem`, `time`, `uname`) is read on
//! its own; a file that is missing or unparseable skips only that group, is
//! logged, and shows as `node_scrape_collector_success{collector="…"} 0`. A
//! filesystem whose `statvfs` hangs (a dead NFS server) is given up on after
//! a timeout, reported with `node_filesystem_device_error 1`, and not asked
//! again until the hung call returns — as node-exporter does with stuck mounts.
//!
//! All paths come from [`NodeMetricsConfig`]: in a container the host's
//! `/proc` is mounted at e.g. `/host/proc` and its root at `/host/root`, and
//! tests point them at a fixture directory.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regex::Regex;
use tidewatch_model::exposition::Scrape;
use tidewatch_model::seam::{MetricMetadata, MetricType, SeriesSamples};
use tidewatch_model::{Label, Labels, METRIC_NAME, Sample, TimestampMs};

use crate::config::NodeMetricsConfig;
use crate::error::{Error, Result};

/// Group names, the values of the `collector` label.
pub mod collectors {
    pub const CPU: &str = "cpu";
    pub const STAT: &str = "stat";
    pub const MEMINFO: &str = "meminfo";
    pub const LOADAVG: &str = "loadavg";
    pub const NETDEV: &str = "netdev";
    pub const DISKSTATS: &str = "diskstats";
    pub const FILESYSTEM: &str = "filesystem";
    pub const TIME: &str = "time";
    pub const UNAME: &str = "uname";
}

/// Label names node-exporter uses.
pub mod label_names {
    pub const CPU: &str = "cpu";
    pub const MODE: &str = "mode";
    pub const DEVICE: &str = "device";
    pub const FSTYPE: &str = "fstype";
    pub const MOUNTPOINT: &str = "mountpoint";
    pub const COLLECTOR: &str = "collector";
    pub const SYSNAME: &str = "sysname";
    pub const RELEASE: &str = "release";
    pub const VERSION: &str = "version";
    pub const MACHINE: &str = "machine";
    pub const NODENAME: &str = "nodename";
    pub const DOMAINNAME: &str = "domainname";
}

/// One metric family's name, type and help text.
#[derive(Debug, Clone, Copy)]
struct Desc {
    name: &'static str,
    kind: MetricType,
    help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Desc {
    Desc {
        name,
        kind: MetricType::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Desc {
    Desc {
        name,
        kind: MetricType::Gauge,
        help,
    }
}

pub const NODE_CPU_SECONDS_TOTAL: &str = "node_cpu_seconds_total";
pub const NODE_CPU_GUEST_SECONDS_TOTAL: &str = "node_cpu_guest_seconds_total";
pub const NODE_BOOT_TIME_SECONDS: &str = "node_boot_time_seconds";
pub const NODE_CONTEXT_SWITCHES_TOTAL: &str = "node_context_switches_total";
pub const NODE_FORKS_TOTAL: &str = "node_forks_total";
pub const NODE_INTR_TOTAL: &str = "node_intr_total";
pub const NODE_PROCS_RUNNING: &str = "node_procs_running";
pub const NODE_PROCS_BLOCKED: &str = "node_procs_blocked";
pub const NODE_LOAD1: &str = "node_load1";
pub const NODE_LOAD5: &str = "node_load5";
pub const NODE_LOAD15: &str = "node_load15";
pub const NODE_TIME_SECONDS: &str = "node_time_seconds";
pub const NODE_UNAME_INFO: &str = "node_uname_info";
pub const NODE_SCRAPE_COLLECTOR_SUCCESS: &str = "node_scrape_collector_success";
pub const NODE_SCRAPE_COLLECTOR_DURATION_SECONDS: &str = "node_scrape_collector_duration_seconds";
/// Prefix of the families built from `/proc/meminfo` fields.
pub const NODE_MEMORY_PREFIX: &str = "node_memory_";
pub const NODE_FILESYSTEM_SIZE_BYTES: &str = "node_filesystem_size_bytes";
pub const NODE_FILESYSTEM_FREE_BYTES: &str = "node_filesystem_free_bytes";
pub const NODE_FILESYSTEM_AVAIL_BYTES: &str = "node_filesystem_avail_bytes";
pub const NODE_FILESYSTEM_FILES: &str = "node_filesystem_files";
pub const NODE_FILESYSTEM_FILES_FREE: &str = "node_filesystem_files_free";
pub const NODE_FILESYSTEM_READONLY: &str = "node_filesystem_readonly";
pub const NODE_FILESYSTEM_DEVICE_ERROR: &str = "node_filesystem_device_error";

const CPU_SECONDS: Desc = counter(NODE_CPU_SECONDS_TOTAL, "Seconds the CPUs spent in each mode.");
const CPU_GUEST_SECONDS: Desc = counter(
    NODE_CPU_GUEST_SECONDS_TOTAL,
    "Seconds the CPUs spent in guests (VMs) for each mode.",
);
const BOOT_TIME: Desc = gauge(NODE_BOOT_TIME_SECONDS, "Node boot time, in unixtime.");
const CONTEXT_SWITCHES: Desc = counter(NODE_CONTEXT_SWITCHES_TOTAL, "Total number of context switches.");
const FORKS: Desc = counter(NODE_FORKS_TOTAL, "Total number of forks.");
const INTERRUPTS: Desc = counter(NODE_INTR_TOTAL, "Total number of interrupts serviced.");
const PROCS_RUNNING: Desc = gauge(NODE_PROCS_RUNNING, "Number of processes in runnable state.");
const PROCS_BLOCKED: Desc = gauge(
    NODE_PROCS_BLOCKED,
    "Number of processes blocked waiting for I/O to complete.",
);
const LOAD1: Desc = gauge(NODE_LOAD1, "1m load average.");
const LOAD5: Desc = gauge(NODE_LOAD5, "5m load average.");
const LOAD15: Desc = gauge(NODE_LOAD15, "15m load average.");
const TIME_SECONDS: Desc = gauge(NODE_TIME_SECONDS, "System time in seconds since epoch (1970).");
const UNAME_INFO: Desc = gauge(
    NODE_UNAME_INFO,
    "Labeled system information as provided by the uname system call.",
);
const COLLECTOR_SUCCESS: Desc = gauge(
    NODE_SCRAPE_COLLECTOR_SUCCESS,
    "node_exporter: Whether a collector succeeded.",
);
const COLLECTOR_DURATION: Desc = gauge(
    NODE_SCRAPE_COLLECTOR_DURATION_SECONDS,
    "node_exporter: Duration of a collector scrape.",
);

const FS_SIZE: Desc = gauge(NODE_FILESYSTEM_SIZE_BYTES, "Filesystem size in bytes.");
const FS_FREE: Desc = gauge(NODE_FILESYSTEM_FREE_BYTES, "Filesystem free space in bytes.");
const FS_AVAIL: Desc = gauge(
    NODE_FILESYSTEM_AVAIL_BYTES,
    "Filesystem space available to non-root users in bytes.",
);
const FS_FILES: Desc = gauge(NODE_FILESYSTEM_FILES, "Filesystem total file nodes.");
const FS_FILES_FREE: Desc = gauge(NODE_FILESYSTEM_FILES_FREE, "Filesystem total free file nodes.");
const FS_READONLY: Desc = gauge(NODE_FILESYSTEM_READONLY, "Filesystem read-only status.");
const FS_DEVICE_ERROR: Desc = gauge(
    NODE_FILESYSTEM_DEVICE_ERROR,
    "Whether an error occurred while getting statistics for the given device.",
);

/// `/proc/stat` cpu columns in order, with the `mode` label node-exporter
/// gives them. `guest` and `guest_nice` go to their own family.
const CPU_MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
const CPU_GUEST_MODES: [&str; 2] = ["user", "nice"];

/// `/proc/net/dev` columns in order: eight receive, eight transmit. Each
/// becomes `node_network_<direction>_<column>_total{device}`.
const NETDEV_COLUMNS: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "frame",
    "compressed",
    "multicast",
];
const NETDEV_TRANSMIT_COLUMNS: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "colls",
    "carrier",
    "compressed",
];

/// Read and write sectors in `/proc/diskstats` are always 512 bytes
/// (Documentation/admin-guide/iostats.rst), whatever the device's block size.
const SECTOR_BYTES: f64 = 512.0;
/// `/proc/diskstats` times are milliseconds.
const SECONDS_PER_DISK_TICK: f64 = 1.0 / 1000.0;

/// A `/proc/diskstats` column after major, minor and name: the family it
/// feeds and the factor to its unit. Kernels before 4.18 have 11 columns,
/// 4.18 added four discard columns, 5.5 two flush columns: a family is
/// reported when the line has its column.
const DISK_COLUMNS: [(Desc, f64); 17] = [
    (
        counter(
            "node_disk_reads_completed_total",
            "The total number of reads completed successfully.",
        ),
        1.0,
    ),
    (
        counter("node_disk_reads_merged_total", "The total number of reads merged."),
        1.0,
    ),
    (
        counter(
            "node_disk_read_bytes_total",
            "The total number of bytes read successfully.",
        ),
        SECTOR_BYTES,
    ),
    (
        counter(
            "node_disk_read_time_seconds_total",
            "The total number of seconds spent by all reads.",
        ),
        SECONDS_PER_DISK_TICK,
    ),
    (
        counter(
            "node_disk_writes_completed_total",
            "The total number of writes completed successfully.",
        ),
        1.0,
    ),
    (
        counter("node_disk_writes_merged_total", "The number of writes merged."),
        1.0,
    ),
    (
        counter(
            "node_disk_written_bytes_total",
            "The total number of bytes written successfully.",
        ),
        SECTOR_BYTES,
    ),
    (
        counter(
            "node_disk_write_time_seconds_total",
            "This is the total number of seconds spent by all writes.",
        ),
        SECONDS_PER_DISK_TICK,
    ),
    (
        gauge("node_disk_io_now", "The number of I/Os currently in progress."),
        1.0,
    ),
    (
        counter("node_disk_io_time_seconds_total", "Total seconds spent doing I/Os."),
        SECONDS_PER_DISK_TICK,
    ),
    (
        counter(
            "node_disk_io_time_weighted_seconds_total",
            "The weighted # of seconds spent doing I/Os.",
        ),
        SECONDS_PER_DISK_TICK,
    ),
    (
        counter(
            "node_disk_discards_completed_total",
            "The total number of discards completed successfully.",
        ),
        1.0,
    ),
    (
        counter(
            "node_disk_discards_merged_total",
            "The total number of discards merged.",
        ),
        1.0,
    ),
    // node-exporter reports this one in sectors, not bytes.
    (
        counter(
            "node_disk_discarded_sectors_total",
            "The total number of sectors discarded successfully.",
        ),
        1.0,
    ),
    (
        counter(
            "node_disk_discard_time_seconds_total",
            "This is the total number of seconds spent by all discards.",
        ),
        SECONDS_PER_DISK_TICK,
    ),
    (
        counter(
            "node_disk_flush_requests_total",
            "The total number of flush requests completed successfully",
        ),
        1.0,
    ),
    (
        counter(
            "node_disk_flush_requests_time_seconds_total",
            "This is the total number of seconds spent by all flush requests.",
        ),
        SECONDS_PER_DISK_TICK,
    ),
];

/// node-exporter's default `--collector.diskstats.device-exclude`: partitions,
/// RAM disks, loop devices and floppies, so each disk is counted once.
pub const DEFAULT_DISK_DEVICE_EXCLUDE: &str = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";
/// node-exporter's default `--collector.filesystem.mount-points-exclude`.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node-exporter's default `--collector.filesystem.fs-types-exclude`: pseudo
/// and read-only image filesystems. `tmpfs` is kept, as node-exporter keeps it.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$";

/// node-exporter's `--collector.filesystem.mount-timeout` default.
pub const DEFAULT_MOUNT_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's metrics at one instant, plus which groups failed.
#[derive(Debug, Clone, Default)]
pub struct NodeScrape {
    /// Series (with `__name__`, one sample each at the collection time) and
    /// one metadata entry per family, as a parsed `/metrics` page would hold.
    pub scrape: Scrape,
    /// Groups that were skipped because their file was missing or unparseable.
    pub failed: Vec<&'static str>,
}

/// Reads the node's metrics. Cheap to clone: clones share the stuck-mount set.
#[derive(Debug, Clone)]
pub struct NodeCollector {
    proc_path: PathBuf,
    rootfs_path: PathBuf,
    user_hz: f64,
    mount_timeout: Duration,
    filters: Arc<Filters>,
    /// Mount points whose `statvfs` has not returned yet: not asked again
    /// until it does, so a dead mount costs one blocked thread, not one per scrape.
    stuck_mounts: Arc<Mutex<HashSet<String>>>,
}

#[derive(Debug)]
struct Filters {
    disk_devices: Regex,
    mount_points: Regex,
    fs_types: Regex,
}

impl NodeCollector {
    /// A collector reading the paths in `config`.
    pub fn new(config: &NodeMetricsConfig) -> Self {
        NodeCollector {
            proc_path: config.proc_path.clone(),
            rootfs_path: config.rootfs_path.clone(),
            user_hz: sys::user_hz(),
            mount_timeout: DEFAULT_MOUNT_TIMEOUT,
            filters: Arc::new(Filters {
                // The patterns are constants covered by tests.
                disk_devices: Regex::new(DEFAULT_DISK_DEVICE_EXCLUDE).expect("constant pattern"),
                mount_points: Regex::new(DEFAULT_MOUNT_POINTS_EXCLUDE).expect("constant pattern"),
                fs_types: Regex::new(DEFAULT_FS_TYPES_EXCLUDE).expect("constant pattern"),
            }),
            stuck_mounts: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// How long one filesystem's `statvfs` may take before it is reported as
    /// an error and left alone until it returns.
    pub fn with_mount_timeout(mut self, timeout: Duration) -> Self {
        self.mount_timeout = timeout;
        self
    }

    /// Reads every group once; samples carry `now_ms`. The file reads run on
    /// the blocking pool, each `statvfs` on its own blocking task.
    pub async fn collect(&self, now_ms: TimestampMs) -> NodeScrape {
        let reader = self.clone();
        let proc_part = tokio::task::spawn_blocking(move || reader.collect_proc(now_ms));
        let mut families = match proc_part.await {
            Ok(families) => families,
            Err(join_error) => {
                // Only a panic in our parsers could get here; report the node
                // as failed rather than take the collector down.
                tracing::warn!(error = %join_error, "node collector task failed");
                let mut families = Families::new(now_ms);
                families.group_result(collectors::STAT, Duration::ZERO, false);
                families
            }
        };
        let started = Instant::now();
        let ok = self.collect_filesystems(&mut families).await;
        families.group_result(collectors::FILESYSTEM, started.elapsed(), ok);
        families.finish()
    }

    /// Everything read from `/proc` files and syscalls that cannot hang.
    fn collect_proc(&self, now_ms: TimestampMs) -> Families {
        let mut families = Families::new(now_ms);
        self.group(&mut families, collectors::CPU, |this, f| this.collect_cpu(f));
        self.group(&mut families, collectors::STAT, |this, f| this.collect_stat(f));
        self.group(&mut families, collectors::MEMINFO, |this, f| this.collect_meminfo(f));
        self.group(&mut families, collectors::LOADAVG, |this, f| this.collect_loadavg(f));
        self.group(&mut families, collectors::NETDEV, |this, f| this.collect_netdev(f));
        self.group(&mut families, collectors::DISKSTATS, |this, f| {
            this.collect_diskstats(f)
        });
        self.group(&mut families, collectors::TIME, |_, f| {
            f.add(&TIME_SECONDS, &[], f.now_ms as f64 / 1000.0);
            Ok(())
        });
        self.group(&mut families, collectors::UNAME, |_, f| {
            let uname = sys::uname()?;
            f.add(
                &UNAME_INFO,
                &[
                    (label_names::DOMAINNAME, uname.domainname.as_str()),
                    (label_names::MACHINE, uname.machine.as_str()),
                    (label_names::NODENAME, uname.nodename.as_str()),
                    (label_names::RELEASE, uname.release.as_str()),
                    (label_names::SYSNAME, uname.sysname.as_str()),
                    (label_names::VERSION, uname.version.as_str()),
                ],
                1.0,
            );
            Ok(())
        });
        families
    }

    /// Runs one group; on failure its partial output is dropped, so a group
    /// is reported whole or not at all.
    fn group(
        &self,
        families: &mut Families,
        name: &'static str,
        read: impl FnOnce(&Self, &mut Families) -> Result<()>,
    ) {
        let started = Instant::now();
        let mark = families.mark();
        let result = read(self, families);
        if let Err(error) = &result {
            families.rollback(mark);
            tracing::warn!(collector = name, error = %error, "node metrics group skipped");
        }
        families.group_result(name, started.elapsed(), result.is_ok());
    }

    fn read_proc(&self, relative: &str) -> Result<(PathBuf, String)> {
        let path = self.proc_path.join(relative);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Ok((path, text))
    }

    fn collect_cpu(&self, families: &mut Families) -> Result<()> {
        let (path, text) = self.read_proc("stat")?;
        let stat = parse_stat(&text).map_err(|message| Error::parse(&path, message))?;
        for cpu in &stat.cpus {
            for (mode, ticks) in CPU_MODES.iter().zip(&cpu.ticks) {
                if let Some(ticks) = ticks {
                    let labels = [(label_names::CPU, cpu.id.as_str()), (label_names::MODE, *mode)];
                    families.add(&CPU_SECONDS, &labels, *ticks as f64 / self.user_hz);
                }
            }
            for (mode, ticks) in CPU_GUEST_MODES.iter().zip(&cpu.ticks[CPU_MODES.len()..]) {
                if let Some(ticks) = ticks {
                    let labels = [(label_names::CPU, cpu.id.as_str()), (label_names::MODE, *mode)];
                    families.add(&CPU_GUEST_SECONDS, &labels, *ticks as f64 / self.user_hz);
                }
            }
        }
        Ok(())
    }

    fn collect_stat(&self, families: &mut Families) -> Result<()> {
        let (path, text) = self.read_proc("stat")?;
        let stat = parse_stat(&text).map_err(|message| Error::parse(&path, message))?;
        let values = [
            (&BOOT_TIME, stat.boot_time),
            (&CONTEXT_SWITCHES, stat.context_switches),
            (&FORKS, stat.forks),
            (&INTERRUPTS, stat.interrupts),
            (&PROCS_RUNNING, stat.procs_running),
            (&PROCS_BLOCKED, stat.procs_blocked),
        ];
        for (desc, value) in values {
            if let Some(value) = value {
                families.add(desc, &[], value as f64);
            }
        }
        Ok(())
    }

    fn collect_meminfo(&self, families: &mut Families) -> Result<()> {
        let (path, text) = self.read_proc("meminfo")?;
        let fields = parse_meminfo(&text).map_err(|message| Error::parse(&path, message))?;
        for field in fields {
            let name = format!("{NODE_MEMORY_PREFIX}{}", field.name);
            let help = format!("Memory information field {}.", field.name);
            families.add_dynamic(&name, MetricType::Gauge, &help, &[], field.value);
        }
        Ok(())
    }

    fn collect_loadavg(&self, families: &mut Families) -> Result<()> {
        let (path, text) = self.read_proc("loadavg")?;
        let [one, five, fifteen] = parse_loadavg(&text).map_err(|message| Error::parse(&path, message))?;
        families.add(&LOAD1, &[], one);
        families.add(&LOAD5, &[], five);
        families.add(&LOAD15, &[], fifteen);
        Ok(())
    }

    fn collect_netdev(&self, families: &mut Families) -> Result<()> {
        // pid 1's first, for the same reason as the mount table: `<proc>/net`
        // is `self/net`, the collector pod's own network namespace, while
        // pid 1 lives in the host's.
        let (path, text) = match self.read_proc("1/net/dev") {
            Ok(found) => found,
            Err(_) => self.read_proc("net/dev")?,
        };
        let devices = parse_net_dev(&text).map_err(|message| Error::parse(&path, message))?;
        let receive: Vec<(String, String)> = NETDEV_COLUMNS
            .iter()
            .map(|c| {
                (
                    format!("node_network_receive_{c}_total"),
                    format!("Network device statistic receive_{c}."),
                )
            })
            .collect();
        let transmit: Vec<(String, String)> = NETDEV_TRANSMIT_COLUMNS
            .iter()
            .map(|c| {
                (
                    format!("node_network_transmit_{c}_total"),
                    format!("Network device statistic transmit_{c}."),
                )
            })
            .collect();
        for device in &devices {
            let labels = [(label_names::DEVICE, device.name.as_str())];
            let columns = receive.iter().chain(&transmit);
            for ((name, help), value) in columns.zip(device.counters) {
                families.add_dynamic(name, MetricType::Counter, help, &labels, value as f64);
            }
        }
        Ok(())
    }

    fn collect_diskstats(&self, families: &mut Families) -> Result<()> {
        let (path, text) = self.read_proc("diskstats")?;
        let disks = parse_diskstats(&text).map_err(|message| Error::parse(&path, message))?;
        for disk in &disks {
            if self.filters.disk_devices.is_match(&disk.device) {
                continue;
            }
            let labels = [(label_names::DEVICE, disk.device.as_str())];
            for ((desc, factor), value) in DISK_COLUMNS.iter().zip(&disk.counters) {
                families.add(desc, &labels, *value as f64 * factor);
            }
        }
        Ok(())
    }

    /// The mount table: `<proc>/1/mounts` first — in a container,
    /// `<proc>/mounts` is the container's own table (it is `self/mounts`),
    /// while pid 1's is the host's — then `<proc>/mounts`.
    fn read_mounts(&self) -> Result<Vec<Mount>> {
        let text = match self.read_proc("1/mounts") {
            Ok((_, text)) => text,
            Err(_) => self.read_proc("mounts")?.1,
        };
        Ok(parse_mounts(&text))
    }

    async fn collect_filesystems(&self, families: &mut Families) -> bool {
        let reader = self.clone();
        let mounts = match tokio::task::spawn_blocking(move || reader.read_mounts()).await {
            Ok(Ok(mounts)) => mounts,
            Ok(Err(error)) => {
                tracing::warn!(collector = collectors::FILESYSTEM, error = %error, "node metrics group skipped");
                return false;
            }
            Err(join_error) => {
                tracing::warn!(collector = collectors::FILESYSTEM, error = %join_error, "node metrics group skipped");
                return false;
            }
        };
        let mut seen = HashSet::new();
        let mut pending = Vec::new();
        for mount in mounts {
            let mount_point = self.strip_rootfs(&mount.mount_point);
            if self.filters.mount_points.is_match(&mount_point) || self.filters.fs_types.is_match(&mount.fs_type) {
                continue;
            }
            // The same filesystem mounted twice at one place (bind mounts
            // stacked over each other) is reported once, as node-exporter does.
            if !seen.insert((mount.device.clone(), mount_point.clone(), mount.fs_type.clone())) {
                continue;
            }
            let stat = self.spawn_statvfs(&mount_point);
            pending.push((mount, mount_point, stat));
        }
        // One deadline for all: the group takes at most one timeout however
        // many mounts hang.
        let deadline = tokio::time::Instant::now() + self.mount_timeout;
        for (mount, mount_point, stat) in pending {
            let outcome = match stat {
                None => None,
                Some(handle) => match tokio::time::timeout_at(deadline, handle).await {
                    Ok(Ok(Ok(stat))) => Some(stat),
                    Ok(Ok(Err(error))) => {
                        tracing::debug!(mountpoint = %mount_point, error = %error, "statvfs failed");
                        None
                    }
                    Ok(Err(_)) => None,
                    Err(_) => {
                        tracing::warn!(mountpoint = %mount_point, timeout = ?self.mount_timeout, "statvfs hangs, mount marked stuck");
                        None
                    }
                },
            };
            let labels = [
                (label_names::DEVICE, mount.device.as_str()),
                (label_names::FSTYPE, mount.fs_type.as_str()),
                (label_names::MOUNTPOINT, mount_point.as_str()),
            ];
            let Some(stat) = outcome else {
                families.add(&FS_DEVICE_ERROR, &labels, 1.0);
                continue;
            };
            families.add(&FS_DEVICE_ERROR, &labels, 0.0);
            families.add(&FS_SIZE, &labels, stat.size_bytes);
            families.add(&FS_FREE, &labels, stat.free_bytes);
            families.add(&FS_AVAIL, &labels, stat.avail_bytes);
            families.add(&FS_FILES, &labels, stat.files);
            families.add(&FS_FILES_FREE, &labels, stat.files_free);
            families.add(&FS_READONLY, &labels, if stat.read_only { 1.0 } else { 0.0 });
        }
        true
    }

    /// Starts `statvfs` of one mount point on the blocking pool, unless an
    /// earlier call for it has not returned yet (`None`: report an error).
    fn spawn_statvfs(&self, mount_point: &str) -> Option<tokio::task::JoinHandle<Result<FsStat>>> {
        {
            let mut stuck = self.stuck_mounts.lock().unwrap_or_else(|e| e.into_inner());
            if !stuck.insert(mount_point.to_owned()) {
                return None;
            }
        }
        let path = self.rootfs_path.join(mount_point.trim_start_matches('/'));
        let stuck_mounts = Arc::clone(&self.stuck_mounts);
        let key = mount_point.to_owned();
        Some(tokio::task::spawn_blocking(move || {
            let result = sys::statvfs(&path);
            stuck_mounts.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            result
        }))
    }

    /// The mount point as the host sees it: a table read from inside a
    /// container lists the host's filesystems under the rootfs prefix.
    fn strip_rootfs(&self, mount_point: &str) -> String {
        let Some(root) = self.rootfs_path.to_str() else {
            return mount_point.to_owned();
        };
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            return mount_point.to_owned();
        }
        match mount_point.strip_prefix(root) {
            Some("") => "/".to_owned(),
            Some(rest) if rest.starts_with('/') => rest.to_owned(),
            _ => mount_point.to_owned(),
        }
    }
}

/// Series and metadata being built for one collection.
#[derive(Debug)]
struct Families {
    now_ms: TimestampMs,
    series: Vec<SeriesSamples>,
    metadata: Vec<MetricMetadata>,
    families_seen: HashSet<String>,
    failed: Vec<&'static str>,
    /// Group results, reported last so a rollback never removes them.
    results: Vec<(&'static str, Duration, bool)>,
}

impl Families {
    fn new(now_ms: TimestampMs) -> Self {
        Families {
            now_ms,
            series: Vec::new(),
            metadata: Vec::new(),
            families_seen: HashSet::new(),
            failed: Vec::new(),
            results: Vec::new(),
        }
    }

    fn add(&mut self, desc: &Desc, labels: &[(&str, &str)], value: f64) {
        self.add_dynamic(desc.name, desc.kind, desc.help, labels, value);
    }

    fn add_dynamic(&mut self, name: &str, kind: MetricType, help: &str, labels: &[(&str, &str)], value: f64) {
        if !self.families_seen.contains(name) {
            self.families_seen.insert(name.to_owned());
            self.metadata.push(MetricMetadata {
                metric_family_name: name.to_owned(),
                metric_type: kind,
                help: help.to_owned(),
                unit: String::new(),
            });
        }
        let mut pairs = Vec::with_capacity(labels.len() + 1);
        pairs.push(Label::new(METRIC_NAME, name));
        for (label, label_value) in labels {
            pairs.push(Label::new(*label, *label_value));
        }
        let labels = Labels::from_pairs(pairs.into_iter().map(|l| (l.name, l.value)));
        self.series
            .push(SeriesSamples::floats(labels, vec![Sample::new(self.now_ms, value)]));
    }

    fn mark(&self) -> (usize, usize) {
        (self.series.len(), self.metadata.len())
    }

    fn rollback(&mut self, (series, metadata): (usize, usize)) {
        self.series.truncate(series);
        for dropped in self.metadata.drain(metadata..) {
            self.families_seen.remove(&dropped.metric_family_name);
        }
    }

    fn group_result(&mut self, name: &'static str, elapsed: Duration, ok: bool) {
        if !ok {
            self.failed.push(name);
        }
        self.results.push((name, elapsed, ok));
    }

    fn finish(mut self) -> NodeScrape {
        for (name, elapsed, ok) in std::mem::take(&mut self.results) {
            let labels = [(label_names::COLLECTOR, name)];
            self.add(&COLLECTOR_DURATION, &labels, elapsed.as_secs_f64());
            self.add(&COLLECTOR_SUCCESS, &labels, if ok { 1.0 } else { 0.0 });
        }
        NodeScrape {
            scrape: Scrape {
                series: self.series,
                metadata: self.metadata,
                exemplars: Vec::new(),
            },
            failed: self.failed,
        }
    }
}

// ---------------------------------------------------------------------------
// Parsers: pure functions over file contents. Errors are messages; the caller
// adds the path.

/// One `cpuN` line of `/proc/stat`: ticks of user, nice, system, idle,
/// iowait, irq, softirq, steal, guest, guest_nice (older kernels have fewer).
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTicks {
    /// `0`, `1`, … (the aggregate `cpu` line is not kept).
    pub id: String,
    pub ticks: [Option<u64>; 10],
}

/// What node-exporter reads from `/proc/stat`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcStat {
    pub cpus: Vec<CpuTicks>,
    pub boot_time: Option<u64>,
    pub context_switches: Option<u64>,
    pub forks: Option<u64>,
    pub interrupts: Option<u64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

fn parse_u64(field: &str, what: &str) -> std::result::Result<u64, String> {
    field
        .parse::<u64>()
        .map_err(|_| format!("{what}: {field:?} is not a non-negative integer"))
}

/// Parses `/proc/stat`. Lines it does not know are ignored (kernels add
/// them); a known line with a bad number is an error.
pub fn parse_stat(text: &str) -> std::result::Result<ProcStat, String> {
    let mut stat = ProcStat::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if let Some(id) = key.strip_prefix("cpu") {
            if id.is_empty() {
                continue;
            }
            if !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("cpu line {line:?}: bad cpu number"));
            }
            let mut ticks = [None; 10];
            let mut count = 0;
            for (slot, field) in ticks.iter_mut().zip(fields.by_ref()) {
                *slot = Some(parse_u64(field, key)?);
                count += 1;
            }
            // user, nice, system and idle exist since Linux 2.6.
            if count < 4 {
                return Err(format!("cpu line {line:?}: fewer than 4 columns"));
            }
            stat.cpus.push(CpuTicks {
                id: id.to_owned(),
                ticks,
            });
            continue;
        }
        let slot = match key {
            "btime" => &mut stat.boot_time,
            "ctxt" => &mut stat.context_switches,
            "processes" => &mut stat.forks,
            "intr" => &mut stat.interrupts,
            "procs_running" => &mut stat.procs_running,
            "procs_blocked" => &mut stat.procs_blocked,
            _ => continue,
        };
        let Some(value) = fields.next() else {
            return Err(format!("line {line:?} has no value"));
        };
        *slot = Some(parse_u64(value, key)?);
    }
    if stat.cpus.is_empty() {
        return Err("no cpu lines".into());
    }
    Ok(stat)
}

/// One `/proc/meminfo` field under node-exporter's name: `Active(anon)`
/// becomes `Active_anon`, and fields in kB get `_bytes` and are multiplied.
#[derive(Debug, Clone, PartialEq)]
pub struct MeminfoField {
    /// Without the `node_memory_` prefix, e.g. `MemTotal_bytes`, `HugePages_Total`.
    pub name: String,
    pub value: f64,
}

/// Parses `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> std::result::Result<Vec<MeminfoField>, String> {
    let mut fields = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else {
            return Err(format!("line {line:?} has no ':'"));
        };
        let mut parts = rest.split_ascii_whitespace();
        let Some(number) = parts.next() else {
            return Err(format!("line {line:?} has no value"));
        };
        let value = parse_u64(number, key)? as f64;
        let unit = parts.next();
        let name = meminfo_name(key);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("field name {key:?} is not usable in a metric name"));
        }
        match unit {
            None => fields.push(MeminfoField { name, value }),
            Some("kB") => fields.push(MeminfoField {
                name: format!("{name}_bytes"),
                value: value * 1024.0,
            }),
            Some(other) => return Err(format!("line {line:?}: unknown unit {other:?}")),
        }
    }
    if fields.is_empty() {
        return Err("no fields".into());
    }
    Ok(fields)
}

/// `Active(anon)` → `Active_anon`: node-exporter replaces the parenthesised
/// part with `_` and its content.
fn meminfo_name(key: &str) -> String {
    let key = key.trim();
    match (key.find('('), key.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}_{}{}", &key[..open], &key[open + 1..close], &key[close + 1..])
        }
        _ => key.to_owned(),
    }
}

/// Parses `/proc/loadavg`: the first three fields.
pub fn parse_loadavg(text: &str) -> std::result::Result<[f64; 3], String> {
    let mut fields = text.split_ascii_whitespace();
    let mut loads = [0.0; 3];
    for load in &mut loads {
        let Some(field) = fields.next() else {
            return Err(format!("{text:?}: fewer than three fields"));
        };
        *load = field
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("load {field:?} is not a number"))?;
    }
    Ok(loads)
}

/// One interface of `/proc/net/dev`: eight receive then eight transmit counters.
#[derive(Debug, Clone, PartialEq)]
pub struct NetDevice {
    pub name: String,
    pub counters: [u64; 16],
}

/// Parses `/proc/net/dev` (two header lines, then `iface: 16 counters`).
pub fn parse_net_dev(text: &str) -> std::result::Result<Vec<NetDevice>, String> {
    let mut devices = Vec::new();
    for line in text.lines().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        // Old kernels print `eth0:123` with no space after the colon.
        let Some((name, rest)) = line.split_once(':') else {
            return Err(format!("line {line:?} has no ':'"));
        };
        let mut counters = [0u64; 16];
        let mut count = 0;
        for (slot, field) in counters.iter_mut().zip(rest.split_ascii_whitespace()) {
            *slot = parse_u64(field, name.trim())?;
            count += 1;
        }
        if count != 16 {
            return Err(format!("line {line:?}: {count} counters, expected 16"));
        }
        devices.push(NetDevice {
            name: name.trim().to_owned(),
            counters,
        });
    }
    Ok(devices)
}

/// One line of `/proc/diskstats`: the device and its counters after the name.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskStats {
    pub device: String,
    pub counters: Vec<u64>,
}

/// Parses `/proc/diskstats`: major, minor, name and at least 11 counters.
pub fn parse_diskstats(text: &str) -> std::result::Result<Vec<DiskStats>, String> {
    let mut disks = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() < 14 {
            return Err(format!("line {line:?}: {} fields, expected at least 14", fields.len()));
        }
        let device = fields[2];
        let mut counters = Vec::with_capacity(fields.len() - 3);
        for field in &fields[3..] {
            counters.push(parse_u64(field, device)?);
        }
        disks.push(DiskStats {
            device: device.to_owned(),
            counters,
        });
    }
    Ok(disks)
}

/// One mounted filesystem from a mounts table.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
}

/// Parses `/proc/mounts` (fstab format). Lines with fewer than three fields
/// are skipped; `\040`-style octal escapes in paths are decoded.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(device), Some(mount_point), Some(fs_type)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        mounts.push(Mount {
            device: unescape_octal(device),
            mount_point: unescape_octal(mount_point),
            fs_type: fs_type.to_owned(),
        });
    }
    mounts
}

/// Decodes the kernel's `\ooo` escapes (space, tab, newline, backslash).
fn unescape_octal(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value =
                (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `statvfs` says about one filesystem, in node-exporter's units.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FsStat {
    size_bytes: f64,
    free_bytes: f64,
    avail_bytes: f64,
    files: f64,
    files_free: f64,
    read_only: bool,
}

/// The three calls into libc, each a few lines with its safety argument.
mod sys {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use super::FsStat;
    use crate::error::{Error, Result};

    /// Kernel clock ticks per second (`USER_HZ`), the unit of `/proc/stat`.
    pub(super) fn user_hz() -> f64 {
        #[allow(unsafe_code)]
        // SAFETY: sysconf takes an integer and reads no memory of ours.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // USER_HZ is 100 on every Linux architecture; sysconf only fails on
        // exotic systems, where 100 is still the right guess.
        if ticks > 0 { ticks as f64 } else { 100.0 }
    }

    pub(super) fn statvfs(path: &Path) -> Result<FsStat> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::parse(path, "path contains a NUL byte".to_owned()))?;
        #[allow(unsafe_code)]
        // SAFETY: `statvfs` is plain old data, so all-zero is a valid value;
        // the kernel writes into it through a pointer valid for the call, and
        // `c_path` is a NUL-terminated string that outlives the call.
        let (rc, stat) = unsafe {
            let mut stat: libc::statvfs = std::mem::zeroed();
            let rc = libc::statvfs(c_path.as_ptr(), &mut stat);
            (rc, stat)
        };
        if rc != 0 {
            return Err(Error::io(path, std::io::Error::last_os_error()));
        }
        // Block counts are in fragment-size units; f_bsize is only the
        // preferred I/O size (they are equal on most filesystems).
        let block = if stat.f_frsize > 0 { stat.f_frsize } else { stat.f_bsize } as f64;
        Ok(FsStat {
            size_bytes: stat.f_blocks as f64 * block,
            free_bytes: stat.f_bfree as f64 * block,
            avail_bytes: stat.f_bavail as f64 * block,
            files: stat.f_files as f64,
            files_free: stat.f_ffree as f64,
            read_only: stat.f_flag & libc::ST_RDONLY != 0,
        })
    }

    #[derive(Debug)]
    pub(super) struct Uname {
        pub(super) sysname: String,
        pub(super) nodename: String,
        pub(super) release: String,
        pub(super) version: String,
        pub(super) machine: String,
        pub(super) domainname: String,
    }

    pub(super) fn uname() -> Result<Uname> {
        #[allow(unsafe_code)]
        // SAFETY: `utsname` is plain old data (char arrays), so all-zero is
        // valid; uname fills it through a pointer valid for the call.
        let (rc, raw) = unsafe {
            let mut raw: libc::utsname = std::mem::zeroed();
            let rc = libc::uname(&mut raw);
            (rc, raw)
        };
        if rc != 0 {
            return Err(Error::io("uname", std::io::Error::last_os_error()));
        }
        Ok(Uname {
            sysname: field(&raw.sysname),
            nodename: field(&raw.nodename),
            release: field(&raw.release),
            version: field(&raw.version),
            machine: field(&raw.machine),
            domainname: field(&raw.domainname),
        })
    }

    /// A NUL-terminated `char` array as text; an array without a NUL (which
    /// the kernel never returns) is read to its end.
    fn field(chars: &[libc::c_char]) -> String {
        let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).collect();
        match CStr::from_bytes_until_nul(&bytes) {
            Ok(text) => text.to_string_lossy().into_owned(),
            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const STAT: &str = "cpu  1000 20 300 40000 50 0 6 7 0 0
cpu0 600 10 200 20000 30 0 4 5 8 9
cpu1 400 10 100 20000 20 0 2 2
intr 123456 0 9 0 0
ctxt 987654
btime 1700000000
processes 4242
procs_running 3
procs_blocked 1
softirq 1 2 3
";

    const MEMINFO: &str = "MemTotal:       16303412 kB
MemFree:         1021740 kB
MemAvailable:    9470952 kB
Buffers:          401012 kB
Cached:          7622464 kB
Active(anon):    3524712 kB
Inactive(file):  4177440 kB
HugePages_Total:       0
HugePages_Free:        0
Hugepagesize:       2048 kB
";

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1234567    8910    0    0    0     0          0         0  1234567    8910    0    0    0     0       0          0
  eth0:98765432  123456    1    2    0     0          0        17 4567890   54321    3    4    0     0       0          0
";

    const DISKSTATS: &str = "   7       0 loop0 57 0 2208 14 0 0 0 0 0 40 14 0 0 0 0
   8       0 sda 185318 4390 11089010 72538 339880 334011 26281872 408620 0 259456 508764 0 0 0 0 10 20
   8       1 sda1 185000 4390 11000000 72000 339000 334000 26000000 408000 0 259000 508000
 259       0 nvme0n1 5000 10 80000 900 6000 20 96000 1200 2 3000 2100
 259       1 nvme0n1p1 4000 10 70000 800 5000 20 90000 1100 0 2900 2000
";

    const MOUNTS: &str = "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/sda2 / ext4 rw,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev,size=1631344k,mode=755 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0
/dev/sdb1 /mnt/my\\040disk ext4 rw 0 0
garbage
";

    #[test]
    fn stat_is_parsed() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(stat.cpus.len(), 2);
        assert_eq!(stat.cpus[0].id, "0");
        assert_eq!(stat.cpus[0].ticks[0], Some(600));
        assert_eq!(stat.cpus[0].ticks[9], Some(9));
        assert_eq!(stat.cpus[1].ticks[7], Some(2));
        assert_eq!(stat.cpus[1].ticks[8], None, "guest absent on the short line");
        assert_eq!(stat.boot_time, Some(1_700_000_000));
        assert_eq!(stat.context_switches, Some(987_654));
        assert_eq!(stat.forks, Some(4242));
        assert_eq!(stat.interrupts, Some(123_456));
        assert_eq!(stat.procs_running, Some(3));
        assert_eq!(stat.procs_blocked, Some(1));
    }

    #[test]
    fn malformed_stat_is_an_error() {
        assert!(parse_stat("").is_err(), "no cpu lines");
        assert!(parse_stat("cpu0 1 2 x 4\n").is_err());
        assert!(parse_stat("cpu0 1 2\n").is_err(), "too few columns");
        assert!(parse_stat("cpuX 1 2 3 4\n").is_err());
        assert!(parse_stat("cpu0 1 2 3 4\nctxt\n").is_err());
        assert!(parse_stat("cpu0 1 2 3 4\nbtime -5\n").is_err());
        assert!(parse_stat("cpu0 1 2 3 4\nunknown line here\n").is_ok());
    }

    #[test]
    fn meminfo_names_follow_node_exporter() {
        let fields = parse_meminfo(MEMINFO).unwrap();
        let get = |name: &str| fields.iter().find(|f| f.name == name).map(|f| f.value);
        assert_eq!(get("MemTotal_bytes"), Some(16303412.0 * 1024.0));
        assert_eq!(get("MemAvailable_bytes"), Some(9470952.0 * 1024.0));
        assert_eq!(get("Active_anon_bytes"), Some(3524712.0 * 1024.0));
        assert_eq!(get("Inactive_file_bytes"), Some(4177440.0 * 1024.0));
        assert_eq!(get("HugePages_Total"), Some(0.0), "no unit, no _bytes");
        assert_eq!(get("Hugepagesize_bytes"), Some(2048.0 * 1024.0));
        assert_eq!(fields.len(), 10);
    }

    #[test]
    fn malformed_meminfo_is_an_error() {
        assert!(parse_meminfo("").is_err());
        assert!(parse_meminfo("MemTotal 123 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: lots kB\n").is_err());
        assert!(parse_meminfo("MemTotal:\n").is_err());
        assert!(parse_meminfo("MemTotal: 1 MB\n").is_err());
        assert!(parse_meminfo("Mem Total: 1 kB\n").is_err());
    }

    #[test]
    fn loadavg_is_parsed() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 2/1234 56789\n").unwrap(),
            [0.52, 0.58, 0.59]
        );
        assert!(parse_loadavg("0.52 0.58\n").is_err());
        assert!(parse_loadavg("a b c\n").is_err());
        assert!(parse_loadavg("NaN 1 1\n").is_err());
        assert!(parse_loadavg("").is_err());
    }

    #[test]
    fn net_dev_is_parsed() {
        let devices = parse_net_dev(NET_DEV).unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[1].name, "eth0");
        assert_eq!(devices[1].counters[0], 98765432);
        assert_eq!(devices[1].counters[7], 17, "multicast");
        assert_eq!(devices[1].counters[8], 4567890, "transmit bytes");
        assert_eq!(devices[1].counters[11], 4, "transmit drop");
        let header_only: String = NET_DEV.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert_eq!(parse_net_dev(&header_only).unwrap(), vec![]);
        let short = format!("{header_only}eth0: 1 2 3\n");
        assert!(parse_net_dev(&short).is_err());
        let bad = format!("{header_only}eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x\n");
        assert!(parse_net_dev(&bad).is_err());
        let no_colon = format!("{header_only}eth0 1 2\n");
        assert!(parse_net_dev(&no_colon).is_err());
    }

    #[test]
    fn diskstats_are_parsed() {
        let disks = parse_diskstats(DISKSTATS).unwrap();
        assert_eq!(disks.len(), 5);
        assert_eq!(disks[1].device, "sda");
        assert_eq!(disks[1].counters.len(), 17);
        assert_eq!(disks[1].counters[2], 11089010);
        assert_eq!(disks[3].counters.len(), 11, "pre-4.18 kernel line");
        assert!(parse_diskstats("8 0 sda 1 2 3\n").is_err());
        assert!(parse_diskstats("8 0 sda 1 2 3 4 5 6 7 8 9 10 x\n").is_err());
        assert_eq!(parse_diskstats("\n").unwrap(), vec![]);
    }

    #[test]
    fn mounts_are_parsed_and_unescaped() {
        let mounts = parse_mounts(MOUNTS);
        assert_eq!(mounts.len(), 7, "the garbage line is skipped");
        assert_eq!(mounts[6].mount_point, "/mnt/my disk");
        assert_eq!(unescape_octal(r"a\011b\134c\0"), "a\tb\\c\\0");
    }

    #[test]
    fn default_filters_match_node_exporter() {
        let collector = NodeCollector::new(&NodeMetricsConfig::default());
        let filters = &collector.filters;
        for excluded in ["loop0", "sda1", "nvme0n1p1", "ram0", "zram0", "xvda1"] {
            assert!(filters.disk_devices.is_match(excluded), "{excluded}");
        }
        for kept in ["sda", "nvme0n1", "dm-0", "vdb", "md0"] {
            assert!(!filters.disk_devices.is_match(kept), "{kept}");
        }
        for excluded in ["sysfs", "proc", "cgroup", "cgroup2", "overlay", "squashfs", "nsfs"] {
            assert!(filters.fs_types.is_match(excluded), "{excluded}");
        }
        for kept in ["ext4", "xfs", "tmpfs", "nfs4", "btrfs"] {
            assert!(!filters.fs_types.is_match(kept), "{kept}");
        }
        for excluded in ["/proc", "/sys/fs/cgroup", "/dev/shm", "/var/lib/docker/overlay2/x"] {
            assert!(filters.mount_points.is_match(excluded), "{excluded}");
        }
        for kept in ["/", "/run", "/var/lib/docker", "/home", "/devices"] {
            assert!(!filters.mount_points.is_match(kept), "{kept}");
        }
    }

    #[test]
    fn rootfs_prefix_is_stripped() {
        let config = NodeMetricsConfig {
            rootfs_path: PathBuf::from("/host/root/"),
            ..NodeMetricsConfig::default()
        };
        let collector = NodeCollector::new(&config);
        assert_eq!(collector.strip_rootfs("/host/root"), "/");
        assert_eq!(collector.strip_rootfs("/host/root/var"), "/var");
        assert_eq!(collector.strip_rootfs("/host/rootless"), "/host/rootless");
        assert_eq!(collector.strip_rootfs("/etc"), "/etc");
        let plain = NodeCollector::new(&NodeMetricsConfig::default());
        assert_eq!(plain.strip_rootfs("/var"), "/var");
    }

    fn write_fixture(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        scrape
            .series
            .iter()
            .find(|s| s.labels.metric_name() == Some(name) && labels.iter().all(|(n, v)| s.labels.get(n) == Some(*v)))
            .map(|s| s.samples[0].value)
    }

    #[tokio::test]
    async fn collects_a_fixture_directory() {
        let proc_dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("data")).unwrap();
        let mounts = "/dev/sda2 / ext4 rw 0 0\n/dev/sdc1 /data xfs rw 0 0\n/dev/sdd1 /missing ext4 rw 0 0\nproc /proc proc rw 0 0\n";
        write_fixture(
            proc_dir.path(),
            &[
                ("stat", STAT),
                ("meminfo", MEMINFO),
                ("loadavg", "1.5 2.5 3.5 1/100 42\n"),
                ("net/dev", NET_DEV),
                ("diskstats", DISKSTATS),
                ("1/mounts", mounts),
            ],
        );
        let config = NodeMetricsConfig {
            enabled: true,
            proc_path: proc_dir.path().to_path_buf(),
            sys_path: PathBuf::from("/nonexistent"),
            rootfs_path: root.path().to_path_buf(),
        };
        let collector = NodeCollector::new(&config);
        let node = collector.collect(1_700_000_123_456).await;
        assert!(node.failed.is_empty(), "{:?}", node.failed);
        let scrape = &node.scrape;
        assert!(
            scrape
                .series
                .iter()
                .all(|s| s.samples == vec![Sample::new(1_700_000_123_456, s.samples[0].value)])
        );

        let user_hz = sys::user_hz();
        assert_eq!(
            value(scrape, NODE_CPU_SECONDS_TOTAL, &[("cpu", "0"), ("mode", "user")]),
            Some(600.0 / user_hz)
        );
        assert_eq!(
            value(scrape, NODE_CPU_SECONDS_TOTAL, &[("cpu", "1"), ("mode", "steal")]),
            Some(2.0 / user_hz)
        );
        assert_eq!(
            value(scrape, NODE_CPU_GUEST_SECONDS_TOTAL, &[("cpu", "0"), ("mode", "nice")]),
            Some(9.0 / user_hz)
        );
        assert_eq!(value(scrape, NODE_BOOT_TIME_SECONDS, &[]), Some(1_700_000_000.0));
        assert_eq!(value(scrape, NODE_CONTEXT_SWITCHES_TOTAL, &[]), Some(987_654.0));
        assert_eq!(value(scrape, NODE_FORKS_TOTAL, &[]), Some(4242.0));
        assert_eq!(value(scrape, NODE_PROCS_RUNNING, &[]), Some(3.0));
        assert_eq!(value(scrape, NODE_PROCS_BLOCKED, &[]), Some(1.0));
        assert_eq!(
            value(scrape, "node_memory_MemTotal_bytes", &[]),
            Some(16303412.0 * 1024.0)
        );
        assert_eq!(value(scrape, "node_memory_HugePages_Total", &[]), Some(0.0));
        assert_eq!(value(scrape, NODE_LOAD1, &[]), Some(1.5));
        assert_eq!(value(scrape, NODE_LOAD15, &[]), Some(3.5));
        assert_eq!(
            value(scrape, "node_network_receive_bytes_total", &[("device", "eth0")]),
            Some(98765432.0)
        );
        assert_eq!(
            value(scrape, "node_network_transmit_drop_total", &[("device", "eth0")]),
            Some(4.0)
        );
        assert_eq!(
            value(scrape, "node_network_receive_multicast_total", &[("device", "eth0")]),
            Some(17.0)
        );
        assert_eq!(
            value(scrape, "node_disk_read_bytes_total", &[("device", "sda")]),
            Some(11089010.0 * 512.0)
        );
        assert_eq!(
            value(scrape, "node_disk_io_time_seconds_total", &[("device", "sda")]),
            Some(259.456)
        );
        assert_eq!(
            value(scrape, "node_disk_flush_requests_total", &[("device", "sda")]),
            Some(10.0)
        );
        assert_eq!(
            value(scrape, "node_disk_writes_completed_total", &[("device", "nvme0n1")]),
            Some(6000.0)
        );
        assert_eq!(
            value(scrape, "node_disk_discards_completed_total", &[("device", "nvme0n1")]),
            None,
            "an 11-column line has no discard columns"
        );
        for excluded in ["loop0", "sda1", "nvme0n1p1"] {
            assert_eq!(
                value(scrape, "node_disk_reads_completed_total", &[("device", excluded)]),
                None
            );
        }
        assert_eq!(value(scrape, NODE_TIME_SECONDS, &[]), Some(1_700_000_123.456));
        let uname = scrape
            .series
            .iter()
            .find(|s| s.labels.metric_name() == Some(NODE_UNAME_INFO))
            .unwrap();
        assert_eq!(uname.labels.get("sysname"), Some("Linux"));
        assert!(uname.labels.get("release").is_some());

        // Filesystems: both real directories are stat'ed, the missing one is
        // an error, /proc is excluded.
        let fs = [("mountpoint", "/"), ("device", "/dev/sda2"), ("fstype", "ext4")];
        assert_eq!(value(scrape, NODE_FILESYSTEM_DEVICE_ERROR, &fs), Some(0.0));
        assert!(value(scrape, NODE_FILESYSTEM_SIZE_BYTES, &fs).unwrap() > 0.0);
        assert!(value(scrape, NODE_FILESYSTEM_FILES, &fs).is_some());
        assert!(value(scrape, NODE_FILESYSTEM_AVAIL_BYTES, &[("mountpoint", "/data")]).is_some());
        assert_eq!(
            value(scrape, NODE_FILESYSTEM_DEVICE_ERROR, &[("mountpoint", "/missing")]),
            Some(1.0)
        );
        assert_eq!(
            value(scrape, NODE_FILESYSTEM_SIZE_BYTES, &[("mountpoint", "/missing")]),
            None
        );
        assert_eq!(
            value(scrape, NODE_FILESYSTEM_DEVICE_ERROR, &[("mountpoint", "/proc")]),
            None
        );

        for group in [
            "cpu",
            "stat",
            "meminfo",
            "loadavg",
            "netdev",
            "diskstats",
            "filesystem",
            "time",
            "uname",
        ] {
            assert_eq!(
                value(scrape, NODE_SCRAPE_COLLECTOR_SUCCESS, &[("collector", group)]),
                Some(1.0),
                "{group}"
            );
        }
        // Metadata: one entry per family, with node-exporter's type.
        let meta = |name: &str| scrape.metadata.iter().find(|m| m.metric_family_name == name).cloned();
        assert_eq!(meta(NODE_CPU_SECONDS_TOTAL).unwrap().metric_type, MetricType::Counter);
        assert_eq!(
            meta("node_memory_MemFree_bytes").unwrap().metric_type,
            MetricType::Gauge
        );
        assert_eq!(
            meta("node_memory_MemFree_bytes").unwrap().help,
            "Memory information field MemFree_bytes."
        );
        let mut names: Vec<&str> = scrape.metadata.iter().map(|m| m.metric_family_name.as_str()).collect();
        let before = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), before, "one metadata entry per family");
        // Every series is unique.
        let mut labels: Vec<&Labels> = scrape.series.iter().map(|s| &s.labels).collect();
        let count = labels.len();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), count);
    }

    #[tokio::test]
    async fn missing_and_broken_files_skip_their_group_only() {
        let proc_dir = tempfile::tempdir().unwrap();
        write_fixture(
            proc_dir.path(),
            &[
                ("stat", STAT),
                ("meminfo", "MemTotal: 1 kB\nMemFree: lots kB\n"),
                ("loadavg", "garbage"),
                ("net/dev", "Inter-|\n face |\n  eth0: 1 2\n"),
                (
                    "diskstats",
                    "\u{0}\u{1}binary junk with enough fields 1 2 3 4 5 6 7 8 9 10 11\n",
                ),
            ],
        );
        let config = NodeMetricsConfig {
            enabled: true,
            proc_path: proc_dir.path().to_path_buf(),
            sys_path: PathBuf::from("/nonexistent"),
            rootfs_path: PathBuf::from("/nonexistent"),
        };
        let node = NodeCollector::new(&config).collect(1000).await;
        let mut failed = node.failed.clone();
        failed.sort_unstable();
        assert_eq!(failed, vec!["diskstats", "filesystem", "loadavg", "meminfo", "netdev"]);
        let scrape = &node.scrape;
        assert_eq!(
            value(scrape, NODE_SCRAPE_COLLECTOR_SUCCESS, &[("collector", "meminfo")]),
            Some(0.0)
        );
        assert_eq!(
            value(scrape, NODE_SCRAPE_COLLECTOR_SUCCESS, &[("collector", "cpu")]),
            Some(1.0)
        );
        assert_eq!(
            value(scrape, "node_memory_MemTotal_bytes", &[]),
            None,
            "a failed group reports nothing, not a partial read"
        );
        assert!(value(scrape, NODE_CPU_SECONDS_TOTAL, &[("cpu", "1"), ("mode", "idle")]).is_some());
        assert!(
            !scrape
                .metadata
                .iter()
                .any(|m| m.metric_family_name == "node_memory_MemTotal_bytes"),
            "metadata of a rolled-back group is dropped too"
        );

        let empty = tempfile::tempdir().unwrap();
        let config = NodeMetricsConfig {
            proc_path: empty.path().to_path_buf(),
            ..config
        };
        let node = NodeCollector::new(&config).collect(1000).await;
        let mut failed = node.failed.clone();
        failed.sort_unstable();
        assert_eq!(
            failed,
            vec!["cpu", "diskstats", "filesystem", "loadavg", "meminfo", "netdev", "stat"]
        );
    }

    #[tokio::test]
    async fn a_stuck_mount_is_not_asked_again() {
        let collector = NodeCollector::new(&NodeMetricsConfig::default());
        collector.stuck_mounts.lock().unwrap().insert("/stuck".to_owned());
        assert!(collector.spawn_statvfs("/stuck").is_none());
        let handle = collector.spawn_statvfs("/").unwrap();
        assert!(handle.await.unwrap().is_ok());
        assert!(
            !collector.stuck_mounts.lock().unwrap().contains("/"),
            "a returned call clears the mark"
        );
    }
}
