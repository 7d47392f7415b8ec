//! The task sandbox: runs one WebAssembly core module against one input under
//! hard limits, with nothing of the device reachable from inside.
//!
//! In scope:
//! - checking the module's and the input's `blake3:` digests before anything
//!   is compiled or run;
//! - compiling with a restricted feature set (no threads or shared memory, no
//!   memory64, multi-memory, relaxed SIMD, GC, exceptions or stack switching;
//!   NaNs canonicalised so float results do not depend on the CPU), and
//!   caching compiled modules by digest;
//! - limits: fuel (instructions), a wall-clock deadline through epoch
//!   interruption, linear memory and table size, output size, stack depth;
//! - the whole host interface, defined here and nowhere else:
//!   `edgecoder.input_len`, `edgecoder.read_input`, `edgecoder.write_output`,
//!   `wasi_snapshot_preview1.fd_write` (stdout and stderr into capped
//!   buffers) and `wasi_snapshot_preview1.proc_exit`. Any other import is a
//!   link error, so files, sockets, environment, arguments, clocks and
//!   randomness are unreachable by construction;
//! - classifying every way a run can end into a stable failure reason.
//!
//! Out of scope: where tasks come from and where results go (see
//! [`crate::runner`]), the coordinator's policy (checked before a task gets
//! here), components and WASI beyond the two functions above.
//!
//! A run never panics on hostile input and leaves the [`Sandbox`] usable: each
//! run has its own `Store`, and the engine, linker and compiled modules hold no
//! per-run state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::{
    Caller, Config, Engine, ExternType, InstancePre, Linker, Memory, Module, ResourceLimiter,
    Store, Trap, UpdateDeadline,
};

use crate::Error;

/// Output cap when the task does not set one.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;
/// Cap on each of the captured stdout and stderr streams; bytes beyond it are
/// dropped and the stream is marked truncated.
pub const STREAM_CAP_BYTES: usize = 64 << 10;
/// How often the deadline is checked. The epoch counter is advanced at this
/// rate while a run is in progress; a timeout fires at most this late.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Maximum wasm stack. Far below a host thread's stack, so deep recursion
/// traps cleanly instead of overflowing the agent.
pub const MAX_WASM_STACK_BYTES: usize = 512 << 10;
/// Elements a table may hold: tables are host memory too.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 16;
/// Tables a module may define.
const MAX_TABLES: usize = 4;
/// Compiled modules kept for reuse; the cache is emptied when full (tasks tend
/// to reuse a handful of modules, so a finer eviction policy buys little).
const MODULE_CACHE_ENTRIES: usize = 32;
/// Most iovecs one `fd_write` may pass (POSIX `IOV_MAX`): bounds host work
/// that fuel does not see.
const MAX_IOVS: u32 = 1024;
/// Bytes a host call may copy per unit of fuel charged, so copying through the
/// host interface is not free CPU.
const BYTES_PER_FUEL: u64 = 64;
/// Longest failure detail kept (trap messages can quote guest data).
const MAX_DETAIL_CHARS: usize = 512;

/// WASI errno values returned by `fd_write`.
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// Why a run failed: the protocol's failure codes, one definition with the
/// coordinator (`edgecoder_proto::mesh::FailureCode`).
pub use edgecoder_proto::mesh::FailureCode as FailureReason;

/// The limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap in MiB.
    pub memory_mb: u64,
    /// Fuel (roughly, wasm instructions).
    pub fuel: u64,
    /// Wall-clock deadline for instantiation and the entry point, in
    /// milliseconds (compilation is not counted).
    pub timeout_ms: u64,
    /// Output cap in bytes.
    pub max_output_bytes: usize,
}

impl Limits {
    /// Limits with the default output cap.
    pub fn new(memory_mb: u64, fuel: u64, timeout_ms: u64) -> Self {
        Limits {
            memory_mb,
            fuel,
            timeout_ms,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// A captured stdout or stderr stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first [`STREAM_CAP_BYTES`] bytes written.
    pub bytes: Vec<u8>,
    /// Whether bytes were dropped.
    pub truncated: bool,
}

impl Captured {
    fn push(&mut self, data: &[u8]) {
        let room = STREAM_CAP_BYTES.saturating_sub(self.bytes.len());
        let take = data.len().min(room);
        self.bytes
            .extend_from_slice(data.get(..take).unwrap_or_default());
        if take < data.len() {
            self.truncated = true;
        }
    }

    /// The stream as text (invalid UTF-8 replaced).
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Why a run failed, with what is known about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The stable reason.
    pub reason: FailureReason,
    /// A short human-readable explanation (for logs, not for matching).
    pub detail: String,
    /// The code passed to `proc_exit`, when the guest exited with one.
    pub exit_code: Option<i32>,
}

impl Failure {
    fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if let Some((cut, _)) = detail.char_indices().nth(MAX_DETAIL_CHARS) {
            detail.truncate(cut);
        }
        Failure {
            reason,
            detail,
            exit_code: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `None` on success.
    pub failure: Option<Failure>,
    /// What the guest wrote with `write_output` (empty on failure).
    pub output: Vec<u8>,
    /// `blake3:` digest of [`Outcome::output`], on success.
    pub output_digest: Option<String>,
    /// Fuel consumed (also reported on failure).
    pub fuel_used: u64,
    /// Time from the start of instantiation to the end of the run.
    pub duration_ms: u64,
    /// Captured stdout.
    pub stdout: Captured,
    /// Captured stderr.
    pub stderr: Captured,
    /// Whether any guest code could have run (false when the run was refused
    /// before instantiation: digests, validation, linking).
    pub executed: bool,
}

impl Outcome {
    /// A run refused before any guest code ran.
    pub fn refused(reason: FailureReason, detail: impl Into<String>) -> Self {
        Self::not_run(Failure::new(reason, detail))
    }

    fn not_run(failure: Failure) -> Self {
        Outcome {
            failure: Some(failure),
            output: Vec::new(),
            output_digest: None,
            fuel_used: 0,
            duration_ms: 0,
            stdout: Captured::default(),
            stderr: Captured::default(),
            executed: false,
        }
    }

    /// Whether the run succeeded.
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }

    /// The failure code, if the run failed.
    pub fn error_code(&self) -> Option<FailureReason> {
        self.failure.as_ref().map(|f| f.reason)
    }
}

/// `blake3:` followed by the lowercase hex digest of `bytes`: the form every
/// snapshot and output digest takes.
pub fn digest(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

/// Why the host stopped the guest (recorded in the store, because the error
/// that unwinds the guest only says that it stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostStop {
    OutputTooLarge,
    Exit(i32),
    Timeout,
    /// The agent is shutting down ([`Sandbox::halt_flag`]).
    Halted,
}

/// Memory and table caps for one store; remembers that a cap was hit so the
/// run is reported as `memory_exceeded` rather than a generic trap.
struct Caps {
    memory_bytes: usize,
    table_elements: usize,
    exceeded: Option<String>,
}

impl ResourceLimiter for Caps {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            // An error rather than `Ok(false)`: `memory.grow` would return -1
            // and a guest could keep probing; the task asked for more than it
            // was granted, so it ends here.
            self.exceeded = Some(format!(
                "linear memory would grow from {current} to {desired} bytes; the cap is {}",
                self.memory_bytes
            ));
            return Err(wasmtime::Error::msg("memory cap exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.exceeded = Some(format!(
                "a table would grow from {current} to {desired} elements; the cap is {}",
                self.table_elements
            ));
            return Err(wasmtime::Error::msg("table cap exceeded"));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        1
    }
}

/// Per-run state the host functions see.
struct Guest {
    input: Vec<u8>,
    output: Vec<u8>,
    max_output: usize,
    stdout: Captured,
    stderr: Captured,
    stop: Option<HostStop>,
    caps: Caps,
}

/// A module ready to instantiate, with its entry point.
#[derive(Clone)]
struct Prepared {
    pre: InstancePre<Guest>,
    entry: &'static str,
}

/// The sandbox: one engine, the host interface, and compiled modules. Cheap
/// to share between threads; runs may proceed concurrently.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<Guest>,
    modules: Mutex<HashMap<String, Prepared>>,
    halt: Arc<AtomicBool>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the engine and the host interface.
    pub fn new() -> Result<Self, Error> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK_BYTES)
            // Proposals a batch task does not need and that widen what the
            // host must get right (shared state, huge address spaces) or make
            // results depend on the CPU (relaxed SIMD).
            .wasm_memory64(false)
            .wasm_multi_memory(false)
            .wasm_relaxed_simd(false)
            .wasm_gc(false)
            .wasm_custom_page_sizes(false)
            .wasm_stack_switching(false)
            .wasm_wide_arithmetic(false)
            .shared_memory(false)
            // Named through the feature flags: `wasm_threads` exists only when
            // wasmtime's `threads` feature is compiled in, which another crate
            // in a workspace build may turn on.
            .wasm_features(
                wasmtime::WasmFeatures::THREADS | wasmtime::WasmFeatures::SHARED_EVERYTHING_THREADS,
                false,
            )
            // The same module and input should give the same output on every
            // node, so the coordinator can compare results.
            .cranelift_nan_canonicalization(true);
        let engine = Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let linker = host_interface(&engine)?;
        Ok(Sandbox {
            engine,
            linker,
            modules: Mutex::new(HashMap::new()),
            halt: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A flag that, once set, stops every run in progress at the next
    /// deadline tick (within a few milliseconds) and every later run before
    /// it starts: how an agent that is shutting down gets its thread back.
    pub fn halt_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.halt)
    }

    /// Runs `module_bytes` on `input` under `limits`. Both digests are checked
    /// first; a mismatch runs nothing.
    pub fn run(
        &self,
        module_bytes: &[u8],
        module_digest: &str,
        input: &[u8],
        input_digest: &str,
        limits: &Limits,
    ) -> Outcome {
        if digest(module_bytes) != module_digest {
            return Outcome::refused(
                FailureReason::SnapshotDigestMismatch,
                "module bytes do not match the module digest",
            );
        }
        if digest(input) != input_digest {
            return Outcome::refused(
                FailureReason::SnapshotDigestMismatch,
                "input bytes do not match the input digest",
            );
        }
        let prepared = match self.prepare(module_bytes, module_digest) {
            Ok(p) => p,
            Err(failure) => return Outcome::not_run(failure),
        };
        self.execute(&prepared, input, limits)
    }

    /// The compiled, linked module for `digest`, compiling it on first use.
    /// Only called after the bytes were checked against the digest, so the
    /// digest is a safe cache key.
    fn prepare(&self, bytes: &[u8], digest: &str) -> Result<Prepared, Failure> {
        if let Some(p) = self
            .modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
        {
            return Ok(p.clone());
        }
        // `from_binary`: text format is not a task format.
        let module = Module::from_binary(&self.engine, bytes).map_err(|e| {
            Failure::new(
                FailureReason::OutsideSubset,
                format!("module rejected: {e:#}"),
            )
        })?;
        let entry = entry_point(&module)?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| {
            Failure::new(
                FailureReason::LinkError,
                format!("module imports what the host does not offer: {e:#}"),
            )
        })?;
        let prepared = Prepared { pre, entry };
        let mut modules = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
        if modules.len() >= MODULE_CACHE_ENTRIES {
            modules.clear();
        }
        modules.insert(digest.to_owned(), prepared.clone());
        Ok(prepared)
    }

    fn execute(&self, prepared: &Prepared, input: &[u8], limits: &Limits) -> Outcome {
        let memory_bytes =
            usize::try_from(limits.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let mut store = Store::new(
            &self.engine,
            Guest {
                input: input.to_vec(),
                output: Vec::new(),
                max_output: limits.max_output_bytes,
                stdout: Captured::default(),
                stderr: Captured::default(),
                stop: None,
                caps: Caps {
                    memory_bytes,
                    table_elements: MAX_TABLE_ELEMENTS,
                    exceeded: None,
                },
            },
        );
        store.limiter(|guest| &mut guest.caps);
        if let Err(e) = store.set_fuel(limits.fuel) {
            // Only fails when fuel is not enabled, which `new` rules out.
            return Outcome::refused(FailureReason::Trap, format!("cannot set fuel: {e:#}"));
        }

        let started = Instant::now();
        let deadline = started + Duration::from_millis(limits.timeout_ms);
        // Every tick (from any run's ticker: the epoch is per engine) only
        // makes this store compare the clock with its own deadline, so
        // concurrent runs cannot cut each other short.
        store.set_epoch_deadline(1);
        let halt = Arc::clone(&self.halt);
        store.epoch_deadline_callback(move |mut ctx| {
            if halt.load(Ordering::SeqCst) {
                ctx.data_mut().stop.get_or_insert(HostStop::Halted);
                Ok(UpdateDeadline::Interrupt)
            } else if Instant::now() >= deadline {
                ctx.data_mut().stop.get_or_insert(HostStop::Timeout);
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        let ticker = match Ticker::start(&self.engine) {
            Ok(t) => t,
            Err(e) => {
                // Without a ticker the deadline could not be enforced.
                return Outcome::refused(
                    FailureReason::Trap,
                    format!("host cannot start the deadline ticker: {e}"),
                );
            }
        };

        let result = prepared.pre.instantiate(&mut store).and_then(|instance| {
            let entry = instance.get_typed_func::<(), ()>(&mut store, prepared.entry)?;
            entry.call(&mut store, ())
        });
        drop(ticker);

        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let guest = store.into_data();
        let failure = match result {
            Ok(()) => None,
            Err(e) => classify(&e, &guest),
        };
        let (output, output_digest) = match failure {
            None => {
                let d = digest(&guest.output);
                (guest.output, Some(d))
            }
            Some(_) => (Vec::new(), None),
        };
        Outcome {
            failure,
            output,
            output_digest,
            fuel_used,
            duration_ms,
            stdout: guest.stdout,
            stderr: guest.stderr,
            executed: true,
        }
    }
}

/// Maps how a run ended to a reason; `None` when the guest exited with 0.
/// What the host recorded comes first, because the error that unwound the
/// guest does not carry it.
fn classify(error: &wasmtime::Error, guest: &Guest) -> Option<Failure> {
    match guest.stop {
        Some(HostStop::Exit(0)) => return None,
        Some(HostStop::Exit(code)) => {
            return Some(Failure {
                exit_code: Some(code),
                ..Failure::new(
                    FailureReason::Trap,
                    format!("guest exited with code {code}"),
                )
            });
        }
        Some(HostStop::OutputTooLarge) => {
            return Some(Failure::new(
                FailureReason::OutputTooLarge,
                format!("output exceeds {} bytes", guest.max_output),
            ));
        }
        Some(HostStop::Timeout) => {
            return Some(Failure::new(
                FailureReason::Timeout,
                "wall-clock deadline passed",
            ));
        }
        Some(HostStop::Halted) => {
            return Some(Failure::new(
                FailureReason::Timeout,
                "stopped: the agent is shutting down",
            ));
        }
        None => {}
    }
    if let Some(detail) = &guest.caps.exceeded {
        return Some(Failure::new(FailureReason::MemoryExceeded, detail.clone()));
    }
    Some(match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Failure::new(FailureReason::FuelExhausted, "fuel exhausted"),
        Some(Trap::Interrupt) => Failure::new(FailureReason::Timeout, "interrupted"),
        Some(trap) => Failure::new(FailureReason::Trap, trap.to_string()),
        None => Failure::new(FailureReason::Trap, format!("{error:#}")),
    })
}

/// The export to call: `run`, else `_start`, of type `[] -> []`.
fn entry_point(module: &Module) -> Result<&'static str, Failure> {
    for name in ["run", "_start"] {
        match module.get_export(name) {
            Some(ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0 => {
                return Ok(name);
            }
            Some(_) => {
                return Err(Failure::new(
                    FailureReason::LinkError,
                    format!("export `{name}` must be a function of type [] -> []"),
                ));
            }
            None => {}
        }
    }
    Err(Failure::new(
        FailureReason::LinkError,
        "module exports neither `run` nor `_start`",
    ))
}

/// Advances the engine's epoch while a run is in progress, and stops (joined)
/// when dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: &Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let engine = engine.clone();
        let thread = std::thread::Builder::new()
            .name("sandbox-epoch".into())
            .spawn(move || {
                // Dropping the sender ends the wait at once (Disconnected).
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(Ticker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The loop cannot panic; a join error would only repeat a panic.
            let _ = thread.join();
        }
    }
}

/// The guest's exported memory; required by every host call that touches
/// guest memory.
fn guest_memory(caller: &mut Caller<'_, Guest>) -> wasmtime::Result<Memory> {
    caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| {
            wasmtime::Error::msg("module must export `memory` to use the host interface")
        })
}

/// `ptr..ptr+len` within a memory of `size` bytes. Pointers are unsigned in
/// wasm32: callers reinterpret the i32 they receive (`as u32`), never
/// sign-extend it.
fn span(ptr: u32, len: usize, size: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(ptr).ok()?;
    let end = start.checked_add(len)?;
    (end <= size).then_some(start..end)
}

/// Charges fuel for host work over `bytes` bytes.
fn charge(caller: &mut Caller<'_, Guest>, bytes: u64) -> wasmtime::Result<()> {
    let cost = 1 + bytes / BYTES_PER_FUEL;
    let fuel = caller.get_fuel()?;
    if fuel < cost {
        caller.set_fuel(0)?;
        return Err(Trap::OutOfFuel.into());
    }
    caller.set_fuel(fuel - cost)
}

fn read_u32(mem: &[u8], at: usize) -> Option<u32> {
    let bytes = mem.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Defines the host interface; nothing else is ever linked.
fn host_interface(engine: &Engine) -> Result<Linker<Guest>, Error> {
    let mut linker = Linker::new(engine);
    let engine_error = |e: wasmtime::Error| Error::Engine(format!("{e:#}"));

    linker
        .func_wrap(
            "edgecoder",
            "input_len",
            |caller: Caller<'_, Guest>| -> i32 {
                i32::try_from(caller.data().input.len()).unwrap_or(i32::MAX)
            },
        )
        .map_err(engine_error)?;

    linker
        .func_wrap(
            "edgecoder",
            "read_input",
            |mut caller: Caller<'_, Guest>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
                let n = caller.data().input.len().min(len as u32 as usize);
                charge(&mut caller, n as u64)?;
                let memory = guest_memory(&mut caller)?;
                let (mem, guest) = memory.data_and_store_mut(&mut caller);
                let size = mem.len();
                let dst = span(ptr as u32, n, size)
                    .and_then(|r| mem.get_mut(r))
                    .ok_or_else(|| wasmtime::Error::msg("read_input: pointer out of bounds"))?;
                dst.copy_from_slice(guest.input.get(..n).unwrap_or_default());
                Ok(i32::try_from(n).unwrap_or(i32::MAX))
            },
        )
        .map_err(engine_error)?;

    linker
        .func_wrap(
            "edgecoder",
            "write_output",
            |mut caller: Caller<'_, Guest>, ptr: i32, len: i32| -> wasmtime::Result<()> {
                let len = len as u32 as usize;
                let guest = caller.data_mut();
                if guest.output.len().saturating_add(len) > guest.max_output {
                    guest.stop = Some(HostStop::OutputTooLarge);
                    return Err(wasmtime::Error::msg("output too large"));
                }
                charge(&mut caller, len as u64)?;
                let memory = guest_memory(&mut caller)?;
                let (mem, guest) = memory.data_and_store_mut(&mut caller);
                let src = span(ptr as u32, len, mem.len())
                    .and_then(|r| mem.get(r))
                    .ok_or_else(|| wasmtime::Error::msg("write_output: pointer out of bounds"))?;
                guest.output.extend_from_slice(src);
                Ok(())
            },
        )
        .map_err(engine_error)?;

    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "fd_write",
            |mut caller: Caller<'_, Guest>,
             fd: i32,
             iovs: i32,
             iovs_len: i32,
             nwritten: i32|
             -> wasmtime::Result<i32> {
                fd_write(&mut caller, fd, iovs, iovs_len, nwritten)
            },
        )
        .map_err(engine_error)?;

    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "proc_exit",
            |mut caller: Caller<'_, Guest>, code: i32| -> wasmtime::Result<()> {
                caller.data_mut().stop = Some(HostStop::Exit(code));
                Err(wasmtime::Error::msg("guest called proc_exit"))
            },
        )
        .map_err(engine_error)?;

    Ok(linker)
}

/// WASI `fd_write` for stdout and stderr only, into capped buffers. Faults are
/// reported as errno (as WASI does), not traps; nothing is written unless
/// every iovec is valid.
fn fd_write(
    caller: &mut Caller<'_, Guest>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(ERRNO_BADF);
    }
    let count = iovs_len as u32;
    if count > MAX_IOVS {
        return Ok(ERRNO_INVAL);
    }
    let memory = guest_memory(caller)?;

    // First pass: validate every iovec and total the length.
    let mut pieces = Vec::with_capacity(count as usize);
    let mut total: u64 = 0;
    {
        let mem = memory.data(&*caller);
        let Some(table) = span(iovs as u32, count as usize * 8, mem.len()) else {
            return Ok(ERRNO_FAULT);
        };
        for i in 0..count as usize {
            let at = table.start + i * 8;
            let (Some(ptr), Some(len)) = (read_u32(mem, at), read_u32(mem, at + 4)) else {
                return Ok(ERRNO_FAULT);
            };
            let Some(range) = span(ptr, len as usize, mem.len()) else {
                return Ok(ERRNO_FAULT);
            };
            total += u64::from(len);
            pieces.push(range);
        }
        if span(nwritten as u32, 4, mem.len()).is_none() {
            return Ok(ERRNO_FAULT);
        }
    }
    let Ok(written) = u32::try_from(total) else {
        return Ok(ERRNO_INVAL);
    };
    charge(caller, total)?;

    // Second pass: copy (the sink drops what is over its cap) and report the
    // full length as written, so a guest does not spin retrying dropped bytes.
    let (mem, guest) = memory.data_and_store_mut(caller);
    let sink = if fd == 1 {
        &mut guest.stdout
    } else {
        &mut guest.stderr
    };
    for range in pieces {
        sink.push(mem.get(range).unwrap_or_default());
    }
    if let Some(out) = span(nwritten as u32, 4, mem.len()).and_then(|r| mem.get_mut(r)) {
        out.copy_from_slice(&written.to_le_bytes());
    }
    Ok(0)
}

/// Runs a task in a process-wide [`Sandbox`], created on first use. For
/// callers that run tasks one at a time and do not want to hold a sandbox.
pub fn run(
    module_bytes: &[u8],
    module_digest: &str,
    input: &[u8],
    input_digest: &str,
    limits: &Limits,
) -> Outcome {
    static SHARED: OnceLock<Result<Sandbox, String>> = OnceLock::new();
    match SHARED.get_or_init(|| Sandbox::new().map_err(|e| e.to_string())) {
        Ok(sandbox) => sandbox.run(module_bytes, module_digest, input, input_digest, limits),
        Err(e) => Outcome::refused(FailureReason::Trap, format!("sandbox unavailable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_stable_strings() {
        let all: Vec<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            all,
            [
                "snapshot_digest_mismatch",
                "outside_subset",
                "timeout",
                "fuel_exhausted",
                "memory_exceeded",
                "trap",
                "link_error",
                "output_too_large",
                "model_not_found",
                "model_not_approved",
                "input_too_large",
                "limits_exceeded",
                "backend_error"
            ]
        );
    }

    #[test]
    fn digest_is_blake3_lowercase_hex() {
        let d = digest(b"abc");
        assert_eq!(d.len(), "blake3:".len() + 64);
        assert!(d.starts_with("blake3:6437b3ac38465133ffb63b75273a8db5"));
        assert!(!d.chars().any(|c| c.is_ascii_uppercase()));
    }

    #[test]
    fn spans_reject_overflow_and_out_of_bounds() {
        assert_eq!(span(0, 4, 4), Some(0..4));
        assert_eq!(span(1, 4, 4), None);
        assert_eq!(span(-1i32 as u32, 1, 1 << 16), None);
        assert_eq!(
            span(u32::MAX, 0, usize::MAX),
            Some(0xffff_ffff..0xffff_ffff)
        );
    }

    #[test]
    fn captured_streams_cap_and_flag() {
        let mut c = Captured::default();
        c.push(&vec![b'a'; STREAM_CAP_BYTES - 1]);
        assert!(!c.truncated);
        c.push(b"bc");
        assert_eq!(c.bytes.len(), STREAM_CAP_BYTES);
        assert!(c.truncated);
    }

    #[test]
    fn details_are_bounded() {
        let f = Failure::new(FailureReason::Trap, "é".repeat(2 * MAX_DETAIL_CHARS));
        assert_eq!(f.detail.chars().count(), MAX_DETAIL_CHARS);
    }
}
