//! The `towergate` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Worker threads of the runtime (default: one per core).
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
        #[arg(short, long)]
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
    init_tracing(cli.log_format);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.worker_threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Check { config } => check(config),
            Command::Run { config } => run(config).await,
            Command::Demo { listen } => match towergate::demo::run(listen).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

fn check(path: PathBuf) -> ExitCode {
    let compiled = towergate::config::load_file(&path).and_then(|cfg| {
        towergate::stack::compile(&cfg)
            .map(|c| (cfg.routes.len(), c.listeners.len()))
            .map_err(|mut e| {
                e.source = Some(path.display().to_string());
                e
            })
    });
    match compiled {
        Ok((routes, listeners)) => {
            println!(
                "{}: ok ({routes} routes, {listeners} listeners)",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf) -> ExitCode {
    let compiled = towergate::config::load_file(&path).and_then(|cfg| {
        towergate::stack::compile(&cfg).map_err(|mut e| {
            e.source = Some(path.display().to_string());
            e
        })
    });
    let compiled = match compiled {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let gateway = match towergate::start(compiled).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let admin = match towergate::admin::start_from_config(gateway.live(), Some(path.clone())).await
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let reloader = towergate::reload::spawn_reloader(path, gateway.live());
    towergate::shutdown_signal().await;
    reloader.abort();
    // The admin server stays up while draining, so /readyz reports it.
    gateway.shutdown().await;
    if let Some(a) = admin {
        a.stop();
    }
    ExitCode::SUCCESS
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
