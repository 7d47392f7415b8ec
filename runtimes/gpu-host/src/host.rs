//! The inference host: one compiled guest component, run once per request
//! under limits, over graphs loaded once per model name.
//!
//! In scope: loading the onnxruntime library (checked up front), compiling
//! the guest once, linking it against wasi-nn and the `models` interface,
//! the per-request store (memory cap, epoch deadline, an empty WASI context:
//! no files, no environment, no network), per-request graph registries that
//! hold only the model the request names, the host-side checks before a
//! guest runs, and turning traps into typed errors. The host stays up
//! whatever a guest does.
//!
//! Out of scope: what a model name means ([`crate::models`]), tasks and the
//! mesh ([`crate::worker`]), metrics export ([`crate::metrics`]).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgecoder_proto::inference::{InferenceRequest, Prompt as WirePrompt, Refusal as WireRefusal};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_nn::backend::BackendInner as _;
use wasmtime_wasi_nn::backend::onnx::OnnxBackend;
use wasmtime_wasi_nn::wit::{ExecutionTarget, WasiNnCtx, WasiNnView};
use wasmtime_wasi_nn::{Graph, GraphRegistry};

use crate::Error;
use crate::metrics::Metrics;
use crate::models::{Refusal, Resolver};

// Host bindings come from the same WIT files as the guest's
// (`wit/inference`); a change to either side that the other does not share
// fails to build or to instantiate.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/inference",
        world: "runner",
    });
}

use bindings::edgecoder::inference::models;
pub use bindings::edgecoder::inference::types::{
    FinishReason, InferenceError, Limits as GuestLimits, ModelInfo, Prompt, Request, Response,
    Timings, TokenizerKind,
};

/// Most models a host advertises (what the coordinator accepts).
pub const MAX_ADVERTISED: usize = 32;

/// How often the epoch ticks: the deadline's granularity.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Which onnxruntime execution provider graphs run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU provider.
    Cpu,
    /// The CUDA provider (the `cuda` feature and onnxruntime-gpu's library).
    Cuda,
}

impl Device {
    /// The provider's name as heartbeats report it.
    pub fn provider(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

/// Per-request limits.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    /// Largest guest linear memory, bytes.
    pub memory_bytes: usize,
    /// Longest a request may run.
    pub deadline: Duration,
    /// Longest prompt, bytes.
    pub max_input_bytes: u32,
    /// Most tokens a request may generate.
    pub max_new_tokens: u32,
}

impl Default for HostLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            deadline: Duration::from_secs(60),
            max_input_bytes: u32::try_from(edgecoder_proto::inference::MAX_INPUT_BYTES)
                .unwrap_or(u32::MAX),
            max_new_tokens: edgecoder_proto::inference::MAX_NEW_TOKENS,
        }
    }
}

/// Loads onnxruntime from `path` (the PyPI wheel's `libonnxruntime.so.*`).
/// Checked here, once, so a missing or wrong library is a clear error at
/// start rather than a panic inside the first request.
pub fn init_onnxruntime(path: &Path) -> Result<(), Error> {
    if !path.is_file() {
        return Err(Error::Runtime(format!(
            "{} is not a file; set ORT_DYLIB_PATH (or --onnxruntime) to libonnxruntime.so from the onnxruntime wheel",
            path.display()
        )));
    }
    let shown = path.display().to_string();
    // ort loads the library on first use and panics if it cannot: that use
    // is here, inside catch_unwind, rather than in the first request.
    let committed = std::panic::catch_unwind(|| {
        ort::init_from(path.display().to_string())
            .with_name("edgecoder-gpu-host")
            .commit()
    });
    match committed {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Runtime(format!("{shown}: {e}"))),
        Err(_) => Err(Error::Runtime(format!(
            "{shown} could not be loaded as onnxruntime (wrong file or an unsupported version; 1.22 is expected)"
        ))),
    }
}

/// A graph and what the guest is told about it.
#[derive(Clone)]
struct Loaded {
    info: ModelInfo,
    graph: Graph,
}

/// A registry holding one graph: a guest can load only its request's model.
struct OneGraph {
    name: String,
    graph: Graph,
}

impl GraphRegistry for OneGraph {
    fn get(&self, name: &str) -> Option<&Graph> {
        (name == self.name).then_some(&self.graph)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Graph> {
        (name == self.name).then_some(&mut self.graph)
    }
}

/// Guest memory growth under a cap on the total of all its linear
/// memories, remembering a refusal so that the trap it leads to is reported
/// as the memory limit it is.
struct Cap {
    memory_bytes: usize,
    used: usize,
    refused: bool,
}

/// Instances, memories and tables one request may create: a component of
/// a few core modules needs a handful.
const MAX_INSTANCES: usize = 32;
const MAX_MEMORIES: usize = 8;
const MAX_TABLES: usize = 32;
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Cap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        let ok = total <= self.memory_bytes;
        if ok {
            self.used = total;
        }
        self.refused |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// One request's store data.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    nn: WasiNnCtx,
    cap: Cap,
    model: String,
    info: ModelInfo,
    limits: GuestLimits,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl models::Host for State {
    fn describe(&mut self, name: String) -> Result<ModelInfo, InferenceError> {
        if name == self.model {
            Ok(self.info.clone())
        } else {
            Err(InferenceError::ModelNotFound(format!(
                "{name} is not this request's model"
            )))
        }
    }

    fn request_limits(&mut self) -> GuestLimits {
        self.limits
    }
}

impl bindings::edgecoder::inference::types::Host for State {}

/// What a request came to, with the host's own measurements.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The guest's answer or the typed error.
    pub result: Result<Response, InferenceError>,
    /// Wall time of the whole request in the host.
    pub elapsed: Duration,
    /// Whether this request loaded the model's graph (a cold start).
    pub loaded_graph: bool,
    /// When it did: how long resolving (reading and re-hashing the verified
    /// graph) and compiling it in onnxruntime took.
    pub load: Option<LoadTimes>,
    /// Whether it was stopped at its deadline (the host may be slow; another
    /// may finish it).
    pub interrupted: bool,
}

/// Where a cold start's time went.
#[derive(Debug, Clone, Copy)]
pub struct LoadTimes {
    /// The resolver: verified bytes (re-hashed on load).
    pub resolve: Duration,
    /// onnxruntime building the session.
    pub compile: Duration,
}

/// The inference host.
pub struct Host {
    engine: Engine,
    pre: bindings::RunnerPre<State>,
    resolver: Box<dyn Resolver>,
    backend: Mutex<OnnxBackend>,
    graphs: Mutex<HashMap<String, Loaded>>,
    /// Models whose files failed their checks: not advertised until the
    /// host restarts (after the operator fixes them).
    refused: Mutex<std::collections::HashSet<String>>,
    device: Device,
    limits: HostLimits,
    metrics: Arc<Metrics>,
}

impl Host {
    /// Compiles the guest at `component` and links it. onnxruntime must have
    /// been initialised ([`init_onnxruntime`]).
    pub fn new(
        component: &Path,
        resolver: Box<dyn Resolver>,
        device: Device,
        limits: HostLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| Error::Guest(e.to_string()))?;
        let component = Component::from_file(&engine, component)
            .map_err(|e| Error::Guest(format!("{}: {e}", component.display())))?;
        let mut linker: Linker<State> = Linker::new(&engine);
        let link = |e: wasmtime::Error| Error::Guest(format!("linking: {e}"));
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link)?;
        wasmtime_wasi_nn::wit::add_to_linker(&mut linker, |s: &mut State| {
            WasiNnView::new(&mut s.table, &mut s.nn)
        })
        .map_err(link)?;
        models::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).map_err(link)?;
        bindings::edgecoder::inference::types::add_to_linker::<State, HasSelf<State>>(
            &mut linker,
            |s| s,
        )
        .map_err(link)?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(bindings::RunnerPre::new)
            .map_err(|e| Error::Guest(format!("the guest does not fit the runner world: {e}")))?;
        // The deadline clock: a weak handle, so the thread ends with the
        // engine's last user.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::io("starting the epoch thread", e))?;
        Ok(Self {
            engine,
            pre,
            resolver,
            backend: Mutex::new(OnnxBackend::default()),
            graphs: Mutex::new(HashMap::new()),
            refused: Mutex::new(std::collections::HashSet::new()),
            device,
            limits,
            metrics,
        })
    }

    /// The models this host can serve now: those in its directory, less
    /// any whose file failed its checks, at most [`MAX_ADVERTISED`].
    pub fn models(&self) -> Vec<String> {
        let refused = self.refused.lock().map(|r| r.clone()).unwrap_or_default();
        self.resolver
            .names()
            .into_iter()
            .filter(|n| !refused.contains(n))
            .take(MAX_ADVERTISED)
            .collect()
    }

    /// The execution provider.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The graph for `name`, loading it on first use.
    fn graph(&self, name: &str) -> Result<(Loaded, Option<LoadTimes>), InferenceError> {
        if !self.resolver.serves(name) {
            if let Ok(mut g) = self.graphs.lock() {
                g.remove(name);
            }
        } else if let Some(l) = self.graphs.lock().ok().and_then(|g| g.get(name).cloned()) {
            return Ok((l, None));
        }
        let began = Instant::now();
        let verified = self.resolver.resolve(name).map_err(|r| match r {
            Refusal::NotFound(m) => InferenceError::ModelNotFound(m),
            Refusal::NotApproved(m) => {
                // A resolver that tracks its own refusals is the record:
                // a release verified later is served again.
                if !self.resolver.tracks_refusals()
                    && let Ok(mut refused) = self.refused.lock()
                {
                    refused.insert(name.to_owned());
                }
                InferenceError::ModelNotApproved(m)
            }
        })?;
        let resolve = began.elapsed();
        let target = match self.device {
            Device::Cpu => ExecutionTarget::Cpu,
            Device::Cuda => ExecutionTarget::Gpu,
        };
        let graph = {
            let mut backend = self
                .backend
                .lock()
                .map_err(|_| InferenceError::BackendError("the backend lock is poisoned".into()))?;
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                backend.load(&[verified.bytes.as_slice()], target)
            }))
            .map_err(|_| {
                InferenceError::BackendError("onnxruntime panicked loading the graph".into())
            })?
            .map_err(|e| InferenceError::BackendError(format!("loading {name}: {e}")))?
        };
        let compile = began.elapsed().saturating_sub(resolve);
        self.metrics.graph_loaded(name);
        let m = &verified.manifest;
        let loaded = Loaded {
            info: ModelInfo {
                manifest_digest: verified.manifest_digest.clone(),
                context_length: m.context_length,
                vocab_size: m.vocab_size,
                tokenizer: TokenizerKind::Byte,
                end_of_text: m.end_of_text,
                input_name: m.input.clone(),
                output_name: m.output.clone(),
            },
            graph,
        };
        if let Ok(mut g) = self.graphs.lock() {
            g.insert(name.to_owned(), loaded.clone());
        }
        Ok((loaded, Some(LoadTimes { resolve, compile })))
    }

    /// Runs one request under the host's deadline.
    pub fn run(&self, req: &InferenceRequest) -> Outcome {
        self.run_until(req, self.limits.deadline)
    }

    /// Runs one request under the shorter of `deadline` and the host's.
    pub fn run_until(&self, req: &InferenceRequest, deadline: Duration) -> Outcome {
        let started = Instant::now();
        let mut load = None;
        let mut interrupted = false;
        let deadline = deadline.min(self.limits.deadline);
        let result = self.run_inner(req, deadline, &mut load, &mut interrupted);
        let outcome = Outcome {
            result,
            elapsed: started.elapsed(),
            loaded_graph: load.is_some(),
            load,
            interrupted,
        };
        self.metrics.observe(&req.model, &outcome);
        outcome
    }

    fn run_inner(
        &self,
        req: &InferenceRequest,
        deadline: Duration,
        load: &mut Option<LoadTimes>,
        interrupted: &mut bool,
    ) -> Result<Response, InferenceError> {
        // The host checks what the guest checks: a guest is code, and the
        // host's limits must hold whatever code it runs.
        req.check().map_err(|r| match r {
            WireRefusal::InputTooLarge(m) => InferenceError::InputTooLarge(m),
            WireRefusal::LimitsExceeded(m) | WireRefusal::Invalid(m) => {
                InferenceError::LimitsExceeded(m)
            }
        })?;
        if req.input_bytes() > self.limits.max_input_bytes as usize {
            return Err(InferenceError::InputTooLarge(format!(
                "the prompt is {} bytes; this host accepts {}",
                req.input_bytes(),
                self.limits.max_input_bytes
            )));
        }
        if req.max_new_tokens > self.limits.max_new_tokens {
            return Err(InferenceError::LimitsExceeded(format!(
                "max_new_tokens {} is over this host's {}",
                req.max_new_tokens, self.limits.max_new_tokens
            )));
        }
        let (loaded, fresh) = self.graph(&req.model)?;
        *load = fresh;
        let state = State {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            nn: WasiNnCtx::new(
                [],
                OneGraph {
                    name: req.model.clone(),
                    graph: loaded.graph.clone(),
                }
                .into(),
            ),
            cap: Cap {
                memory_bytes: self.limits.memory_bytes,
                used: 0,
                refused: false,
            },
            model: req.model.clone(),
            info: loaded.info.clone(),
            limits: GuestLimits {
                max_input_bytes: self.limits.max_input_bytes,
                max_new_tokens: self.limits.max_new_tokens,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.cap);
        let ticks = (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        let request = Request {
            model: req.model.clone(),
            input: match &req.input {
                WirePrompt::Text(t) => Prompt::Text(t.clone()),
                WirePrompt::Tokens(ids) => Prompt::Tokens(ids.clone()),
            },
            max_new_tokens: req.max_new_tokens,
            temperature: req.temperature,
            seed: req.seed,
            stop: req.stop.clone(),
        };
        // The ONNX backend panics on some inputs (e.g. non-f32 tensors): a
        // guest must not be able to take the host down with one.
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let runner = self.pre.instantiate(&mut store)?;
            runner
                .edgecoder_inference_inference()
                .call_run(&mut store, &request)
        }));
        match called {
            // What ran is what the host resolved, whatever the guest says.
            Ok(Ok(answer)) => answer.map(|mut r| {
                r.model_manifest_digest = loaded.info.manifest_digest.clone();
                r
            }),
            Ok(Err(trap)) => {
                *interrupted = trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt);
                Err(self.trapped(&trap, deadline, store.data().cap.refused))
            }
            Err(_) => {
                // A panic inside the backend may have poisoned the graph's
                // session lock: load it afresh next time.
                if let Ok(mut g) = self.graphs.lock() {
                    g.remove(&req.model);
                }
                Err(InferenceError::BackendError(
                    "the inference backend panicked; the request was abandoned".into(),
                ))
            }
        }
    }

    fn trapped(
        &self,
        e: &wasmtime::Error,
        deadline: Duration,
        memory_refused: bool,
    ) -> InferenceError {
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return InferenceError::LimitsExceeded(format!(
                "the request ran past its deadline of {} ms",
                deadline.as_millis()
            ));
        }
        if memory_refused {
            return InferenceError::LimitsExceeded(format!(
                "the guest needed more than {} MiB of memory",
                self.limits.memory_bytes >> 20
            ));
        }
        InferenceError::BackendError(format!("the guest trapped: {e}"))
    }
}
