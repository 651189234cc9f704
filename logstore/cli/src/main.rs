//! `woodpecker`: the command-line client of the embedded Woodpecker WAL (quickstart, log administration,
//! bench). Errors are printed as one line on stderr with a non-zero exit status.

mod append;
mod args;
mod bench;
mod bench_latency;
mod ceiling;
#[cfg(test)]
mod cli_reference;
mod cluster_cmd;
mod cpu;
mod entry_format;
mod log_cmd;
mod peak_rss;
mod position;
mod progress;
mod quickstart;
mod setup;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server installs its subscriber once it has read its config (whose `trace` section may add
    // OTLP export): `init_server_tracing`.
    if !matches!(cli.command, Command::Server(_)) {
        init_tracing();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // The server handles its own signals (a graceful stop of up to 30 s, a second signal exits).
        if !matches!(cli.command, Command::Server(_)) {
            tokio::spawn(force_exit_on_interrupt());
        }
        run(cli).await
    });
    // A blocked stdin read must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let Cli { global, command } = cli;
    if let Command::Log(cmd) = &command {
        log_cmd::check_args(cmd)?;
    }
    // The server resolves its own configuration (CONFIG_FILE, overlays, no zero-setup default); the
    // cluster commands need none.
    let cfg = match &command {
        Command::Server(_) | Command::Cluster(_) => None,
        _ => Some(setup::resolve_config(&global)?),
    };
    match (command, cfg) {
        (Command::Server(args), _) => {
            woodpecker_server::run(args, global.config, global.data_dir, args::VERSION, init_server_tracing).await
        }
        (Command::Cluster(cmd), _) => cluster_cmd::run(cmd).await,
        (Command::Log(cmd), Some(cfg)) => {
            let client = setup::open_client(cfg).await?;
            let result = log_cmd::run(&client, cmd).await;
            client.close().await;
            result
        }
        (Command::Quickstart(args), Some(cfg)) => quickstart::run(&global, cfg, args).await,
        (Command::Bench(args), Some(cfg)) => bench::run(cfg, args).await.context("bench failed"),
        (_, None) => anyhow::bail!("no configuration resolved"),
    }
}

/// Commands that run long stop gracefully on Ctrl-C (writers flush, readers close). Any other phase
/// would ignore it once a handler is installed, so: a second Ctrl-C, or the first one left unanswered
/// for a while, ends the process.
async fn force_exit_on_interrupt() {
    const GRACE: Duration = Duration::from_secs(10);
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(GRACE, tokio::signal::ctrl_c()).await;
    eprintln!("error: interrupted");
    std::process::exit(130);
}

/// Logs go to stderr, warnings and errors only unless RUST_LOG says otherwise.
fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_env_filter(log_filter()).with_writer(std::io::stderr).try_init();
}

/// The server's logs as [`init_tracing`] writes them, plus its spans to an OTLP collector when export
/// is configured. Each layer has its own filter: RUST_LOG (default warn) does not decide what is exported.
fn init_server_tracing(otlp: Option<woodpecker_server::telemetry::OtlpLayer<tracing_subscriber::Registry>>) {
    use tracing_subscriber::prelude::*;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(log_filter());
    let _ = tracing_subscriber::registry().with(otlp).with(logs).try_init();
}

/// RUST_LOG, else warnings and errors.
fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
}

/// The error and its causes on one line. Causes whose text the message already contains (errors that
/// print their source and also return it from `source()`) are not repeated; newlines become spaces.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_do_not_repeat_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(io).context("cannot read x: gone").context("cannot load");
        assert_eq!(one_line(&e), "cannot load: cannot read x: gone");
        let e = anyhow::anyhow!("two\nlines");
        assert_eq!(one_line(&e), "two lines");
    }
}
