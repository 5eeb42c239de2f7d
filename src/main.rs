//! The `pgrouter` command: CLI, logging, configuration, runtime. Wiring only.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Exit status for a configuration error (`EX_CONFIG` would be 78; sysexits' `EX_USAGE` is what
/// operators' tooling expects from a bad invocation or file).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "pgrouter",
    version = env!("PGROUTER_LONG_VERSION"),
    about = "PostgreSQL read/write-splitting and high-availability router"
)]
struct Cli {
    /// Configuration file (when no subcommand is given, runs the router with it).
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `pgrouter_proxy=debug` (default: the RUST_LOG variable, else `info`).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the router (the default).
    Run,
    /// Validate the configuration and print it as it will be used, with secrets masked.
    Check,
    /// Show how pgrouter classifies a statement: where it may run, the rule that decided, and its
    /// effects on the session. Uses `routing` from --config when given.
    Explain {
        /// The SQL text (may hold several statements).
        sql: String,
    },
    /// Ask a running pgrouter's `/health` (exit 0 when it answers 200): a container
    /// HEALTHCHECK that needs no shell or curl in the image.
    Health {
        /// The admin address (default: `admin_listen` from --config, else 127.0.0.1:9930).
        #[arg(long, value_name = "IP:PORT")]
        admin: Option<std::net::SocketAddr>,
        /// Ask `/ready` instead of `/health`.
        #[arg(long)]
        ready: bool,
        /// Sleep this long first, e.g. `5s`: a Kubernetes preStop hook that keeps the pod
        /// serving while its endpoint is removed (the image has no shell or `sleep`).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        wait: Option<std::time::Duration>,
    },
    /// Print a shell completion script, e.g. `pgrouter completions bash >
    /// /usr/share/bash-completion/completions/pgrouter`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `pgrouter man > pgrouter.1`.
    Man,
    /// Turn a Pgpool-II configuration into pgrouter's: the configuration goes to stdout (or
    /// -o FILE), what became of every parameter to stderr (mapped, not needed, UNSUPPORTED).
    #[command(name = "import-pgpool")]
    ImportPgpool {
        /// Pgpool-II's pgpool.conf.
        pgpool_conf: PathBuf,
        /// Its pool_hba.conf, for `access:` rules.
        #[arg(long, value_name = "FILE")]
        pool_hba: Option<PathBuf>,
        /// Its pool_passwd, for `users:`.
        #[arg(long, value_name = "FILE")]
        pool_passwd: Option<PathBuf>,
        /// Pgpool-II's key file (.pgpoolkey), to decrypt pool_passwd's AES entries (default:
        /// $PGPOOLKEYFILE).
        #[arg(long, value_name = "FILE", env = "PGPOOLKEYFILE")]
        pgpool_key: Option<PathBuf>,
        /// Write the configuration here instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// `pgrouter import-pgpool`: reads the files, writes the configuration and the report.
fn import_pgpool(
    conf: &std::path::Path,
    hba: Option<&std::path::Path>,
    passwd: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let pgpool_conf = read(conf)?;
    let pool_hba = hba.map(read).transpose()?;
    let pool_passwd = passwd.map(read).transpose()?;
    // As Pgpool-II: the key is the file's first line.
    let pgpool_key = key
        .map(read)
        .transpose()?
        .map(|k| k.lines().next().unwrap_or_default().to_owned());
    let import = pgrouter_import::import(pgrouter_import::Inputs {
        pgpool_conf: &pgpool_conf,
        pool_hba: pool_hba.as_deref(),
        pool_passwd: pool_passwd.as_deref(),
        pgpool_key: pgpool_key.as_deref(),
    })
    .with_context(|| format!("importing {}", conf.display()))?;
    let header = format!(
        "# pgrouter configuration imported from {} by pgrouter import-pgpool.\n\
         # What became of each Pgpool-II parameter: see the report on stderr, and\n\
         # docs/migrating-from-pgpool.md. Check it with: pgrouter check --config FILE\n",
        conf.display()
    );
    let text = format!("{header}{}", import.yaml);
    match output {
        Some(path) => {
            // It may hold passwords: readable by its owner only.
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("writing {}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .and_then(|()| file.write_all(text.as_bytes()))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{text}"),
    }
    for line in &import.report {
        eprintln!("{line}");
    }
    let unsupported = import
        .report
        .iter()
        .filter(|l| matches!(l.outcome, pgrouter_import::Outcome::Unsupported(_)))
        .count();
    eprintln!(
        "pgrouter: {} parameters and lines read, {unsupported} unsupported",
        import.report.len()
    );
    Ok(())
}

/// What `pgrouter completions` and `pgrouter man` are generated from: this command line
/// definition, so they never drift from it.
fn command_definition() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    match &cli.command {
        Some(Command::Completions { shell }) => {
            let mut command = command_definition();
            clap_complete::generate(*shell, &mut command, "pgrouter", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::ImportPgpool {
            pgpool_conf,
            pool_hba,
            pool_passwd,
            pgpool_key,
            output,
        }) => {
            return match import_pgpool(
                pgpool_conf,
                pool_hba.as_deref(),
                pool_passwd.as_deref(),
                pgpool_key.as_deref(),
                output.as_deref(),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgrouter: {e:#}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Some(Command::Man) => {
            return match clap_mangen::Man::new(command_definition()).render(&mut std::io::stdout())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgrouter: writing the man page: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    if let Some(Command::Explain { sql }) = &cli.command {
        return explain(cli.config.as_deref(), sql);
    }
    if let Some(Command::Health { admin, ready, wait }) = &cli.command {
        if let Some(wait) = wait {
            std::thread::sleep(*wait);
        }
        return health(cli.config.as_deref(), *admin, *ready);
    }
    let Some(path) = cli.config.as_deref() else {
        eprintln!("pgrouter: --config FILE is required (see config.example.yaml)");
        return ExitCode::from(EXIT_CONFIG);
    };
    let config = match pgrouter::config::load(path, &pgrouter::config::ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgrouter: invalid configuration {}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match serde_yaml_ng::to_string(&config) {
            Ok(text) => {
                if let Err(e) = pgrouter_proxy::tls::acceptor(&config.tls) {
                    eprintln!("pgrouter: invalid configuration {}: {e}", path.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
                if let Err(e) = pgrouter_proxy::tls::server_tls(&config.server_tls) {
                    eprintln!("pgrouter: invalid configuration {}: {e}", path.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
                if let Err(e) = pgrouter_topology::HttpClient::new(&config.topology.patroni) {
                    eprintln!("pgrouter: invalid configuration {}: {e}", path.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
                for warning in pgrouter::config::access::warnings(
                    &config.access,
                    config.tls.mode != pgrouter::config::TlsMode::Disable,
                ) {
                    eprintln!("pgrouter: warning: {warning}");
                }
                println!("# {}: OK", path.display());
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pgrouter: cannot print configuration: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Explain { .. }
        | Command::Health { .. }
        | Command::Completions { .. }
        | Command::ImportPgpool { .. }
        | Command::Man => ExitCode::SUCCESS,
        Command::Run => match run(config, path.to_path_buf()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("pgrouter: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `pgrouter explain "SQL"`: the classification, for users debugging routing.
fn explain(config: Option<&std::path::Path>, sql: &str) -> ExitCode {
    let routing = match config {
        Some(path) => match pgrouter::config::load(path, &pgrouter::config::ProcessEnv) {
            Ok(c) => c.routing,
            Err(e) => {
                eprintln!("pgrouter: invalid configuration {}: {e}", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => pgrouter::config::RoutingConfig::default(),
    };
    print!("{}", pgrouter::explain(&routing, sql));
    ExitCode::SUCCESS
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    pgrouter::config::Duration::parse(text).map(|d| d.get())
}

/// `pgrouter health`: one GET to the admin endpoint, with a short timeout.
fn health(
    config: Option<&std::path::Path>,
    admin: Option<std::net::SocketAddr>,
    ready: bool,
) -> ExitCode {
    use std::io::{Read, Write};
    let addr = match (admin, config) {
        (Some(a), _) => a,
        (None, Some(path)) => match pgrouter::config::load(path, &pgrouter::config::ProcessEnv) {
            Ok(c) => c.admin_listen,
            Err(e) => {
                eprintln!("pgrouter: invalid configuration {}: {e}", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (None, None) => std::net::SocketAddr::from(([127, 0, 0, 1], 9930)),
    };
    let path = if ready { "/ready" } else { "/health" };
    let timeout = std::time::Duration::from_secs(3);
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.take(64 * 1024).read_to_string(&mut response)?;
        Ok(response)
    })();
    match answer {
        Ok(r) if r.starts_with("HTTP/1.1 200 ") => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!(
                "pgrouter: {path} on {addr}: {}",
                r.lines().next().unwrap_or("no answer")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pgrouter: {path} on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: pgrouter::config::Config, config_path: std::path::PathBuf) -> anyhow::Result<()> {
    pgrouter_proxy::tls::acceptor(&config.tls)?;
    pgrouter_proxy::tls::server_tls(&config.server_tls)?;
    pgrouter_topology::HttpClient::new(&config.topology.patroni).map_err(anyhow::Error::msg)?;
    for warning in pgrouter::config::access::warnings(
        &config.access,
        config.tls.mode != pgrouter::config::TlsMode::Disable,
    ) {
        tracing::warn!("{warning}");
    }
    // The main thread runs the accept loops, health checks, the admin listener and upkeep. With
    // `worker_threads` 1 (the default: on the small machines routers usually share with
    // PostgreSQL it spends the least CPU per transaction) it runs the sessions too; above 1
    // they run on that many worker threads, each with its own runtime, a session staying on
    // one (see `pgrouter_proxy::workers` and docs/benchmarks.md).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listeners = pgrouter::bind(&config)
            .await
            .map_err(|(addr, e)| anyhow::anyhow!("listening on {addr}: {e}"))?;
        let optional = |a: Option<std::net::SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
        let unix_socket = config.unix_socket_path().map_or_else(|| "off".to_owned(), |p| p.display().to_string());
        tracing::info!(listen = %config.listen, primary_listen = %optional(config.primary_listen),
            read_only_listen = %optional(config.read_only_listen), unix_socket = %unix_socket, admin_listen = %config.admin_listen,
            version = env!("CARGO_PKG_VERSION"), "pgrouter listening");
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        pgrouter::run(config, Some(config_path), listeners, shutdown).await;
        tracing::info!("pgrouter stopped");
        Ok(())
    })
}

/// First SIGTERM/SIGINT: stop accepting and close sessions. A second one: exit at once.
async fn watch_signals(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler");
            return;
        }
    };
    for n in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        if n == 0 {
            tracing::info!("shutdown requested");
            shutdown.cancel();
        } else {
            tracing::warn!("second shutdown signal: exiting now");
            std::process::exit(1);
        }
    }
}

fn init_tracing(cli: &Cli) {
    use tracing_subscriber::filter::{EnvFilter, Targets};
    let spec = match &cli.log_level {
        // A bare level is pgrouter's: the libraries' own debug output (every health-check query,
        // every parser step) is kept at info unless a directive asks for it.
        Some(f) if !f.contains(['=', ',']) => format!("{f},tokio_postgres=info,sqlparser=info"),
        Some(f) => f.clone(),
        None => std::env::var("RUST_LOG")
            .ok()
            .filter(|f| !f.trim().is_empty())
            .unwrap_or_else(|| "info".into()),
    };
    // Plain `target=level` directives (the usual case) make a static filter, decided once per
    // call site. `EnvFilter` is kept for span and field directives (`[session{user=app}]=debug`):
    // it looks every span up under a lock shared by all threads each time a task enters or
    // leaves it, and every session task enters its span on each poll.
    let plain = !spec.contains(['[', '{']);
    match spec.parse::<Targets>() {
        Ok(targets) if plain => install_tracing(targets, cli.log_format),
        _ => install_tracing(
            EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info")),
            cli.log_format,
        ),
    }
}

fn install_tracing<F>(filter: F, format: LogFormat)
where
    F: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(output).init(),
        LogFormat::Json => registry.with(output.json()).init(),
    }
}
