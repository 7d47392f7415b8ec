//! `edgecoder-gpu-host`: serve inference to the mesh from this machine.
//!
//! ```text
//! edgecoder-gpu-host init      --dir D                      node key (kind gpu-host)
//! edgecoder-gpu-host models add --models M --name n@v --onnx F   copy + manifest
//! edgecoder-gpu-host register  --dir D --coordinator URL --token T --family F…
//! edgecoder-gpu-host run       --dir D --guest G [--cache C] [--origin-ca PEM] [--metrics-listen 127.0.0.1:9464]
//! edgecoder-gpu-host infer     --models M --guest G --model n@v --prompt TEXT   one local request
//! ```
//!
//! `run` serves only what the coordinator assigns: signed releases, verified
//! against the family's policy and fetched into a digest-addressed cache
//! (`edgecoder_gpu_host::supply`). A local model directory (`--models`) is
//! for `infer` on the operator's own machine, never for the mesh.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use edgecoder_agent::client::{self, MeshClient};
use edgecoder_agent::node::{self, Node};
use edgecoder_agent::runner::{Runner, log};
use edgecoder_gpu_host::host::{Device, Host, HostLimits, init_onnxruntime};
use edgecoder_gpu_host::metrics::{self, Metrics};
use edgecoder_gpu_host::models::{Manifest, ModelDir, Resolver};
use edgecoder_gpu_host::supply::{Fetcher, Supply};
use edgecoder_gpu_host::worker::{InferenceWorker, detect_accelerator, finish_name};
use edgecoder_gpu_host::{Error, metrics::code};
use edgecoder_proto::inference::{InferenceRequest, Prompt, valid_model_name};
use edgecoder_proto::mesh::NodeKind;
use edgecoder_proto::model::{Envelope, ModelManifest};
use edgecoder_proto::supply::{Assignment, Assignments, ModelState, SourcePolicy};

const TOKEN_ENV: &str = "EDGECODER_ENROLLMENT_TOKEN";

#[derive(Parser)]
#[command(
    name = "edgecoder-gpu-host",
    version,
    about = "EdgeCoder GPU host: inference for the mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Engine {
    /// A local model directory (one `name@version` directory per model):
    /// `infer` only; `run` serves what the coordinator assigns.
    #[arg(long)]
    models: Option<PathBuf>,
    /// The inference guest component (edgecoder_inference.wasm).
    #[arg(long)]
    guest: PathBuf,
    /// onnxruntime's library (default: $ORT_DYLIB_PATH).
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// Execution provider: cpu, or cuda (a build with the `cuda` feature).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
    /// Guest memory cap per request, MiB.
    #[arg(long, default_value_t = 256)]
    memory_mb: usize,
    /// Deadline per request, ms (a task's own timeout applies when shorter).
    #[arg(long, default_value_t = 60_000)]
    deadline_ms: u64,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Copy an ONNX file into the directory and write its manifest.
    Add {
        #[arg(long)]
        models: PathBuf,
        /// `name@version`.
        #[arg(long)]
        name: String,
        #[arg(long)]
        onnx: PathBuf,
        #[arg(long, default_value_t = 64)]
        context_length: u32,
        #[arg(long, default_value = "input_ids")]
        input: String,
        #[arg(long, default_value = "logits")]
        output: String,
        #[arg(long)]
        end_of_text: Option<u32>,
    },
    /// List the models that pass their checks.
    List {
        #[arg(long)]
        models: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Generate the node key and settings (kind gpu-host).
    Init {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        node_id: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// The model directory.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Register with a coordinator using an enrollment token.
    Register {
        #[arg(long)]
        coordinator: String,
        /// Enrollment token (or set EDGECODER_ENROLLMENT_TOKEN).
        #[arg(long)]
        token: Option<String>,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A model family this host offers to serve (repeatable): what the
        /// operator approves; the coordinator assigns versions.
        #[arg(long = "family", required = true)]
        families: Vec<String>,
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        device: String,
    },
    /// Heartbeat, pull inference tasks, run them and report.
    Run {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        coordinator: Option<String>,
        #[command(flatten)]
        engine: Engine,
        /// Serve Prometheus metrics here (loopback only).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// The verified-release cache (default: <dir>/model-cache).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Trust only this CA (PEM) for https model origins (a private
        /// mirror); default: the web PKI.
        #[arg(long)]
        origin_ca: Option<PathBuf>,
        /// MiB of releases no longer assigned the cache keeps (for a quick
        /// rollback); older ones are removed.
        #[arg(long, default_value_t = 10_240)]
        cache_keep_mb: u64,
        /// One heartbeat and at most one task, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Run one request locally and print the response as JSON.
    Infer {
        #[command(flatten)]
        engine: Engine,
        #[arg(long)]
        model: String,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 32)]
        max_new_tokens: u32,
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run the same request this many times (timings of each are printed).
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Instead of --models: a signed release directory (with
        /// release.dsse.json), verified by the same resolver the mesh uses.
        #[arg(long, conflicts_with = "models")]
        release: Option<PathBuf>,
        /// A publisher key the release must be signed by (base64 SPKI, a PEM
        /// file, or a SEC1 point); repeatable.
        #[arg(long = "publisher-key", requires = "release")]
        publisher_keys: Vec<String>,
        /// Signatures by distinct publisher keys required.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
    },
}

/// A publisher key given on the command line.
fn publisher_key(arg: &str) -> Result<String, Error> {
    use p256::pkcs8::DecodePublicKey as _;
    let text = match std::fs::read_to_string(arg) {
        Ok(t) => t,
        Err(_) => arg.to_owned(),
    };
    let text = text.trim();
    let bad = || {
        Error::Config(format!(
            "{arg}: not a P-256 public key (PEM, base64 SPKI or SEC1)"
        ))
    };
    let key = if text.contains("BEGIN PUBLIC KEY") {
        p256::ecdsa::VerifyingKey::from_public_key_pem(text).map_err(|_| bad())?
    } else if let Ok(k) = edgecoder_proto::keys::parse_public_key(text) {
        k
    } else {
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
            .map_err(|_| bad())?;
        p256::ecdsa::VerifyingKey::from_public_key_der(&der).map_err(|_| bad())?
    };
    Ok(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        key.to_encoded_point(false).as_bytes(),
    ))
}

/// The assignment a local signed release stands for: its own directory as
/// the only origin, the given keys as the policy.
fn local_assignment(dir: &Path, keys: &[String], threshold: u32) -> Result<Assignment, Error> {
    let dir = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("{}", dir.display()), e))?;
    let raw = std::fs::read(dir.join("release.dsse.json"))
        .map_err(|e| Error::io("reading release.dsse.json", e))?;
    let envelope: Envelope = serde_json::from_slice(&raw)
        .map_err(|e| Error::Model(format!("release.dsse.json: {e}")))?;
    let payload = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &envelope.payload,
    )
    .map_err(|_| Error::Model("the envelope's payload is not base64".into()))?;
    // Unverified here: only to name the release; the resolver verifies it.
    let claimed: ModelManifest = serde_json::from_slice(&payload)
        .map_err(|e| Error::Model(format!("the payload is not a model manifest: {e}")))?;
    let source = format!("file://{}", dir.display());
    Ok(Assignment {
        model: claimed.model(),
        release_digest: format!("blake3:{}", blake3::hash(&payload).to_hex()),
        envelope,
        source: source.clone(),
        policy: SourcePolicy {
            family: claimed.name.clone(),
            keys: keys
                .iter()
                .map(|k| publisher_key(k))
                .collect::<Result<_, _>>()?,
            threshold,
            origins: vec![source],
            max_bytes: 64 << 30,
            allowed: true,
            version: 0,
        },
        rollout_id: None,
    })
}

fn device(name: &str) -> Device {
    if name == "cuda" {
        Device::Cuda
    } else {
        Device::Cpu
    }
}

fn start(
    engine: &Engine,
    resolver: Box<dyn Resolver>,
    metrics: Arc<Metrics>,
) -> Result<Host, Error> {
    let lib = engine
        .onnxruntime
        .clone()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .ok_or_else(|| {
            Error::Config(
                "pass --onnxruntime or set ORT_DYLIB_PATH to onnxruntime's library".into(),
            )
        })?;
    init_onnxruntime(&lib)?;
    let dev = device(&engine.device);
    if dev == Device::Cuda {
        cuda_available()?;
    }
    Host::new(
        &engine.guest,
        resolver,
        dev,
        HostLimits {
            memory_bytes: engine.memory_mb.saturating_mul(1 << 20),
            deadline: Duration::from_millis(engine.deadline_ms),
            ..HostLimits::default()
        },
        metrics,
    )
}

/// onnxruntime registers a provider it cannot load as a warning and runs on
/// the CPU; a host told to use CUDA must not do so silently.
#[cfg(feature = "cuda")]
fn cuda_available() -> Result<(), Error> {
    use ort::execution_providers::ExecutionProvider as _;
    match ort::execution_providers::CUDAExecutionProvider::default().is_available() {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Runtime(
            "the CUDA provider is not available: use onnxruntime-gpu's library with CUDA 12 and cuDNN 9 installed".into(),
        )),
        Err(e) => Err(Error::Runtime(format!("checking the CUDA provider: {e}"))),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_available() -> Result<(), Error> {
    Err(Error::Config(
        "--device cuda needs a build with `--features cuda`".into(),
    ))
}

fn dir_or_default(dir: Option<PathBuf>) -> Result<PathBuf, Error> {
    Ok(dir.map_or_else(node::default_dir, Ok)?)
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edgecoder-gpu-host: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Init {
            dir,
            node_id,
            force,
        } => {
            let dir = dir_or_default(dir)?;
            let node = Node::init(&dir, node_id.as_deref(), NodeKind::GpuHost, force)?;
            println!("node id:    {}", node.node_id());
            println!("key id:     {}", node.key_id());
            println!("public key: {}", node.public_key());
            Ok(ExitCode::SUCCESS)
        }
        Command::Models(ModelsCommand::Add {
            models,
            name,
            onnx,
            context_length,
            input,
            output,
            end_of_text,
        }) => {
            std::fs::create_dir_all(&models)
                .map_err(|e| Error::io("creating the model directory", e))?;
            let manifest = Manifest {
                name: String::new(),
                version: String::new(),
                format: "onnx".into(),
                file: "model.onnx".into(),
                size: 0,
                digest: String::new(),
                tokenizer: "byte".into(),
                context_length,
                vocab_size: 256,
                end_of_text,
                input,
                output,
            };
            let digest = ModelDir::open(&models)?.add(&name, &onnx, manifest)?;
            println!("{name} {digest}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Models(ModelsCommand::List { models }) => {
            use edgecoder_gpu_host::models::Resolver as _;
            let dir = ModelDir::open(&models)?;
            for name in dir.names() {
                match dir.resolve(&name) {
                    Ok(v) => println!("{name} {}", v.manifest_digest),
                    Err(e) => println!("{name} refused: {e:?}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Register {
            coordinator,
            token,
            dir,
            families,
            device: dev,
        } => {
            let token = token
                .or_else(|| std::env::var(TOKEN_ENV).ok())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Error::Config(format!("pass --token or set {TOKEN_ENV}")))?;
            let mut node = Node::load(&dir_or_default(dir)?)?;
            if node.config().kind != NodeKind::GpuHost {
                return Err(Error::Config(
                    "this node key was not made by `edgecoder-gpu-host init`".into(),
                ));
            }
            let mut caps = edgecoder_agent::telemetry::capabilities();
            caps.gpu = serde_json::to_value(detect_accelerator(device(&dev).provider())).ok();
            if families.len() > edgecoder_gpu_host::host::MAX_ADVERTISED
                || families
                    .iter()
                    .any(|f| !valid_model_name(&format!("{f}@0")))
            {
                return Err(Error::Config(
                    "--family is a model name without its version (lowercase letters, digits, . _ -), at most 32".into(),
                ));
            }
            caps.models = families;
            let answer = client::register_node(&mut node, &coordinator, token, caps)?;
            println!("node id:     {}", answer.node_id);
            println!("coordinator: {coordinator}");
            println!("status:      {}", answer.status.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            dir,
            coordinator,
            engine,
            metrics_listen,
            cache,
            origin_ca,
            cache_keep_mb,
            once,
        } => {
            let dir = dir_or_default(dir)?;
            let node = Node::load(&dir)?;
            let coordinator = coordinator
                .or_else(|| node.config().coordinator.clone())
                .ok_or_else(|| {
                    Error::Config("no coordinator: run `register` or pass --coordinator".into())
                })?;
            let metrics = Arc::new(Metrics::default());
            if let Some(addr) = metrics_listen {
                let bound = metrics::serve(addr, metrics.clone())?;
                log(format_args!("metrics on http://{bound}/metrics"));
            }
            if engine.models.is_some() {
                return Err(Error::Config(
                    "run serves the releases the coordinator assigns; --models is for infer".into(),
                ));
            }
            let cache = cache.unwrap_or_else(|| dir.join("model-cache"));
            let fetcher = Fetcher::new(origin_ca.as_deref())?;
            let supply = Arc::new(Supply::new(&cache, fetcher, metrics.clone())?);
            supply.keep_unassigned(cache_keep_mb.saturating_mul(1 << 20));
            let host = Arc::new(start(&engine, Box::new(supply.clone()), metrics)?);
            let accelerator = detect_accelerator(host.device().provider());
            log(format_args!(
                "gpu host {} (key {}) -> {coordinator}; models {:?}; {} ({})",
                node.node_id(),
                node.key_id(),
                host.models(),
                accelerator.name,
                accelerator.provider
            ));
            let client = MeshClient::new(&coordinator, node.signing_key().clone())?;
            let mut worker = InferenceWorker::new(host, accelerator, Some(supply));
            if !once {
                worker = worker.in_background()?;
            }
            let mut runner = Runner::with_worker(client, worker);
            // A first heartbeat learns the assignments and verifies them, so
            // that the next one already reports what this host serves.
            if let Err(e) = runner.heartbeat() {
                log(format_args!("first heartbeat: {e}"));
            }
            if !once {
                runner.run_until_stopped();
                return Ok(ExitCode::SUCCESS);
            }
            log(runner.once()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Infer {
            engine,
            model,
            prompt,
            max_new_tokens,
            temperature,
            seed,
            repeat,
            release,
            publisher_keys,
            threshold,
        } => {
            let begun = std::time::Instant::now();
            let metrics = Arc::new(Metrics::default());
            let mut verify_ns = None;
            let resolver: Box<dyn Resolver> = match (&release, engine.models.as_deref()) {
                (Some(dir), _) => {
                    if publisher_keys.is_empty() {
                        return Err(Error::Config("--release needs --publisher-key".into()));
                    }
                    let a = local_assignment(dir, &publisher_keys, threshold)?;
                    // A fresh private directory: never one someone made first.
                    let unique = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    let cache = std::env::temp_dir().join(format!(
                        "edgecoder-infer-cache-{}-{unique:x}",
                        std::process::id()
                    ));
                    {
                        use std::os::unix::fs::DirBuilderExt as _;
                        std::fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&cache)
                            .map_err(|e| Error::io(format!("creating {}", cache.display()), e))?;
                    }
                    let supply = Supply::new(&cache, Fetcher::new(None)?, metrics.clone())?;
                    let t = std::time::Instant::now();
                    supply.assign(&Assignments {
                        policy_version: 0,
                        assignments: vec![a],
                    });
                    supply.prepare();
                    verify_ns = Some(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    if let Some(s) = supply.status().first()
                        && s.state != ModelState::Verified
                    {
                        let _ = std::fs::remove_dir_all(&cache);
                        println!(
                            "{}",
                            serde_json::json!({"ok": false, "code": s.failure.map(|f| f.as_str()), "model": s.model})
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                    Box::new(TempCache { supply, cache })
                }
                (None, Some(models)) => Box::new(ModelDir::open(models)?),
                (None, None) => {
                    return Err(Error::Config(
                        "infer runs a local model: pass --models or --release".into(),
                    ));
                }
            };
            let metrics_for_infer = metrics.clone();
            let host = start(&engine, resolver, metrics)?;
            let start_ns = u64::try_from(begun.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let req = InferenceRequest {
                model,
                input: Prompt::Text(prompt),
                max_new_tokens,
                temperature,
                seed,
                stop: Vec::new(),
            };
            let mut failed = false;
            for _ in 0..repeat.max(1) {
                let o = host.run(&req);
                let line = match &o.result {
                    Ok(r) => serde_json::json!({
                        "ok": true,
                        "output_hex": hex(&r.output),
                        "output_tokens": r.output_tokens,
                        "input_tokens": r.input_token_count,
                        "finish": finish_name(r.finish),
                        "model_manifest_digest": r.model_manifest_digest,
                        "load_ns": r.timings.load_ns,
                        "compute_ns": r.timings.compute_ns,
                        "guest_total_ns": r.timings.total_ns,
                        "forward_passes": r.timings.forward_passes,
                        "host_ns": u64::try_from(o.elapsed.as_nanos()).unwrap_or(u64::MAX),
                        "loaded_graph": o.loaded_graph,
                        "release_fetch_ns": verify_ns,
                        "release_verify_ns": u64::try_from(metrics_for_infer.supply_time(&req.model).0.as_nanos()).unwrap_or(u64::MAX),
                        "resolve_ns": o.load.map(|l| u64::try_from(l.resolve.as_nanos()).unwrap_or(u64::MAX)),
                        "graph_compile_ns": o.load.map(|l| u64::try_from(l.compile.as_nanos()).unwrap_or(u64::MAX)),
                        "host_start_ns": start_ns,
                    }),
                    Err(e) => {
                        failed = true;
                        serde_json::json!({"ok": false, "code": code(e), "error": format!("{e:?}")})
                    }
                };
                println!("{line}");
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// A resolver whose cache is removed with it (`infer --release`).
struct TempCache {
    supply: Supply,
    cache: PathBuf,
}

impl Resolver for TempCache {
    fn names(&self) -> Vec<String> {
        self.supply.names()
    }
    fn resolve(
        &self,
        name: &str,
    ) -> Result<edgecoder_gpu_host::models::Verified, edgecoder_gpu_host::models::Refusal> {
        self.supply.resolve(name)
    }
    fn serves(&self, name: &str) -> bool {
        self.supply.serves(name)
    }
    fn tracks_refusals(&self) -> bool {
        true
    }
}

impl Drop for TempCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cache);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
