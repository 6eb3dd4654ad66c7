//! `rill-broker`: `dev` for a single node on loopback, `run --config FILE` for real
//! deployments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rill_broker::config::BrokerConfig;

#[derive(Parser)]
#[command(
    name = "rill-broker",
    version,
    about = "A Kafka-compatible streaming log"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a single-node broker for trying Rill and for development.
    Dev {
        /// Where Kafka clients connect.
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: SocketAddr,
        /// Where the logs live.
        #[arg(long, default_value = "./rill-data")]
        data_dir: PathBuf,
        /// Where Prometheus scrapes /metrics.
        #[arg(long, default_value = "127.0.0.1:9644")]
        metrics_listen: SocketAddr,
        /// Override a broker property, Kafka's name: --set log.segment.bytes=1048576
        #[arg(long = "set", value_name = "NAME=VALUE")]
        overrides: Vec<String>,
    },
    /// Run a broker from a Kafka-style properties file.
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        overrides: Vec<String>,
        /// Set process.roles from controller.quorum.voters (broker,controller for a
        /// voter, broker otherwise), for a pod template shared by every node.
        #[arg(long)]
        roles_from_voters: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let (config, dev) = match build_config(cli.command) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rill-broker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rill-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(rill_broker::run::run(config, |c| {
        println!(
            "rill-broker ready: Kafka on {} (data in {})",
            c.listen,
            c.log_dir.display()
        );
        if dev {
            let addr = c.listen;
            println!("  produce: echo 'hello' | kcat -P -b {addr} -t demo");
            println!("  consume: kcat -C -b {addr} -t demo -o beginning -e");
            if let Some(m) = c.metrics_listen {
                println!("  metrics: curl http://{m}/metrics");
            }
        }
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rill-broker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build_config(command: Command) -> Result<(BrokerConfig, bool), String> {
    let mut roles = false;
    let (mut config, overrides, dev) = match command {
        Command::Dev {
            listen,
            data_dir,
            metrics_listen,
            overrides,
        } => {
            let mut c = BrokerConfig::dev(listen, data_dir);
            c.metrics_listen = Some(metrics_listen);
            (c, overrides, true)
        }
        Command::Run {
            config,
            overrides,
            roles_from_voters,
        } => {
            roles = roles_from_voters;
            (
                BrokerConfig::from_file(&config).map_err(|e| e.to_string())?,
                overrides,
                false,
            )
        }
    };
    for o in overrides {
        let (name, value) = o
            .split_once('=')
            .ok_or_else(|| format!("--set {o}: expected NAME=VALUE"))?;
        config
            .set(name.trim(), value.trim())
            .map_err(|e| e.to_string())?;
    }
    if roles {
        config.set_roles_from_voters();
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok((config, dev))
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RILL_LOG")
        // openraft narrates every vote and heartbeat at info; its warnings are enough.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
