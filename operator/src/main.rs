//! `woodpecker-operator`: runs the WoodpeckerCluster controller, or prints the CRD.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use woodpecker_operator::admin::HttpAdminClient;
use woodpecker_operator::controller::{self, Settings};
use woodpecker_operator::leader::{LeaderElector, LeaseConfig, Tenure};
use woodpecker_operator::metrics::{self, Metrics};

#[cfg(test)]
mod cli_reference;

/// The Kubernetes operator for WoodpeckerCluster (woodpecker.zilliz.io/v1alpha1).
#[derive(Parser, Debug)]
#[command(name = "woodpecker-operator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller until SIGTERM/SIGINT.
    ///
    /// Uses the in-cluster service account, or $KUBECONFIG / ~/.kube/config outside a cluster.
    Run(RunArgs),
    /// Print the WoodpeckerCluster CustomResourceDefinition as YAML (for `kubectl apply -f -`).
    Crd,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Elect a leader over a coordination.k8s.io Lease so only one replica reconciles.
    #[arg(long, env = "WOODPECKER_OPERATOR_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "WOODPECKER_OPERATOR_LEASE_NAME", default_value = "woodpecker-operator-leader")]
    lease_name: String,
    /// Namespace of the leader-election Lease (default: the watched namespace, else the pod's
    /// namespace from POD_NAMESPACE, else "default").
    #[arg(long, env = "WOODPECKER_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// A follower takes over a Lease left unchanged this long, timed on its own clock (holders'
    /// timestamps are not compared across nodes), in seconds.
    #[arg(long, env = "WOODPECKER_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// A leader whose renewals have not succeeded for this long (a hung call included) stops
    /// reconciling at once and exits, in seconds.
    #[arg(long, env = "WOODPECKER_OPERATOR_LEASE_RENEW_DEADLINE_SECONDS", default_value_t = 10)]
    lease_renew_deadline_seconds: u64,
    /// Pause between lease acquire/renew attempts, in seconds.
    #[arg(long, env = "WOODPECKER_OPERATOR_LEASE_RETRY_SECONDS", default_value_t = 2)]
    lease_retry_seconds: u64,
    /// Address of the HTTP server for /metrics and /healthz.
    #[arg(long, env = "WOODPECKER_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WOODPECKER_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Timeout of every call to a LogStore pod's admin API, in seconds.
    #[arg(long, env = "WOODPECKER_OPERATOR_ADMIN_TIMEOUT_SECONDS", default_value_t = 3)]
    admin_timeout_seconds: u64,
    /// Maximum clusters reconciled concurrently.
    #[arg(long, env = "WOODPECKER_OPERATOR_CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let yaml = woodpecker_crds::try_crd_yaml().context("rendering the CRD")?;
            use std::io::Write as _;
            match std::io::stdout().lock().write_all(yaml.as_bytes()) {
                // `woodpecker-operator crd | head` closes the pipe early; that is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("writing the CRD to stdout"),
            }
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .init();
    let client = kube::Client::try_default().await.context("building the Kubernetes client")?;
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());

    let http = tokio::spawn(metrics::serve(args.metrics_addr, metrics.clone(), shutdown.clone()));
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));

    let settings = Settings { namespace: args.namespace.clone(), concurrency: args.concurrency, ..Settings::default() };
    let admin = Arc::new(HttpAdminClient::new(Duration::from_secs(args.admin_timeout_seconds)));

    let result = if args.leader_elect {
        let lease_ns = args
            .lease_namespace
            .or_else(|| args.namespace.clone())
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_string());
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "woodpecker-operator".to_string());
        let identity = format!("{host}_{:08x}", std::process::id() ^ rand_suffix());
        anyhow::ensure!(
            args.lease_retry_seconds < args.lease_renew_deadline_seconds
                && args.lease_renew_deadline_seconds < args.lease_duration_seconds,
            "need --lease-retry-seconds < --lease-renew-deadline-seconds < --lease-duration-seconds"
        );
        let lease = LeaseConfig {
            lease_duration: Duration::from_secs(args.lease_duration_seconds),
            renew_deadline: Duration::from_secs(args.lease_renew_deadline_seconds),
            retry_period: Duration::from_secs(args.lease_retry_seconds),
            ..LeaseConfig::new(&args.lease_name, &lease_ns, &identity)
        };
        let elector = LeaderElector::new(client.clone(), lease);
        let m = metrics.clone();
        let tenure = elector
            .lead(&shutdown, move |stop| {
                m.leader.set(1);
                controller::run(client, settings, admin, m, stop)
            })
            .await;
        metrics.leader.set(0);
        match tenure {
            Tenure::NeverLed => Ok(()),
            Tenure::Finished(res) => res.map_err(anyhow::Error::from),
            Tenure::Panicked => Err(anyhow::anyhow!("controller task panicked")),
            Tenure::Lost => {
                metrics.set_healthy(false);
                // Exit so the pod restarts as a follower; never reconcile without the lease.
                Err(anyhow::anyhow!("lost leadership"))
            }
        }
    } else {
        metrics.leader.set(1);
        controller::run(client, settings, admin, metrics.clone(), shutdown.clone()).await.map_err(anyhow::Error::from)
    };
    shutdown.cancel();
    signals.abort();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics server failed"),
        Err(e) => tracing::warn!(error = %e, "metrics server task failed"),
    }
    result
}

/// Some entropy for the lease identity so two processes in one pod never share it.
fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
