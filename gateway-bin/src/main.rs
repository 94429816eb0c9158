//! The `towergate` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// See the `mimalloc` feature in `Cargo.toml`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "towergate",
    version,
    about = "An API gateway made of Tower layers"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TOWERGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Worker threads of the runtime (default: one per core); 1 runs
    /// Tokio's current-thread scheduler on the main thread.
    #[arg(long, global = true, env = "TOWERGATE_WORKER_THREADS")]
    worker_threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway with a configuration file (YAML or TOML).
    Run {
        /// The configuration file; reloaded when it changes and on SIGHUP.
        #[arg(short, long, env = "TOWERGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every error with its path.
    Check {
        /// The configuration file.
        #[arg(short, long, env = "TOWERGATE_CONFIG")]
        config: PathBuf,
    },
    /// Run the gateway with an embedded configuration in front of three
    /// in-process demo services, and print curl lines to try.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // OpenTelemetry export is set up once, from the file given to `run`; a
    // reload does not change it.
    let tracing_cfg = match &cli.command {
        Command::Run { config } => towergate::config::load_file(config)
            .ok()
            .and_then(|c| c.observability.tracing),
        _ => None,
    };
    // One worker: Tokio's current-thread scheduler, on this thread. It
    // runs the same tasks as a multi-thread runtime with one worker, with
    // no hand-off between the thread that polls the I/O driver and the
    // worker: about 500 instructions and 0.3 `epoll_wait` fewer per
    // request (docs/benchmarks.md). Blocking work (reloads, password
    // hashes) goes to the blocking pool either way.
    let mut rt = match cli.worker_threads {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Set up inside the runtime's context, dropped (flushing spans) outside
    // of it: the exporter's blocking client must not be dropped on a worker.
    let otel = {
        let _enter = rt.enter();
        init_tracing(cli.log_format, tracing_cfg.as_ref())
    };
    let code = rt.block_on(async move {
        match cli.command {
            Command::Check { config } => check(config),
            Command::Run { config } => run(config, cli.log_format).await,
            Command::Demo { listen } => match towergate::demo::run(listen).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "demo failed: {e} (another port: towergate demo --listen 127.0.0.1:PORT)"
                    );
                    ExitCode::FAILURE
                }
            },
        }
    });
    // The exporter's last flush: on a blocking thread, while the runtime
    // is driven, since an OTLP/gRPC channel needs its tasks polled (which a
    // current-thread runtime does only inside `block_on`), and the HTTP
    // exporter's blocking client must not be dropped on a worker.
    if let Some(otel) = otel {
        rt.block_on(async move {
            let _ = tokio::task::spawn_blocking(move || drop(otel)).await;
        });
    }
    drop(rt);
    code
}

fn check(path: PathBuf) -> ExitCode {
    let compiled = towergate::config::load_file(&path).and_then(|cfg| {
        towergate::stack::check(&cfg)
            .map(|c| (cfg.routes.len(), c.listeners.len()))
            .map_err(|mut e| {
                e.source = Some(path.display().to_string());
                e
            })
    });
    match compiled {
        Ok((routes, listeners)) => {
            let plural = |n: usize, one: &str, many: &str| {
                format!("{n} {}", if n == 1 { one } else { many })
            };
            println!(
                "{}: ok ({}, {})",
                path.display(),
                plural(routes, "route", "routes"),
                plural(listeners, "listener", "listeners")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Reports why `run` cannot go on: as plain text for a terminal, or, with
/// `--log-format json`, as one JSON log line (a log pipeline would get the
/// text's lines as several stray non-JSON ones).
fn fatal(format: LogFormat, error: &dyn std::fmt::Display) -> ExitCode {
    match format {
        LogFormat::Text => eprintln!("{}", error.to_string().trim_end()),
        LogFormat::Json => tracing::error!(error = %error.to_string().trim_end(), "cannot run"),
    }
    ExitCode::FAILURE
}

async fn run(path: PathBuf, format: LogFormat) -> ExitCode {
    let compiled = towergate::config::load_file(&path).and_then(|cfg| {
        towergate::stack::compile(&cfg).map_err(|mut e| {
            e.source = Some(path.display().to_string());
            e
        })
    });
    let compiled = match compiled {
        Ok(c) => c,
        Err(e) => return fatal(format, &e),
    };
    raise_open_files_limit(compiled.server.max_connections);
    tracing::info!(
        file = %path.display(),
        version = env!("CARGO_PKG_VERSION"),
        routes = compiled.config.routes.len(),
        listeners = compiled.listeners.len(),
        "configuration loaded"
    );
    let gateway = match towergate::start(compiled).await {
        Ok(g) => g,
        Err(e) => return fatal(format, &e),
    };
    let admin = match towergate::admin::start_from_config(gateway.live(), Some(path.clone())).await
    {
        Ok(a) => a,
        Err(e) => return fatal(format, &e),
    };
    let reloader = towergate::reload::spawn_reloader(path, gateway.live());
    towergate::shutdown_signal().await;
    reloader.abort();
    // The admin server stays up while draining, so /readyz reports it.
    let live = gateway.live();
    // A second SIGTERM or SIGINT while draining (an operator's second
    // Ctrl-C) stops at once instead of waiting out the delay and the
    // drain timeout: the requests still in flight are cut, the lines
    // already logged are written out.
    let drained = tokio::select! {
        _ = gateway.shutdown() => true,
        () = towergate::shutdown_signal() => {
            tracing::warn!("second signal while draining: stopping now, requests in flight are cut");
            false
        }
    };
    live.registry()
        .flush_access_log(std::time::Duration::from_secs(if drained { 2 } else { 1 }));
    if !drained {
        return ExitCode::FAILURE;
    }
    if let Some(a) = admin {
        a.stop();
    }
    ExitCode::SUCCESS
}

/// Raises the soft limit on open files to the hard limit (systemd's and
/// most shells' soft default, 1024, is far below what `max_connections`
/// allows), and warns when even that is too low: each proxied request
/// holds two descriptors (the client's and an upstream connection), and
/// pooled upstream connections, listeners and log files take more. Past
/// the limit, accepts and upstream connects fail with "too many open
/// files" and clients get `502`s instead of waiting in the accept queue.
fn raise_open_files_limit(max_connections: usize) {
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(1024);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            max_connections,
            wanted,
            "the open-files limit is below what server.max_connections needs (2 per connection, and 1024 more): raise the hard limit (LimitNOFILE= in systemd, ulimit -Hn) or lower server.max_connections"
        ),
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-files limit"),
    }
}

fn init_tracing(
    format: LogFormat,
    otel: Option<&towergate::config::schema::TracingConfig>,
) -> Option<towergate_observe::otel::OtelGuard> {
    use towergate::config::schema::TracingProtocol;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (guard, otel_error) = match otel {
        None => (None, None),
        Some(t) => match towergate_observe::otel::init(towergate_observe::otel::OtelConfig {
            endpoint: t.otlp_endpoint.clone(),
            service_name: t.service_name.clone().unwrap_or_else(|| "towergate".into()),
            // The request layer samples (`stack::trace_layer`,
            // `tracing.sample_ratio`): every span it opens is exported.
            sample_ratio: 1.0,
            protocol: match t.protocol {
                TracingProtocol::Http => towergate_observe::otel::Protocol::HttpProtobuf,
                // Needs a Tokio runtime: `main` calls this inside `rt.enter()`
                // and drops the guard before the runtime.
                TracingProtocol::Grpc => towergate_observe::otel::Protocol::Grpc,
            },
            timeout: std::time::Duration::from_secs(10),
        }) {
            Ok(g) => (Some(g), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    let otel_layer = guard.as_ref().map(|g| {
        towergate_observe::otel::layer(g).with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let registry = tracing_subscriber::registry().with(otel_layer);
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours for a terminal only: not in journald, `docker
                    // logs` or a file.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_filter(log_filter(filter)),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(log_filter(filter)),
            )
            .init(),
    }
    if let Some(e) = otel_error {
        tracing::error!(error = %e, "OpenTelemetry export disabled");
    }
    guard
}

/// The log layer's filter: `RUST_LOG` (default `info`), without the
/// per-request span.
///
/// The per-request span exists for OpenTelemetry: the log layer never
/// prints it, and formatting its fields on every request was 30% of the
/// gateway's instructions per request (docs/benchmarks.md). So the log
/// layer filters it out, and without an exporter no layer wants it and it
/// is never created.
///
/// The level hint matters: without one the combined filter has none
/// (`And` gives up when either side has none), the subscriber's maximum
/// level is unknown, and every `trace_span!` of a dependency is checked
/// and *created* at run time. The h2 crate opens one per frame poll: that
/// was half the instructions of an HTTP/2 request.
fn log_filter<S>(
    filter: tracing_subscriber::EnvFilter,
) -> impl tracing_subscriber::layer::Filter<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
    let not_request_span =
        filter_fn(|meta| !(meta.is_span() && meta.target().starts_with("towergate_observe")))
            .with_max_level_hint(LevelFilter::TRACE);
    filter.and(not_request_span)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::Filter;

    use super::log_filter;

    /// Without a hint the subscriber would create every dependency's
    /// `trace_span!` at run time (see `log_filter`).
    #[test]
    fn log_filter_keeps_the_level_hint() {
        let f = log_filter::<tracing_subscriber::Registry>(EnvFilter::new("info"));
        assert_eq!(f.max_level_hint(), Some(LevelFilter::INFO));
        let f = log_filter::<tracing_subscriber::Registry>(EnvFilter::new("warn,towergate=debug"));
        assert_eq!(f.max_level_hint(), Some(LevelFilter::DEBUG));
    }
}
