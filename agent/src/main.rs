//! `edgecoder-agent`: the device agent's command line.
//!
//! In scope: `init` (key, settings and the detected device class),
//! `register` (enrollment with a coordinator), `status` (local state, and
//! the coordinator's view when reachable) and `run` (the work loop, or one
//! round with `--once`; SIGTERM or SIGINT stops it gracefully: a task in
//! progress is halted and its lease released, so the coordinator hands it
//! to another node at once). Exit codes: 0 done, 1 error, 2 usage, 3 the
//! coordinator refused the node's signature or identity.
//!
//! Out of scope: everything the library does (see `edgecoder_agent`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgecoder_agent::client::{self, MeshClient};
use edgecoder_agent::node::{self, Node};
use edgecoder_agent::runner::{Runner, log};
use edgecoder_agent::sandbox::Sandbox;
use edgecoder_agent::{Error, telemetry};
use edgecoder_proto::mesh::{DeviceType, NodeKind};

/// Exit code when the coordinator refused who we are.
const EXIT_AUTH_REFUSED: u8 = 3;
/// Environment variable that may hold the enrollment token (keeps it out of
/// the process list).
const TOKEN_ENV: &str = "EDGECODER_ENROLLMENT_TOKEN";

#[derive(Parser)]
#[command(name = "edgecoder-agent", version, about = "EdgeCoder device agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the node key and settings.
    Init {
        /// Agent directory (default: $EDGECODER_AGENT_DIR or ~/.edgecoder-agent).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Node id (default: node-<key id>).
        #[arg(long)]
        node_id: Option<String>,
        /// Node kind (`agent` or `coordinator`).
        #[arg(long, default_value = "agent")]
        kind: String,
        /// Replace an existing key (the node must register again).
        #[arg(long)]
        force: bool,
        /// The device class (default: detected; see `status`). A server
        /// takes work at any time, the others only when idle and powered.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(DeviceType::ALL.map(DeviceType::as_str)))]
        device_type: Option<String>,
    },
    /// Register this node with a coordinator using an enrollment token.
    Register {
        /// Coordinator base URL, e.g. http://127.0.0.1:8787.
        #[arg(long)]
        coordinator: String,
        /// Enrollment token (or set EDGECODER_ENROLLMENT_TOKEN).
        #[arg(long)]
        token: Option<String>,
        /// Agent directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show the node's identity and its status at the coordinator.
    Status {
        /// Agent directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script (e.g. `edgecoder-agent completions
    /// zsh > ~/.zfunc/_edgecoder-agent`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Heartbeat, pull tasks, run them and report results.
    Run {
        /// Agent directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Coordinator base URL (default: the one saved by `register`).
        #[arg(long)]
        coordinator: Option<String>,
        /// One heartbeat and at most one task, then exit.
        #[arg(long)]
        once: bool,
        /// Device class reported in telemetry for this run (default: the one
        /// `init` saved, detected then).
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(DeviceType::ALL.map(DeviceType::as_str)))]
        device_type: Option<String>,
    },
}

fn parse_device_type(d: &str) -> Result<DeviceType, Error> {
    DeviceType::parse(d).ok_or_else(|| Error::Config(format!("invalid device type {d:?}")))
}

fn dir_or_default(dir: Option<PathBuf>) -> Result<PathBuf, Error> {
    dir.map_or_else(node::default_dir, Ok)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            log(&e);
            if e.is_auth_refusal() {
                ExitCode::from(EXIT_AUTH_REFUSED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "edgecoder-agent", &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(ExitCode::SUCCESS)
        }
        Command::Init {
            dir,
            node_id,
            kind,
            force,
            device_type,
        } => {
            let dir = dir_or_default(dir)?;
            let kind = NodeKind::parse(&kind)
                .ok_or_else(|| Error::Config(format!("invalid node kind {kind:?}")))?;
            let (device_type, why) = match device_type {
                Some(d) => (
                    parse_device_type(&d)?,
                    "given with --device-type".to_owned(),
                ),
                None => {
                    let d = telemetry::detect_device_type();
                    (d.device_type, format!("detected from {}", d.reason))
                }
            };
            let mut node = Node::init(&dir, node_id.as_deref(), kind, force)?;
            node.set_device_type(device_type)?;
            println!("node id:     {}", node.node_id());
            println!("key id:      {}", node.key_id());
            println!("public key:  {}", node.public_key());
            println!("device type: {} ({why})", device_type.as_str());
            println!("directory:   {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Register {
            coordinator,
            token,
            dir,
        } => {
            let token = token
                .or_else(|| std::env::var(TOKEN_ENV).ok())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Error::Config(format!("pass --token or set {TOKEN_ENV}")))?;
            let mut node = Node::load(&dir_or_default(dir)?)?;
            let answer =
                client::register_node(&mut node, &coordinator, token, telemetry::capabilities())?;
            println!("node id:     {}", answer.node_id);
            println!(
                "key id:      {}",
                answer.key_id.as_deref().unwrap_or(node.key_id())
            );
            println!("coordinator: {coordinator}");
            println!("status:      {}", answer.status.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { dir } => {
            let node = Node::load(&dir_or_default(dir)?)?;
            println!("node id:     {}", node.node_id());
            println!("kind:        {}", node.config().kind.as_str());
            println!(
                "device type: {}",
                node.config()
                    .device_type
                    .map_or("(not saved; detected at the next run)", DeviceType::as_str)
            );
            println!("key id:      {}", node.key_id());
            println!("directory:   {}", node.dir().display());
            let Some(coordinator) = node.config().coordinator.clone() else {
                println!("coordinator: (not registered)");
                return Ok(ExitCode::SUCCESS);
            };
            println!("coordinator: {coordinator}");
            let client = MeshClient::new(&coordinator, node.signing_key().clone())?;
            match client.node(node.node_id()) {
                Ok(view) => {
                    let status = view
                        .get("status")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("unknown");
                    println!("status:      {status}");
                    Ok(ExitCode::SUCCESS)
                }
                // Offline is a state to show, not a failure of `status`.
                Err(e) if e.is_transient() => {
                    println!("status:      unknown (coordinator unreachable: {e})");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!(
                        "status:      refused ({})",
                        e.problem_code().unwrap_or("error")
                    );
                    Err(e)
                }
            }
        }
        Command::Run {
            dir,
            coordinator,
            once,
            device_type,
        } => {
            let mut node = Node::load(&dir_or_default(dir)?)?;
            let device_type = match (device_type, node.config().device_type) {
                (Some(d), _) => parse_device_type(&d)?,
                (None, Some(saved)) => saved,
                // An agent directory from before detection: detect once, keep it.
                (None, None) => {
                    let d = telemetry::detect_device_type();
                    log(format_args!(
                        "device type: {} (detected from {}; change it with `init --force --device-type`)",
                        d.device_type.as_str(),
                        d.reason
                    ));
                    node.set_device_type(d.device_type)?;
                    d.device_type
                }
            };
            let coordinator = coordinator
                .or_else(|| node.config().coordinator.clone())
                .ok_or_else(|| {
                    Error::Config("no coordinator: run `register` or pass --coordinator".into())
                })?;
            let client = MeshClient::new(&coordinator, node.signing_key().clone())?;
            let mut runner = Runner::new(client, Sandbox::new()?, device_type);
            log(format_args!(
                "node {} (key {}, {}) -> {coordinator}",
                node.node_id(),
                node.key_id(),
                device_type.as_str()
            ));
            let stop = runner.stop_flag();
            ctrlc::set_handler(move || {
                if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    // Asked twice: the owner wants out now.
                    log("stopping now");
                    std::process::exit(130);
                }
                log("stopping: a task in progress is halted and given back (signal again to quit at once)");
            })
            .map_err(|e| Error::Config(format!("cannot handle stop signals: {e}")))?;
            if !once {
                runner.run_until_stopped();
                log("stopped");
                return Ok(ExitCode::SUCCESS);
            }
            log(runner.once()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
