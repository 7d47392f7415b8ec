//! `edgecoder`: run EdgeCoder Edge locally on embedded SQLite.
//!
//! Commands: `serve` (every function on one port), `migrate` (apply the shared
//! migrations), `keygen` (a P-256 signing key for a secret store), `audit`
//! (print recent audit events), `admin grant` (give a verified account a role:
//! how the first `system_admin` is made), `outbox` (print the development
//! mail outbox), `spin-manifest fermyon-cloud` (spin.toml for Fermyon Cloud)
//! and the others `--help` lists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use edgecoder_kernel::{Mode, SigningKey, audit};
use edgecoder_native::platform::{NativeConfig, OsRng};
use edgecoder_native::server::{self, Shared};
use edgecoder_native::{Runtime, datadir};

#[derive(Parser)]
#[command(
    name = "edgecoder",
    version,
    about = "EdgeCoder Edge: identity, mesh and ledger functions on embedded SQLite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Development,
    Production,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Development => Mode::Development,
            ModeArg::Production => Mode::Production,
        }
    }
}

#[derive(clap::Args)]
struct DataArgs {
    /// Data directory (databases and secrets). `serve` and `migrate` create
    /// it; commands that only read refuse a missing one.
    #[arg(long, env = "EDGECODER_DATA_DIR", default_value = ".edgecoder")]
    data_dir: PathBuf,
    /// Development generates missing keys and allows development-only settings;
    /// production requires every secret to be provisioned.
    #[arg(
        long,
        env = "EDGECODER_MODE",
        value_enum,
        default_value = "development"
    )]
    mode: ModeArg,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Hash every file of a model directory and sign the manifest (DSSE,
    /// P-256) with one or more publisher keys (`edgecoder keygen`).
    Sign {
        /// The model directory.
        #[arg(long)]
        dir: PathBuf,
        /// `name@version`.
        #[arg(long)]
        name: String,
        /// A publisher's private key (PKCS#8 PEM); repeat for more signatures.
        /// The first is the manifest's publisher.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// Days until the release expires.
        #[arg(long, default_value_t = 90)]
        expires_in_days: i64,
        /// Where to write the envelope (default: <dir>/release.dsse.json).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a release: signatures (k of n trusted keys), expiry, the model's
    /// name, and every file's size and blake3 digest, with nothing extra.
    Verify {
        /// The model directory.
        #[arg(long)]
        dir: PathBuf,
        /// The envelope (default: <dir>/release.dsse.json).
        #[arg(long)]
        envelope: Option<PathBuf>,
        /// A trusted publisher key: PEM or base64 SPKI, inline or a file.
        /// Repeatable.
        #[arg(long, required = true)]
        key: Vec<String>,
        /// Signatures by distinct trusted keys required.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        /// The release must be of this model (`name@version`).
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum SpinManifestCommand {
    /// spin.toml for Fermyon Cloud: literal outbound hosts (it takes no
    /// variable templates there) and the app's own https origin in place of
    /// service chaining (it has none). Writes to standard output.
    FermyonCloud {
        /// The app's https origin, e.g. https://edgecoder-edge.fermyon.app.
        #[arg(long)]
        origin: String,
        /// The manifest to rewrite.
        #[arg(long, default_value = "spin.toml")]
        manifest: PathBuf,
        /// A host variable's value, NAME=VALUE, as comma-separated https
        /// origins: mail_api_base, oauth_outbound_host, mesh_peer_hosts,
        /// log_witness_hosts (default: the manifest's default).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Accept plain http on a loopback address (a local test host only).
        #[arg(long, hide = true)]
        insecure_loopback: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Serve every function on one port.
    Serve {
        #[command(flatten)]
        data: DataArgs,
        /// Address to listen on.
        #[arg(long, env = "EDGECODER_LISTEN", default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
        /// Request-handling threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Serve Prometheus metrics (`GET /metrics`) on this loopback
        /// address, e.g. 127.0.0.1:9465. Off by default.
        #[arg(long, env = "EDGECODER_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
    },
    /// Apply pending migrations and exit.
    Migrate {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Generate a P-256 signing key (PKCS#8 PEM) for a secret store.
    Keygen {
        /// Write the key to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// One line of base64 DER instead of PEM, for stores without newlines.
        #[arg(long)]
        base64: bool,
        /// Print the public key (base64 SPKI DER, for `service_keys` and
        /// trust files) of the private key in this file instead of making one.
        #[arg(long, value_name = "KEY_FILE", conflicts_with_all = ["out", "base64"])]
        public: Option<PathBuf>,
    },
    /// Make a monitor credential: a read-only bearer token for the audit
    /// export (`GET /{auth,mesh,ledger}/audit/events`). Prints the token
    /// (give it to the monitor, e.g. a SIEM) and the digest to add to the
    /// `audit_monitor_tokens` setting.
    MonitorToken,
    /// Model releases: sign a model directory's manifest, or verify one.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Print recent audit events as JSON lines.
    Audit {
        #[command(flatten)]
        data: DataArgs,
        /// Only this action (e.g. `schema.migrate`).
        #[arg(long)]
        action: Option<String>,
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Administration of identities.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Verify a ledger offline: checkpoint signature against pinned keys, every
    /// entry against the signed root, no rewind or fork since the last run.
    ///
    /// Exit status: 0 verified; 1 refused (tampered, inconsistent, or not
    /// signed as the trust given requires); 2 usage (bad arguments); 3
    /// unavailable (the log, a file or the state could not be fetched,
    /// read or written). `--json` prints one JSON object either way.
    Verify(VerifyArgs),
    /// Settings: `edgecoder config check` lists every setting the functions
    /// read, where its value comes from, and whether production mode would
    /// accept the whole.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script (e.g. `edgecoder completions bash >
    /// ~/.local/share/bash-completion/completions/edgecoder`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Submit work to a deployment and read it back (as the signed-in user
    /// whose access token you pass).
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Write a Spin manifest for a target that does not take the
    /// repository's `spin.toml` as it is.
    SpinManifest {
        #[command(subcommand)]
        command: SpinManifestCommand,
    },
    /// Print the development mail outbox (newest first); refused in production.
    Outbox {
        #[command(flatten)]
        data: DataArgs,
        /// Only messages to this address.
        #[arg(long)]
        to: Option<String>,
        /// How many messages.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print only the link in the newest message (e.g. to verify an
        /// email address just signed up).
        #[arg(long, conflicts_with = "limit")]
        latest_link: bool,
    },
}

/// `edgecoder verify`'s arguments.
#[derive(clap::Args)]
#[command(
    after_help = "The last verified checkpoint of each log (origin and key) is \
remembered in $XDG_STATE_HOME/edgecoder/verify.json, else ~/.local/state/edgecoder/verify.json \
(--state to choose)."
)]
struct VerifyArgs {
    /// A running deployment's base URL.
    #[arg(long, conflicts_with = "db")]
    url: Option<String>,
    /// A copy of the SQLite database (`<data-dir>/edgecoder.sqlite`).
    #[arg(long)]
    db: Option<PathBuf>,
    /// A trusted checkpoint key: PEM or base64 SPKI (as `GET /ledger/keys`
    /// gives), inline or a file path. Repeatable.
    #[arg(long)]
    key: Vec<String>,
    /// The log's origin (`GET /ledger/keys` gives it): the name `--key`
    /// signs under, and the only log accepted (also with `--trust`).
    /// Required with `--key`: a checkpoint must name the log you meant,
    /// not just carry a signature by a key you trust.
    #[arg(long)]
    origin: Option<String>,
    /// A trust file: `<key name> <base64 SPKI>` per line.
    #[arg(long)]
    trust: Option<PathBuf>,
    /// Where the last verified checkpoint of each log is remembered
    /// (default: $XDG_STATE_HOME/edgecoder/verify.json, else
    /// ~/.local/state/edgecoder/verify.json).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Print the outcome as one JSON object (`status`: verified,
    /// refused, usage or unavailable).
    #[arg(long)]
    json: bool,
    /// Also verify this entry's inclusion proof.
    #[arg(long)]
    entry: Option<u64>,
    /// A witness whose cosignature counts: its verifier key
    /// (`<name>+<id>+<base64>`, cosignature/v1, as a coordinator's
    /// /mesh/identity gives it). Repeatable.
    #[arg(long)]
    witness: Vec<String>,
    /// Cosignatures by distinct --witness keys the checkpoint must carry
    /// (default: one per --witness).
    #[arg(long)]
    min_cosignatures: Option<usize>,
    /// Also recompute every issuance epoch from the log alone and compare
    /// it with the logged allocation.
    #[arg(long)]
    epochs: bool,
    /// A coordinator key whose signature over an epoch's close counts
    /// (base64 SEC1 or SPKI, as /mesh/identity gives it). Repeatable.
    #[arg(long, requires = "epochs")]
    coordinator_key: Vec<String>,
    /// Signatures by distinct --coordinator-key keys each close must carry
    /// (default: one per key).
    #[arg(long, requires = "epochs")]
    quorum: Option<usize>,
    /// Verify a receipt (`GET /ledger/entries/{index}/receipt` of a credit
    /// transfer or an issuance credit) instead of a whole log.
    #[arg(long, conflicts_with_all = ["url", "db"])]
    receipt: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Every setting with its source (environment, secret file, default)
    /// and whether this mode, and production, accept the configuration.
    /// Exit status 1 when the chosen mode would refuse to start.
    Check {
        /// Data directory whose `secrets/` hold secret files (not created).
        #[arg(long, env = "EDGECODER_DATA_DIR", default_value = ".edgecoder")]
        data_dir: PathBuf,
        /// Check as production (default: the mode the settings give).
        #[arg(long)]
        production: bool,
    },
}

/// Where and as whom `edgecoder task` talks.
#[derive(clap::Args)]
struct ApiArgs {
    /// The deployment's base URL.
    #[arg(long, env = "EDGECODER_URL", default_value = "http://127.0.0.1:8787")]
    url: String,
    /// An access token (`access_token` from `POST /auth/login`).
    #[arg(long, env = "EDGECODER_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Submit a wasm task: the module (`.wat` text or `.wasm`) and its input
    /// file; the digests are computed here. Prints the task id.
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        /// The module: WebAssembly text or binary, exporting `run`.
        #[arg(long)]
        module: PathBuf,
        /// The input file (its bytes are what `read_input` gives the module).
        #[arg(long)]
        input: PathBuf,
        /// Wall-clock limit.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// Memory limit.
        #[arg(long, default_value_t = 64)]
        memory_mb: u64,
        /// Instruction budget.
        #[arg(long, default_value_t = 1_000_000_000)]
        fuel: u64,
        /// Nodes of distinct owners that must agree (1 to 5).
        #[arg(long, default_value_t = 1)]
        replicas: u32,
    },
    /// Submit an inference task to the GPU hosts serving `model`. Prints the
    /// task id.
    Infer {
        #[command(flatten)]
        api: ApiArgs,
        /// The model, `name@version`.
        #[arg(long)]
        model: String,
        /// The prompt.
        #[arg(long)]
        prompt: String,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 64)]
        max_new_tokens: u32,
    },
    /// A task's status, as JSON.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        /// The task id.
        id: String,
    },
    /// A finished task's output (raw bytes, or the generated text).
    Result {
        #[command(flatten)]
        api: ApiArgs,
        /// The task id.
        id: String,
        /// Write it to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Grant a role to a verified account (the way to make the first system_admin).
    Grant {
        #[command(flatten)]
        data: DataArgs,
        /// The account's email address.
        #[arg(long)]
        email: String,
        /// The role to grant.
        #[arg(long, default_value = "system_admin", value_parser = clap::builder::PossibleValuesParser::new(edgecoder_auth::session::GRANTABLE_ROLES))]
        role: String,
    },
}

fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGECODER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A person at a terminal reads text; anything else (a file, journald, a
    // log shipper) gets one JSON object per line and never an escape code.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve {
            data,
            listen,
            threads,
            metrics_listen,
        } => rt.block_on(serve(data, listen, threads, metrics_listen)),
        Command::Migrate { data } => rt.block_on(async {
            let runtime = open(&data)?;
            let applied = runtime.migrate().await?;
            if applied.is_empty() {
                println!("migrations: up to date");
            }
            for name in applied {
                println!("applied {name}");
            }
            Ok(())
        }),
        Command::Keygen {
            public: Some(path), ..
        } => {
            use p256::pkcs8::EncodePublicKey as _;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let key = SigningKey::from_secret(&text)?;
            let spki = key.verifying_key().to_public_key_der()?;
            println!(
                "{}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, spki.as_bytes())
            );
            Ok(())
        }
        Command::Keygen { out, base64, .. } => {
            let key = SigningKey::generate(&OsRng);
            let pem = if base64 {
                key.to_pkcs8_base64()? + "\n"
            } else {
                key.to_pkcs8_pem()?
            };
            match out {
                Some(path) => {
                    datadir::write_private(&path, pem.as_bytes())?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{pem}"),
            }
            Ok(())
        }
        Command::MonitorToken => {
            let mut bytes = [0u8; 32];
            edgecoder_kernel::Rng::fill(&OsRng, &mut bytes);
            let token = format!(
                "emt_{}",
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
            );
            println!("token:  {token}");
            println!("digest: blake3:{}", blake3::hash(token.as_bytes()).to_hex());
            eprintln!(
                "add the digest to audit_monitor_tokens (comma-separated); the token is shown once"
            );
            Ok(())
        }
        Command::Model { command } => model_command(command),
        Command::Task { command } => task_command(command),
        Command::Config {
            command:
                ConfigCommand::Check {
                    data_dir,
                    production,
                },
        } => {
            if !config_check(&data_dir, production) {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::SpinManifest {
            command:
                SpinManifestCommand::FermyonCloud {
                    origin,
                    manifest,
                    vars,
                    insecure_loopback,
                },
        } => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let mut given = std::collections::BTreeMap::new();
            for v in vars {
                let (name, value) = v
                    .split_once('=')
                    .with_context(|| format!("--var {v:?}: want NAME=VALUE"))?;
                given.insert(name.trim().to_owned(), value.trim().to_owned());
            }
            let out = edgecoder_native::spin_manifest::fermyon_cloud(
                &text,
                &origin,
                &given,
                insecure_loopback,
            )
            .map_err(anyhow::Error::msg)?;
            print!("{out}");
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "edgecoder", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not a failure.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(())
        }
        Command::Audit {
            data,
            action,
            limit,
        } => rt.block_on(async {
            let db = open_read_only(&data)?;
            let events = audit::query(
                &db,
                &audit::Filter {
                    action,
                    limit,
                    ..audit::Filter::default()
                },
            )
            .await?;
            for e in events {
                println!("{}", serde_json::to_string(&e)?);
            }
            Ok(())
        }),
        Command::Admin {
            command: AdminCommand::Grant { data, email, role },
        } => rt.block_on(async {
            // The account must exist already: never start a new directory.
            datadir::DataDir::existing(&data.data_dir)?;
            let runtime = open(&data)?;
            runtime.migrate().await?;
            let s = runtime.services();
            let user = edgecoder_auth::api::admin::grant_by_email(
                s.sql.as_ref(),
                s.ledger.as_ref(),
                s.clock.now_ms(),
                &s.new_id(),
                &email,
                &role,
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot grant {role} to {email}: {e}"))?;
            println!("granted {role} to user {user}");
            Ok(())
        }),
        Command::Verify(args) => {
            let json = args.json;
            match verify_command(args) {
                Ok(verified) => {
                    let (mut v, text) = match verified {
                        Verified::Log(report) => {
                            (serde_json::to_value(&report)?, report.to_string())
                        }
                        Verified::Receipt(line) => (serde_json::json!({"receipt": line}), line),
                    };
                    if json {
                        v["status"] = "verified".into();
                        println!("{v}");
                    } else {
                        println!("{text}");
                    }
                    Ok(())
                }
                Err((status, e)) => {
                    let word = match status {
                        VERIFY_USAGE => "usage",
                        VERIFY_UNAVAILABLE => "unavailable",
                        _ => "refused",
                    };
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"status": word, "error": format!("{e:#}")})
                        );
                    } else {
                        eprintln!("edgecoder verify: {word}: {e:#}");
                    }
                    std::process::exit(status);
                }
            }
        }
        Command::Outbox {
            data,
            to,
            limit,
            latest_link,
        } => rt.block_on(async {
            if matches!(data.mode, ModeArg::Production) {
                anyhow::bail!(
                    "the outbox is development-only; production mail goes to mail_provider"
                );
            }
            let db = open_read_only(&data)?;
            let limit = if latest_link { 1 } else { limit.clamp(1, 1000) };
            let messages = edgecoder_auth::outbox_messages(&db, to.as_deref(), limit)
                .await
                .context("reading the outbox (run `edgecoder migrate` on an older directory)")?;
            if latest_link {
                let body = messages
                    .first()
                    .and_then(|m| m["body"].as_str())
                    .ok_or_else(|| anyhow::anyhow!("the outbox is empty"))?;
                let link = body
                    .split_whitespace()
                    .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                    .ok_or_else(|| anyhow::anyhow!("the newest message has no link"))?;
                println!("{link}");
                return Ok(());
            }
            for m in messages {
                println!("{}", serde_json::to_string(&m)?);
            }
            Ok(())
        }),
    }
}

/// Records each setting the loader reads and where its value comes from.
struct Recording {
    inner: NativeConfig,
    secrets: PathBuf,
    seen: std::cell::RefCell<std::collections::BTreeMap<String, (&'static str, String)>>,
}

impl edgecoder_kernel::ConfigSource for Recording {
    fn var(&self, name: &str) -> Option<String> {
        let v = self.inner.var(name);
        let env = NativeConfig::env_name(name);
        let source = match (&v, std::env::var_os(&env)) {
            (Some(_), Some(_)) => format!("environment {env}"),
            (Some(_), None) => "set by the command".to_owned(),
            (None, _) => "default".to_owned(),
        };
        self.seen
            .borrow_mut()
            .entry(name.to_owned())
            .or_insert(("var", source));
        v
    }

    fn secret(&self, name: &str) -> Option<String> {
        let v = self.inner.secret(name);
        let env = NativeConfig::env_name(name);
        let file = self.secrets.join(name);
        let source = if v.is_none() {
            "unset".to_owned()
        } else if std::env::var_os(&env).is_some() {
            format!("environment {env}")
        } else {
            format!("file {}", file.display())
        };
        self.seen
            .borrow_mut()
            .insert(name.to_owned(), ("secret", source));
        v
    }
}

/// `edgecoder config check`: whether the chosen mode accepts the settings.
fn config_check(data_dir: &std::path::Path, production: bool) -> bool {
    use edgecoder_gateway::{Loaded, Selection};
    let secrets = data_dir.join("secrets");
    let base = NativeConfig::new(None).with_secrets_dir(&secrets);
    let configured = edgecoder_kernel::ConfigSource::var(&base, "mode");
    let mut in_mode = NativeConfig::clone(&base);
    in_mode.set(
        "mode",
        if production {
            "production"
        } else {
            configured.as_deref().unwrap_or("development")
        },
    );
    // Every setting, as development reads them all without stopping at the
    // first missing secret.
    let mut dev = NativeConfig::clone(&base);
    dev.set("mode", "development");
    let listing = Recording {
        inner: dev,
        secrets: secrets.clone(),
        seen: Default::default(),
    };
    let _ = Loaded::load(&listing, Selection::All);
    let recorded = Recording {
        inner: in_mode,
        secrets,
        seen: Default::default(),
    };
    let verdict = Loaded::load(&recorded, Selection::All);
    let mut seen = listing.seen.into_inner();
    seen.extend(recorded.seen.into_inner());
    let width = seen.keys().map(String::len).max().unwrap_or(0);
    for (name, (kind, source)) in &seen {
        println!("{name:width$}  {kind:6}  {source}");
    }
    let mode = if production {
        "production"
    } else {
        configured.as_deref().unwrap_or("development")
    };
    let ok = match &verdict {
        Ok(loaded) => {
            println!("\n{mode}: accepted");
            for w in &loaded.warnings {
                println!("  warning: {w}");
            }
            true
        }
        Err(e) => {
            println!("\n{mode}: refused: {e}");
            false
        }
    };
    if !production && mode != "production" {
        let mut prod = NativeConfig::new(None).with_secrets_dir(&data_dir.join("secrets"));
        prod.set("mode", "production");
        match Loaded::load(&prod, Selection::All) {
            Ok(_) => println!("production: accepted"),
            Err(e) => println!("production: would refuse: {e}"),
        }
    }
    ok
}

fn task_command(command: TaskCommand) -> Result<()> {
    use edgecoder_native::task::{Api, Wasm, output};
    match command {
        TaskCommand::Submit {
            api,
            module,
            input,
            timeout_ms,
            memory_mb,
            fuel,
            replicas,
        } => {
            let v = Api::new(&api.url, &api.token)?.submit(&Wasm {
                module: &module,
                input: &input,
                timeout_ms,
                memory_mb,
                fuel,
                replicas,
            })?;
            eprintln!(
                "queued; escrowed {} credits (status: edgecoder task status {})",
                v["price"],
                v["task_id"].as_str().unwrap_or_default()
            );
            println!("{}", v["task_id"].as_str().unwrap_or_default());
        }
        TaskCommand::Infer {
            api,
            model,
            prompt,
            max_new_tokens,
        } => {
            let v = Api::new(&api.url, &api.token)?.infer(&model, &prompt, max_new_tokens)?;
            println!("{}", v["task_id"].as_str().unwrap_or_default());
        }
        TaskCommand::Status { api, id } => {
            let mut v = Api::new(&api.url, &api.token)?.task(&id)?;
            // The status, not the (possibly large) output.
            if let Some(o) = v.as_object_mut() {
                o.remove("output");
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        TaskCommand::Result { api, id, out } => {
            let bytes = output(&Api::new(&api.url, &api.token)?.task(&id)?)?;
            match out {
                Some(path) => std::fs::write(&path, &bytes)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => {
                    use std::io::Write as _;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
        }
    }
    Ok(())
}

/// The shared database of an existing data directory, read-only: nothing
/// is created, migrated or keyed.
fn open_read_only(data: &DataArgs) -> Result<edgecoder_native::sqlite::Db> {
    let dir = datadir::DataDir::existing(&data.data_dir)?;
    edgecoder_native::sqlite::Db::open_read_only(&dir.sql_path())
        .with_context(|| format!("opening {}", dir.sql_path().display()))
}

/// `edgecoder verify`'s exit statuses besides 0 (verified) and 1 (refused).
const VERIFY_USAGE: i32 = 2;
const VERIFY_UNAVAILABLE: i32 = 3;

/// Runs `edgecoder verify`; a failure carries its exit status.
fn verify_command(a: VerifyArgs) -> Result<Verified, (i32, anyhow::Error)> {
    use edgecoder_native::verify;
    let usage = |e: anyhow::Error| (VERIFY_USAGE, e);
    let witnesses = a
        .witness
        .iter()
        .map(|w| verify::parse_witness(w))
        .collect::<Result<Vec<_>>>()
        .map_err(usage)?;
    let min_cosignatures = a.min_cosignatures.unwrap_or(witnesses.len());
    if min_cosignatures > witnesses.len() {
        return Err(usage(anyhow::anyhow!(
            "--min-cosignatures {min_cosignatures} needs at least that many --witness keys"
        )));
    }
    let name = match (&a.origin, a.key.is_empty()) {
        (Some(o), _) => o.clone(),
        (None, true) => String::new(),
        (None, false) => {
            return Err(usage(anyhow::anyhow!(
                "--key needs --origin: the log's origin, as GET /ledger/keys names it"
            )));
        }
    };
    let mut trusted = a
        .key
        .iter()
        .map(|k| verify::parse_key(&name, k))
        .collect::<Result<Vec<_>>>()
        .map_err(usage)?;
    if let Some(t) = &a.trust {
        trusted.extend(verify::read_trust_file(t).map_err(usage)?);
    }
    if trusted.is_empty() {
        return Err(usage(anyhow::anyhow!(
            "no trusted key: pass --key or --trust"
        )));
    }
    let classify = |e: anyhow::Error| {
        if verify::is_unavailable(&e) {
            (VERIFY_UNAVAILABLE, e)
        } else {
            (1, e)
        }
    };
    if let Some(path) = a.receipt {
        let line =
            verify::verify_receipt(&path, &trusted, a.origin.as_deref()).map_err(classify)?;
        return Ok(Verified::Receipt(line));
    }
    let source = match (a.url, a.db) {
        (Some(u), None) => verify::Source::Url(u),
        (None, Some(d)) => verify::Source::Db(d),
        _ => return Err(usage(anyhow::anyhow!("pass exactly one of --url and --db"))),
    };
    let coordinators = a
        .coordinator_key
        .iter()
        .map(|k| verify::parse_coordinator_key(k))
        .collect::<Result<Vec<_>>>()
        .map_err(usage)?;
    if a.quorum.is_some_and(|q| q > coordinators.len()) {
        return Err(usage(anyhow::anyhow!(
            "--quorum needs at least that many --coordinator-key keys"
        )));
    }
    verify::run(&verify::Options {
        source,
        trusted,
        origin: a.origin,
        state: a.state.unwrap_or_else(verify::default_state_path),
        entry: a.entry,
        witnesses,
        min_cosignatures,
        epochs: a.epochs,
        quorum: a.quorum.unwrap_or(coordinators.len()),
        coordinators,
    })
    .map(Verified::Log)
    .map_err(classify)
}

/// What `edgecoder verify` verified.
enum Verified {
    Log(edgecoder_native::verify::Report),
    Receipt(String),
}

fn open(data: &DataArgs) -> Result<Runtime> {
    Runtime::open(&data.data_dir, data.mode.into(), NativeConfig::new(None))
}

async fn serve(
    data: DataArgs,
    listen: SocketAddr,
    threads: usize,
    metrics_listen: Option<SocketAddr>,
) -> Result<()> {
    let runtime = open(&data)?;
    for warning in &runtime.loaded.warnings {
        tracing::warn!("{warning}");
    }
    for name in runtime.migrate().await.context("applying migrations")? {
        tracing::info!(migration = name, "applied migration");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() && runtime.loaded.config.mode == Mode::Development {
        tracing::warn!(%local, "development mode listening on a non-loopback address");
    }
    // Harnesses and scripts wait for this exact line to learn the port.
    println!("edgecoder listening on http://{local}");
    tracing::info!(data_dir = %runtime.dir.root().display(), mode = runtime.loaded.config.mode.as_str(), "serving auth, mesh and ledger");
    let metrics = Arc::new(edgecoder_native::metrics::Metrics::default());
    if let Some(addr) = metrics_listen {
        let bound =
            edgecoder_native::metrics::serve(addr, Arc::clone(&metrics), runtime.db.clone())
                .await?;
        tracing::info!(%bound, "metrics on http://{bound}/metrics");
    }
    let shared = Arc::new(Shared {
        db: runtime.db.clone(),
        kv: runtime.kv.handle(),
        loaded: runtime.loaded.clone(),
        metrics,
    });
    server::serve(listener, shared, threads, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we could never shut down cleanly; serve until
        // killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn model_command(command: ModelCommand) -> Result<()> {
    use edgecoder_native::model;
    use p256::pkcs8::DecodePrivateKey as _;
    match command {
        ModelCommand::Sign {
            dir,
            name,
            key,
            expires_in_days,
            out,
        } => {
            let keys = key
                .iter()
                .map(|path| {
                    let pem = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    p256::ecdsa::SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
                        anyhow::anyhow!("{}: not a PKCS#8 P-256 key: {e}", path.display())
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let publisher = edgecoder_proto::keys::key_id(keys[0].verifying_key());
            let now = unix_now();
            let manifest = model::manifest_of(
                &dir,
                &name,
                &publisher,
                now,
                now + expires_in_days.clamp(1, 3650) * 86_400,
            )?;
            let refs: Vec<&p256::ecdsa::SigningKey> = keys.iter().collect();
            let envelope = edgecoder_proto::model::sign(&manifest, &refs);
            let out = out.unwrap_or_else(|| dir.join(model::ENVELOPE));
            std::fs::write(&out, serde_json::to_vec_pretty(&envelope)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{} {} files, signed by {} key(s) -> {}",
                manifest.model(),
                manifest.files.len(),
                keys.len(),
                out.display()
            );
            Ok(())
        }
        ModelCommand::Verify {
            dir,
            envelope,
            key,
            threshold,
            name,
        } => {
            let keys = key
                .iter()
                .map(|k| edgecoder_native::verify::parse_p256_key(k))
                .collect::<Result<Vec<_>>>()?;
            let path = envelope.unwrap_or_else(|| dir.join(model::ENVELOPE));
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let policy = edgecoder_proto::model::SigningPolicy { keys, threshold };
            let verified =
                edgecoder_proto::model::verify(&bytes, &policy, unix_now(), name.as_deref())
                    .map_err(|e| anyhow::anyhow!("refused: {}: {e}", e.code()))?;
            model::check_dir(&dir, &verified.manifest)
                .map_err(|m| anyhow::anyhow!("refused: {}: {}", m.code, m.detail))?;
            println!(
                "verified {} ({} files, release {}, signed by {})",
                verified.manifest.model(),
                verified.manifest.files.len(),
                verified.digest,
                verified.signers.join(", ")
            );
            Ok(())
        }
    }
}
