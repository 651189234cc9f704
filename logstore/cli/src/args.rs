//! Command-line syntax of `woodpecker` (clap derive). Parsing only; every command lives in its own module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Woodpecker write-ahead log, embedded mode: segments go straight to local files or object storage.
///
/// Without --config every command uses the zero-setup default: local segment files and an embedded
/// metadata store, both under ./woodpecker-data (or --data-dir). Try `woodpecker quickstart`.
#[derive(Debug, Parser)]
#[command(name = "woodpecker", version = VERSION, propagate_version = true, after_help = EXAMPLES)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `woodpecker --version`: the workspace version and the git commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WOODPECKER_GIT_COMMIT"), ")");

const EXAMPLES: &str = "Examples:
  woodpecker quickstart
  woodpecker log write orders --create --count 1000 --payload-size 1KiB -p source=cli
  printf 'a\\nb\\n' | woodpecker log write orders --stdin
  woodpecker log read orders --from 0/10 --count 5 --format json
  woodpecker log info orders
  woodpecker --config woodpecker.yaml bench --duration 10 --entry-size 1KiB,64KiB";

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// woodpecker.yaml to use instead of the zero-setup default (local files + embedded metadata).
    #[arg(long, global = true, value_name = "PATH", env = "WOODPECKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (woodpecker.storage.rootPath): segment files and the embedded metadata store.
    /// Defaults to ./woodpecker-data without --config, and overrides the file's rootPath with it.
    #[arg(long, global = true, value_name = "DIR", env = "WOODPECKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, write, read, inspect, truncate and delete logs.
    #[command(subcommand)]
    Log(LogCommand),
    /// Zero-setup tour: create a log, write a few thousand entries, read them back, show where data lives.
    Quickstart(QuickstartArgs),
    /// Measure write throughput and latency against the storage's own ceiling (raw fsync'ed writes or PUTs).
    Bench(BenchArgs),
    /// Inspect a LogStore cluster (service mode) through a node's admin HTTP port.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run a LogStore server (service mode): staged storage, the gRPC LogStore service, gossip, admin HTTP.
    ///
    /// Every flag also reads the environment variable named in its help. --config defaults to
    /// $CONFIG_FILE, then /woodpecker/configs/woodpecker.yaml; --data-dir to $DATA_DIR, then the file's
    /// woodpecker.storage.rootPath. The admin HTTP port is $METRICS_PORT (default 9091).
    Server(woodpecker_server::ServerArgs),
}

/// `woodpecker cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members as one node sees them (GET /admin/memberlist): name, state, liveness, zone, region,
    /// resource group, service address and load.
    Status {
        /// Admin HTTP addresses (host:METRICS_PORT, default port 9091) of nodes to ask, comma-separated;
        /// the first that answers is used.
        #[arg(long, value_delimiter = ',', required = true, value_name = "HOST:PORT")]
        admin: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Seconds to wait for each node.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
}

/// `woodpecker log …`.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Create a log.
    Create {
        /// Log name: 1 to 255 bytes, no '/', '\' or control characters.
        name: String,
        /// Succeed when the log already exists.
        #[arg(long)]
        if_absent: bool,
    },
    /// List logs, optionally only those whose name starts with PREFIX.
    List {
        /// Name prefix.
        prefix: Option<String>,
    },
    /// Show a log's id, truncation point and segments (state, last entry, size).
    Info {
        /// Log name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Append entries (asynchronously, in order) and print the last position and the throughput.
    Write(WriteArgs),
    /// Print entries from a position up to the end of the log as it was when the read started.
    Read(ReadArgs),
    /// Follow the log from its current end, printing new entries until Ctrl-C (or --timeout-secs idle).
    Tail(TailArgs),
    /// Mark every entry up to and including SEG/ENTRY as truncated.
    Truncate {
        /// Log name.
        name: String,
        /// Truncation point, as SEGMENT/ENTRY (e.g. 0/99).
        #[arg(allow_hyphen_values = true)]
        position: String,
        /// Run one maintenance pass afterwards (marks, compacts and deletes segments past the retention TTL).
        #[arg(long)]
        cleanup: bool,
    },
    /// Delete a log: its stored data, then its metadata.
    Delete {
        /// Log name.
        name: String,
        /// Succeed when the log does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

/// `woodpecker log write`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Log name.
    pub name: String,
    /// Number of entries to write (not with --stdin).
    #[arg(long, short = 'n', default_value_t = 1, conflicts_with = "stdin")]
    pub count: u64,
    /// Payload of every entry: this many generated bytes (`entry-<i>` padded with '.').
    #[arg(long, value_name = "BYTES", value_parser = parse_size_arg, conflicts_with_all = ["message", "stdin"])]
    pub payload_size: Option<u64>,
    /// Payload of every entry: this text. Default: `entry-<i>`.
    #[arg(long, short = 'm', value_name = "TEXT", conflicts_with = "stdin")]
    pub message: Option<String>,
    /// One entry per line of standard input (the newline is not part of the payload).
    #[arg(long)]
    pub stdin: bool,
    /// Property added to every entry, as KEY=VALUE; repeat for more.
    #[arg(long = "property", short = 'p', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// Create the log first when it does not exist.
    #[arg(long)]
    pub create: bool,
}

/// `woodpecker log read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Log name.
    pub name: String,
    /// Where to start: earliest (after the truncation point), latest, or SEGMENT/ENTRY.
    #[arg(long, default_value = "earliest", value_name = "POSITION", allow_hyphen_values = true)]
    pub from: String,
    /// Stop after this many entries.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Give up when no entry arrives for this many seconds.
    #[arg(long, default_value_t = 10, value_name = "T")]
    pub timeout_secs: u64,
    /// Keep waiting for new entries at the end of the log (like `log tail`).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Output format: text (position, payload, properties) or json (one object per line).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// `woodpecker log tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Log name.
    pub name: String,
    /// Stop after this many entries.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Stop when no entry arrives for this many seconds (default: follow until Ctrl-C).
    #[arg(long, value_name = "T")]
    pub timeout_secs: Option<u64>,
    /// Output format: text or json lines.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// How entries and reports are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

/// `woodpecker quickstart`.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Log to write to (created when absent).
    #[arg(long, default_value = "quickstart")]
    pub log: String,
    /// Entries to write and read back.
    #[arg(long, short = 'n', default_value_t = 5000)]
    pub count: u64,
    /// Payload size of each entry.
    #[arg(long, default_value = "1KiB", value_parser = parse_size_arg, value_name = "BYTES")]
    pub payload_size: u64,
}

/// `woodpecker bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How long each write run lasts (e.g. 10, 10s, 500ms; a plain number is seconds).
    #[arg(long, value_parser = parse_duration_arg, value_name = "DURATION")]
    pub duration: Option<std::time::Duration>,
    /// Stop each write run after this many payload bytes instead (e.g. 512MiB).
    #[arg(long, value_parser = parse_size_arg, value_name = "BYTES", conflicts_with = "duration")]
    pub total_bytes: Option<u64>,
    /// Entry payload sizes, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_size_arg, default_value = "1KiB,64KiB", value_name = "SIZES")]
    pub entry_size: Vec<u64>,
    /// Writes in flight at once (1 = one synchronous write at a time). Default: enough to keep every
    /// flush slot busy (maxFlushSize x (maxFlushThreads + 2)), within maxBytes.
    #[arg(long = "async", value_name = "WINDOW")]
    pub window: Option<usize>,
    /// Latency profile instead of throughput: the backend's single-operation latency, then synchronous
    /// writes (one at a time), then open-loop runs at 1%, 10%, 50% and 90% of the measured ceiling, each
    /// with p50/p99/p999 (--duration per run, default 5s).
    #[arg(long, conflicts_with_all = ["total_bytes", "window"])]
    pub latency: bool,
    /// One open-loop run at this rate instead (entries/s, e.g. 2000 or 2000/s; or bytes/s, e.g. 10MiB/s):
    /// each entry is sent at its scheduled time and its latency counts from then, beside the backend's
    /// single-operation latency.
    #[arg(long, value_parser = crate::bench_latency::parse_rate, value_name = "RATE", conflicts_with_all = ["total_bytes", "window", "latency"])]
    pub rate: Option<crate::bench_latency::Rate>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Keep the benchmark logs instead of deleting them afterwards.
    #[arg(long)]
    pub keep_logs: bool,
}

/// A byte size: a number with an optional K/M/G/T suffix (binary).
fn parse_size_arg(text: &str) -> Result<u64, String> {
    woodpecker_core::config::units::parse_size(text)
}

/// A duration: a plain number of seconds, or a number with a unit (500ms, 10s, 2m).
fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    let d = woodpecker_core::config::units::parse_duration(text, std::time::Duration::from_secs(1))?;
    if d.is_zero() {
        return Err(format!("invalid duration `{text}`: must be longer than zero"));
    }
    Ok(d)
}

/// A property given as KEY=VALUE (the value may contain '='; the key must not be empty).
pub fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("invalid property `{text}`: expected KEY=VALUE with a non-empty key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn properties_split_at_the_first_equals_sign() {
        assert_eq!(parse_property("k=v=w"), Ok(("k".into(), "v=w".into())));
        assert_eq!(parse_property("k="), Ok(("k".into(), String::new())));
        assert!(parse_property("=v").is_err());
        assert!(parse_property("kv").is_err());
    }

    #[test]
    fn durations_are_seconds_unless_a_unit_is_given() {
        assert_eq!(parse_duration_arg("2"), Ok(std::time::Duration::from_secs(2)));
        assert_eq!(parse_duration_arg("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert!(parse_duration_arg("0").is_err());
        assert!(parse_duration_arg("soon").is_err());
    }

    #[test]
    fn bench_entry_sizes_are_a_list() {
        let cli = Cli::try_parse_from(["woodpecker", "bench", "--entry-size", "1KiB,4k"]).map_err(|e| e.to_string());
        let Ok(Cli { command: Command::Bench(b), .. }) = cli else { panic!("bench did not parse: {cli:?}") };
        assert_eq!(b.entry_size, vec![1024, 4096]);
    }
}
