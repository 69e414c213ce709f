//! `hpc-cache-operator`: run the operator, print its CRD, or run the Azure simulator.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use hpc_cache_operator::reconcile;
use tracing_subscriber::{EnvFilter, fmt};

#[derive(Parser)]
#[command(
    name = "hpc-cache-operator",
    version,
    about = "Kubernetes operator for Azure HPC Cache with customer-managed keys"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "HPCC_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (kubeconfig from KUBECONFIG/~/.kube/config, or in-cluster; Azure settings from the environment).
    // A flag given twice takes its last value (extra arguments after a deployment's own).
    #[command(args_override_self = true)]
    Run(RunArgs),
    /// Print the commands that grant a cache's identity access to its key (keyAccess: Manual), from the live object.
    #[command(name = "grant-command")]
    Grant(hpc_cache_operator::grant_command::Args),
    /// Print the HpcCache CustomResourceDefinition as YAML.
    Crd,
    /// Run the local Azure simulator (ARM, Key Vault, Entra) on loopback (builds with the `simulator` feature).
    #[cfg(feature = "simulator")]
    Simulate(hpcc_sim::SimulateArgs),
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "HPCC_NAMESPACE")]
    namespace: Option<String>,
    /// Reconcile only objects matching this label selector (to shard across operator instances).
    #[arg(long, env = "HPCC_LABEL_SELECTOR")]
    selector: Option<String>,
    /// Reconciles running at once, both kinds together (the waiting ones go by urgency, then in order).
    #[arg(long, env = "HPCC_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Seconds between looks at a cache in a transitional phase.
    #[arg(long, env = "HPCC_POLL_SECONDS", default_value_t = 15.0)]
    poll_seconds: f64,
    /// Seconds between looks at a Ready or Stalled cache.
    #[arg(long, env = "HPCC_RESYNC_SECONDS", default_value_t = 600)]
    resync_seconds: u64,
    /// Seconds vault, key and identity facts are reused before Azure is asked again.
    #[arg(long, env = "HPCC_FACTS_TTL_SECONDS", default_value_t = 60)]
    facts_ttl_seconds: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "HPCC_METRICS_ADDR", default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,
    /// This cluster's name in the owner tag of every cache it manages (`cluster/namespace/name`), so another
    /// cluster never updates or deletes them. Default: the UID of the kube-system namespace.
    #[arg(long, env = "HPCC_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Reconcile policy of objects without the hpccache.io/reconcile-policy annotation: manage, skip or
    /// detach-on-delete.
    #[arg(long, env = "HPCC_DEFAULT_RECONCILE_POLICY", default_value = "manage")]
    default_reconcile_policy: hpcc_api::v1alpha1::ReconcilePolicy,
    /// Object id of the "HPC Cache Resource Provider" service principal in your tenant (`az ad sp show --id
    /// 4392ab71-2ce2-4b0d-8770-b352745c73f5 --query id`): AmlFilesystem blob integration grants it storage roles.
    #[arg(long, env = "HPCC_STORAGE_CACHE_PROVIDER_PRINCIPAL_ID")]
    storage_cache_provider_principal_id: Option<String>,
    /// Name of this instance in events and in the leader-election lease (defaults to $POD_NAME).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Run only while holding a Lease, so that several replicas never act on the same cache at once.
    #[arg(long, env = "HPCC_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the leader-election Lease (defaults to $POD_NAMESPACE, then "default").
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Act in Azure only with a namespace's own credential (the Secret `hpccache-credential` in the object's
    /// namespace); without it an object is Stalled (NamespaceCredentialMissing) instead of using the operator's.
    #[arg(long, env = "HPCC_REQUIRE_NAMESPACE_CREDENTIALS")]
    require_namespace_credentials: bool,
}

/// Name of the leader-election Lease.
const LEASE_NAME: &str = "hpc-cache-operator";

/// Keeps glibc's allocator from holding memory the operator no longer uses (see `make bench`: peak RSS at 1000
/// objects). Threads that allocate concurrently get their own heap arenas (up to 8 per core) and memory freed in one
/// arena is not reused by another: two arenas are plenty for the operator's few threads. And a large block (a
/// resource group's cache list is megabytes) raises glibc's dynamic mmap threshold once freed, after which such
/// blocks come from the heap and fragment it: a fixed threshold keeps them mapped and returned on free. An explicit
/// `MALLOC_ARENA_MAX` / `MALLOC_MMAP_THRESHOLD_` in the environment still wins.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets tunables of the allocator; it is called before the operator's own threads
        // allocate, and glibc applies them to later allocations.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tune_allocator();
    // Also the kubectl plugin: `kubectl hpcc grant-command NAME` when installed as `kubectl-hpcc`.
    let cli: Cli = hpc_cache_operator::grant_command::parse();
    let filter = EnvFilter::try_from_env("HPCC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init()
        }
        LogFormat::Json => fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init(),
    }
    // kube and reqwest both use rustls; pin the process-wide provider to aws-lc-rs once.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Command::Grant(args) => hpc_cache_operator::grant_command::main(args).await,
        Command::Crd => print!("{}", hpcc_api::v1alpha1::crd_yaml()),
        Command::Version => println!("hpc-cache-operator {}", env!("CARGO_PKG_VERSION")),
        #[cfg(feature = "simulator")]
        Command::Simulate(args) => hpcc_sim::run_cli(args).await?,
        Command::Run(args) => run(args).await?,
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let metrics = reconcile::Metrics::new();
    let azure_cfg = hpcc_azure::AzureConfig::from_env()?;
    let azure = hpcc_azure::Azure::new(azure_cfg, Some(std::sync::Arc::new(metrics.clone()))).await?;
    let client = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
            kube::Client::try_from(config)?
        }
        None => kube::Client::try_default().await?,
    };
    let settings = reconcile::Settings {
        namespace: args.namespace,
        label_selector: args.selector,
        concurrency: args.concurrency,
        timing: hpcc_core::Timing {
            poll: Duration::from_secs_f64(args.poll_seconds.max(0.05)),
            resync: Duration::from_secs(args.resync_seconds.max(1)),
        },
        facts_ttl: Duration::from_secs(args.facts_ttl_seconds),
        instance: args.instance.clone(),
        require_namespace_credentials: args.require_namespace_credentials,
        cluster_name: match args.cluster_name.clone() {
            Some(name) => name,
            None => default_cluster_name(&client).await?,
        },
        default_policy: args.default_reconcile_policy,
        storage_cache_provider_principal_id: args.storage_cache_provider_principal_id.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    tokio::spawn(metrics.clone().serve(listener));
    let leading = args.leader_election;
    let identity = args.instance.clone().unwrap_or_else(|| format!("hpc-cache-operator-{}", uuid::Uuid::new_v4()));
    let lease_namespace = args.leader_election_namespace.clone().unwrap_or_else(|| "default".into());
    let ctx = reconcile::Context::new(client.clone(), azure, metrics.clone(), settings);
    if !leading {
        return reconcile::run(ctx, std::future::pending()).await;
    }
    // A standby is ready too: it serves and can read what it would manage. Readiness that waited for the Lease
    // would hang every rolling update (the new pod never ready while the old one leads).
    reconcile::check_crd(&ctx).await?;
    metrics.set_ready();
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(&lease_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(lease = LEASE_NAME, namespace = %lease_namespace, %identity, "waiting to become the leader");
    while !*leader.borrow_and_update() {
        leader.changed().await?;
    }
    tracing::info!(%identity, "leading");
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let watch_leadership = tokio::spawn(async move {
        while *leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                break;
            }
        }
        let _ = lost_tx.send(());
        leader // kept alive until here so the lease is not released early
    });
    reconcile::run(ctx, async move {
        let _ = lost_rx.await;
    })
    .await?;
    if watch_leadership.is_finished() {
        // Leadership was lost: exit non-zero so the pod restarts and campaigns again.
        anyhow::bail!("lost the leader-election lease {lease_namespace}/{LEASE_NAME}");
    }
    // Shut down by a signal: hand the lease over at once by releasing it.
    watch_leadership.abort();
    let _ = lease_task.await;
    Ok(())
}

/// The UID of the kube-system namespace: stable for the life of a cluster and different in every cluster.
async fn default_cluster_name(client: &kube::Client) -> anyhow::Result<String> {
    let api = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let ns = api.get_metadata("kube-system").await.map_err(|e| {
        anyhow::anyhow!("cannot read the kube-system namespace to name this cluster (set --cluster-name): {e}")
    })?;
    ns.metadata.uid.ok_or_else(|| anyhow::anyhow!("the kube-system namespace has no uid; set --cluster-name"))
}
