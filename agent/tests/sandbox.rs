//! Attack cases for the task sandbox: each hostile module must end in its
//! stable failure reason, and the same sandbox must then still run a
//! well-behaved module. No assertion depends on timing.

use edgecoder_agent::sandbox::{
    self, DEFAULT_MAX_OUTPUT_BYTES, FailureReason, Limits, Outcome, STREAM_CAP_BYTES, Sandbox,
    digest,
};

/// Uppercases ASCII letters of its input.
const UPPERCASE: &str = r#"(module
    (import "edgecoder" "input_len" (func $input_len (result i32)))
    (import "edgecoder" "read_input" (func $read_input (param i32 i32) (result i32)))
    (import "edgecoder" "write_output" (func $write_output (param i32 i32)))
    (memory (export "memory") 1)
    (func (export "run")
        (local $n i32) (local $i i32) (local $c i32)
        (local.set $n (call $read_input (i32.const 0) (call $input_len)))
        (block $done
            (loop $next
                (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
                (local.set $c (i32.load8_u (local.get $i)))
                (if (i32.and (i32.ge_u (local.get $c) (i32.const 97))
                             (i32.le_u (local.get $c) (i32.const 122)))
                    (then (i32.store8 (local.get $i) (i32.sub (local.get $c) (i32.const 32)))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $next)))
        (call $write_output (i32.const 0) (local.get $n))))"#;

fn wasm(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("test module is valid WAT")
}

fn limits() -> Limits {
    Limits::new(16, 10_000_000, 5_000)
}

fn run(sandbox: &Sandbox, module: &[u8], input: &[u8], limits: &Limits) -> Outcome {
    sandbox.run(module, &digest(module), input, &digest(input), limits)
}

fn run_text(sandbox: &Sandbox, text: &str, limits: &Limits) -> Outcome {
    run(sandbox, &wasm(text), b"", limits)
}

/// The sandbox still works after whatever ran before.
fn assert_healthy(sandbox: &Sandbox) {
    let outcome = run(sandbox, &wasm(UPPERCASE), b"still alive", &limits());
    assert!(outcome.is_ok(), "healthy run failed: {:?}", outcome.failure);
    assert_eq!(outcome.output, b"STILL ALIVE");
}

fn assert_fails(outcome: &Outcome, reason: FailureReason) {
    let failure = outcome
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected {reason}, got success"));
    assert_eq!(failure.reason, reason, "detail: {}", failure.detail);
    assert!(outcome.output.is_empty());
    assert_eq!(outcome.output_digest, None);
}

#[test]
fn well_behaved_module_transforms_its_input() {
    let sandbox = Sandbox::new().expect("sandbox");
    let outcome = run(&sandbox, &wasm(UPPERCASE), b"hello, mesh! 123", &limits());
    assert!(outcome.is_ok(), "{:?}", outcome.failure);
    assert_eq!(outcome.output, b"HELLO, MESH! 123");
    assert_eq!(
        outcome.output_digest.as_deref(),
        Some(digest(b"HELLO, MESH! 123").as_str())
    );
    assert!(outcome.fuel_used > 0);
    assert!(outcome.executed);
    assert_eq!(outcome.error_code(), None);
    // The process-wide convenience entry point behaves the same.
    let module = wasm(UPPERCASE);
    let again = sandbox::run(&module, &digest(&module), b"ab", &digest(b"ab"), &limits());
    assert_eq!(again.output, b"AB");
}

/// Writes "ran" to the output from its start function and its entry point:
/// any execution would show.
const WOULD_WRITE: &str = r#"(module
    (import "edgecoder" "write_output" (func $w (param i32 i32)))
    (memory (export "memory") 1)
    (data (i32.const 0) "ran")
    (func $start (call $w (i32.const 0) (i32.const 3)))
    (start $start)
    (func (export "run") (call $w (i32.const 0) (i32.const 3))))"#;

#[test]
fn module_digest_mismatch_runs_nothing() {
    let sandbox = Sandbox::new().expect("sandbox");
    let module = wasm(WOULD_WRITE);
    let other = digest(b"some other module");
    let outcome = sandbox.run(&module, &other, b"", &digest(b""), &limits());
    assert_fails(&outcome, FailureReason::SnapshotDigestMismatch);
    assert!(!outcome.executed);
    assert_eq!(outcome.fuel_used, 0);
    // Uppercase hex is not the canonical form and does not match either.
    let upper = digest(&module).to_uppercase().replace("BLAKE3:", "blake3:");
    let outcome = sandbox.run(&module, &upper, b"", &digest(b""), &limits());
    assert_fails(&outcome, FailureReason::SnapshotDigestMismatch);
    assert_healthy(&sandbox);
}

#[test]
fn input_digest_mismatch_runs_nothing() {
    let sandbox = Sandbox::new().expect("sandbox");
    let module = wasm(WOULD_WRITE);
    let outcome = sandbox.run(
        &module,
        &digest(&module),
        b"tampered input",
        &digest(b"original input"),
        &limits(),
    );
    assert_fails(&outcome, FailureReason::SnapshotDigestMismatch);
    assert!(!outcome.executed);
    assert_eq!(outcome.fuel_used, 0);
    // The same module with matching digests does run (so the check above
    // is what stopped it).
    let ran = run(&sandbox, &module, b"", &limits());
    assert_eq!(ran.output, b"ranran");
    assert_healthy(&sandbox);
}

const SPIN: &str = r#"(module (func (export "run") (loop $l (br $l))))"#;

#[test]
fn infinite_loop_with_ample_fuel_times_out() {
    let sandbox = Sandbox::new().expect("sandbox");
    let outcome = run_text(&sandbox, SPIN, &Limits::new(16, u64::MAX, 100));
    assert_fails(&outcome, FailureReason::Timeout);
    assert!(outcome.executed);
    assert_healthy(&sandbox);
}

#[test]
fn infinite_loop_in_the_start_function_times_out() {
    let sandbox = Sandbox::new().expect("sandbox");
    let text = r#"(module
        (func $spin (loop $l (br $l)))
        (start $spin)
        (func (export "run")))"#;
    let outcome = run_text(&sandbox, text, &Limits::new(16, u64::MAX, 100));
    assert_fails(&outcome, FailureReason::Timeout);
    assert_healthy(&sandbox);
}

#[test]
fn infinite_loop_with_little_fuel_runs_out_of_fuel() {
    let sandbox = Sandbox::new().expect("sandbox");
    let outcome = run_text(&sandbox, SPIN, &Limits::new(16, 10_000, 60_000));
    assert_fails(&outcome, FailureReason::FuelExhausted);
    assert_eq!(outcome.fuel_used, 10_000);
    assert_healthy(&sandbox);
}

#[test]
fn memory_grow_beyond_the_cap_is_memory_exceeded() {
    let sandbox = Sandbox::new().expect("sandbox");
    let text = r#"(module
        (memory (export "memory") 1)
        (func (export "run")
            (loop $l
                (drop (memory.grow (i32.const 1)))
                (br $l))))"#;
    let outcome = run_text(&sandbox, text, &Limits::new(2, u64::MAX, 60_000));
    assert_fails(&outcome, FailureReason::MemoryExceeded);
    assert_healthy(&sandbox);
}

#[test]
fn initial_memory_beyond_the_cap_is_memory_exceeded() {
    let sandbox = Sandbox::new().expect("sandbox");
    // 100 pages = 6.25 MiB against a 1 MiB cap.
    let text = r#"(module (memory (export "memory") 100) (func (export "run")))"#;
    let outcome = run_text(&sandbox, text, &Limits::new(1, 1_000_000, 5_000));
    assert_fails(&outcome, FailureReason::MemoryExceeded);
    assert_healthy(&sandbox);
}

#[test]
fn huge_table_is_memory_exceeded() {
    let sandbox = Sandbox::new().expect("sandbox");
    let text = r#"(module (table 10000000 funcref) (func (export "run")))"#;
    let outcome = run_text(&sandbox, text, &limits());
    assert_fails(&outcome, FailureReason::MemoryExceeded);
    assert_healthy(&sandbox);
}

#[test]
fn unbounded_recursion_traps() {
    let sandbox = Sandbox::new().expect("sandbox");
    let text = r#"(module (func $r (export "run") (call $r)))"#;
    let outcome = run_text(&sandbox, text, &Limits::new(16, u64::MAX, 60_000));
    assert_fails(&outcome, FailureReason::Trap);
    assert_healthy(&sandbox);
}

#[test]
fn unreachable_traps() {
    let sandbox = Sandbox::new().expect("sandbox");
    let outcome = run_text(
        &sandbox,
        r#"(module (func (export "run") unreachable))"#,
        &limits(),
    );
    assert_fails(&outcome, FailureReason::Trap);
    assert_healthy(&sandbox);
}

#[test]
fn out_of_bounds_host_pointers_trap() {
    let sandbox = Sandbox::new().expect("sandbox");
    for call in [
        r#"(drop (call $read (i32.const 65530) (i32.const 100)))"#,
        r#"(drop (call $read (i32.const -1) (i32.const 10)))"#,
        r#"(call $write (i32.const 65535) (i32.const 2))"#,
    ] {
        let text = format!(
            r#"(module
                (import "edgecoder" "read_input" (func $read (param i32 i32) (result i32)))
                (import "edgecoder" "write_output" (func $write (param i32 i32)))
                (memory (export "memory") 1)
                (func (export "run") {call}))"#
        );
        let outcome = run(&sandbox, &wasm(&text), &[7u8; 64], &limits());
        assert_fails(&outcome, FailureReason::Trap);
    }
    assert_healthy(&sandbox);
}

#[test]
fn host_calls_without_an_exported_memory_trap() {
    let sandbox = Sandbox::new().expect("sandbox");
    let text = r#"(module
        (import "edgecoder" "write_output" (func $w (param i32 i32)))
        (memory 1)
        (func (export "run") (call $w (i32.const 0) (i32.const 1))))"#;
    assert_fails(&run_text(&sandbox, text, &limits()), FailureReason::Trap);
    assert_healthy(&sandbox);
}

fn importing(module: &str, name: &str, ty: &str) -> String {
    format!(
        r#"(module
            (import "{module}" "{name}" (func {ty}))
            (memory (export "memory") 1)
            (func (export "run")))"#
    )
}

#[test]
fn filesystem_imports_are_link_errors() {
    let sandbox = Sandbox::new().expect("sandbox");
    let text = importing(
        "wasi_snapshot_preview1",
        "path_open",
        "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)",
    );
    let outcome = run_text(&sandbox, &text, &limits());
    assert_fails(&outcome, FailureReason::LinkError);
    assert!(!outcome.executed);
    assert_healthy(&sandbox);
}

#[test]
fn socket_imports_are_link_errors() {
    let sandbox = Sandbox::new().expect("sandbox");
    let text = importing(
        "wasi_snapshot_preview1",
        "sock_accept",
        "(param i32 i32 i32) (result i32)",
    );
    assert_fails(
        &run_text(&sandbox, &text, &limits()),
        FailureReason::LinkError,
    );
    let text = importing(
        "wasi:sockets/tcp@0.2.0",
        "[method]tcp-socket.accept",
        "(param i32)",
    );
    assert_fails(
        &run_text(&sandbox, &text, &limits()),
        FailureReason::LinkError,
    );
    assert_healthy(&sandbox);
}

#[test]
fn environment_clock_and_random_imports_are_link_errors() {
    let sandbox = Sandbox::new().expect("sandbox");
    for (module, name, ty) in [
        ("env", "anything", "(param i32)"),
        (
            "wasi_snapshot_preview1",
            "environ_get",
            "(param i32 i32) (result i32)",
        ),
        (
            "wasi_snapshot_preview1",
            "args_get",
            "(param i32 i32) (result i32)",
        ),
        (
            "wasi_snapshot_preview1",
            "clock_time_get",
            "(param i32 i64 i32) (result i32)",
        ),
        (
            "wasi_snapshot_preview1",
            "random_get",
            "(param i32 i32) (result i32)",
        ),
        (
            "wasi_snapshot_preview1",
            "fd_read",
            "(param i32 i32 i32 i32) (result i32)",
        ),
    ] {
        let outcome = run_text(&sandbox, &importing(module, name, ty), &limits());
        assert_fails(&outcome, FailureReason::LinkError);
    }
    assert_healthy(&sandbox);
}

#[test]
fn host_functions_with_the_wrong_type_are_link_errors() {
    let sandbox = Sandbox::new().expect("sandbox");
    let text = importing(
        "wasi_snapshot_preview1",
        "fd_write",
        "(param i32) (result i32)",
    );
    assert_fails(
        &run_text(&sandbox, &text, &limits()),
        FailureReason::LinkError,
    );
    // Importing a memory from the host is not offered either.
    let text = r#"(module (import "edgecoder" "memory" (memory 1)) (func (export "run")))"#;
    assert_fails(
        &run_text(&sandbox, text, &limits()),
        FailureReason::LinkError,
    );
    assert_healthy(&sandbox);
}

#[test]
fn missing_or_mistyped_entry_points_are_link_errors() {
    let sandbox = Sandbox::new().expect("sandbox");
    for text in [
        r#"(module (func (export "main")))"#,
        r#"(module (func (export "run") (param i32)))"#,
        r#"(module (memory (export "run") 1))"#,
    ] {
        assert_fails(
            &run_text(&sandbox, text, &limits()),
            FailureReason::LinkError,
        );
    }
    // `_start` is accepted when `run` is absent.
    let text = r#"(module
        (import "edgecoder" "write_output" (func $w (param i32 i32)))
        (memory (export "memory") 1)
        (data (i32.const 0) "start")
        (func (export "_start") (call $w (i32.const 0) (i32.const 5))))"#;
    let outcome = run_text(&sandbox, text, &limits());
    assert_eq!(outcome.output, b"start");
    assert_healthy(&sandbox);
}

#[test]
fn modules_outside_the_subset_are_refused() {
    let sandbox = Sandbox::new().expect("sandbox");
    // Not wasm at all, and wasm as text (only binaries are tasks).
    let outcome = run(&sandbox, b"\0asm\x01\0\0\0garbage", b"", &limits());
    assert_fails(&outcome, FailureReason::OutsideSubset);
    let text = br#"(module (func (export "run")))"#;
    assert_fails(
        &run(&sandbox, text, b"", &limits()),
        FailureReason::OutsideSubset,
    );
    // Shared memory (threads), memory64 and multiple memories are disabled.
    for text in [
        r#"(module (memory (export "memory") 1 1 shared) (func (export "run")))"#,
        r#"(module (memory (export "memory") i64 1) (func (export "run")))"#,
        r#"(module (memory 1) (memory 1) (func (export "run")))"#,
    ] {
        let outcome = run_text(&sandbox, text, &limits());
        assert_fails(&outcome, FailureReason::OutsideSubset);
        assert!(!outcome.executed);
    }
    assert_healthy(&sandbox);
}

#[test]
fn output_beyond_the_cap_is_output_too_large() {
    let sandbox = Sandbox::new().expect("sandbox");
    // 64 KiB per write, forever: crosses 1 MiB on the 17th write.
    let text = r#"(module
        (import "edgecoder" "write_output" (func $w (param i32 i32)))
        (memory (export "memory") 1)
        (func (export "run")
            (loop $l
                (call $w (i32.const 0) (i32.const 65536))
                (br $l))))"#;
    let outcome = run_text(&sandbox, text, &Limits::new(16, u64::MAX, 60_000));
    assert_fails(&outcome, FailureReason::OutputTooLarge);
    // A single write that is too large, with a smaller cap.
    let one_big = r#"(module
        (import "edgecoder" "write_output" (func $w (param i32 i32)))
        (memory (export "memory") 1)
        (func (export "run") (call $w (i32.const 0) (i32.const 2048))))"#;
    let small_cap = Limits {
        max_output_bytes: 1024,
        ..limits()
    };
    assert_fails(
        &run_text(&sandbox, one_big, &small_cap),
        FailureReason::OutputTooLarge,
    );
    // Exactly the cap is fine.
    let ok = Limits {
        max_output_bytes: 2048,
        ..limits()
    };
    let outcome = run_text(&sandbox, one_big, &ok);
    assert!(outcome.is_ok(), "{:?}", outcome.failure);
    assert_eq!(outcome.output.len(), 2048);
    assert_eq!(limits().max_output_bytes, DEFAULT_MAX_OUTPUT_BYTES);
    assert_healthy(&sandbox);
}

/// Writes `text` (plain ASCII without WAT escapes, at offset 16) `times` times to `fd` through `fd_write`, then
/// writes the last errno and `nwritten` to the output as two little-endian
/// i32s.
fn fd_writer(fd: i32, text: &str, times: u32) -> String {
    let len = text.len();
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (import "edgecoder" "write_output" (func $out (param i32 i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "{text}")
            (func (export "run")
                (local $i i32)
                ;; iovec at 0: {{ptr = 16, len}}; nwritten at 12; errno at 8.
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const {len}))
                (block $done
                    (loop $again
                        (br_if $done (i32.ge_u (local.get $i) (i32.const {times})))
                        (i32.store (i32.const 8)
                            (call $fd_write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 12)))
                        (local.set $i (i32.add (local.get $i) (i32.const 1)))
                        (br $again)))
                (call $out (i32.const 8) (i32.const 8))))"#
    )
}

fn errno_and_written(outcome: &Outcome) -> (i32, i32) {
    let word =
        |at: usize| i32::from_le_bytes(outcome.output[at..at + 4].try_into().expect("four bytes"));
    (word(0), word(4))
}

#[test]
fn stdout_and_stderr_are_captured() {
    let sandbox = Sandbox::new().expect("sandbox");
    let outcome = run_text(&sandbox, &fd_writer(1, "hello", 1), &limits());
    assert!(outcome.is_ok(), "{:?}", outcome.failure);
    assert_eq!(outcome.stdout.bytes, b"hello");
    assert!(!outcome.stdout.truncated);
    assert!(outcome.stderr.bytes.is_empty());
    assert_eq!(errno_and_written(&outcome), (0, 5));

    let outcome = run_text(&sandbox, &fd_writer(2, "oops", 2), &limits());
    assert_eq!(outcome.stderr.lossy(), "oopsoops");
    assert!(outcome.stdout.bytes.is_empty());
    assert_healthy(&sandbox);
}

#[test]
fn captured_streams_are_capped() {
    let sandbox = Sandbox::new().expect("sandbox");
    let line = "x".repeat(1000);
    let outcome = run_text(&sandbox, &fd_writer(1, &line, 100), &limits());
    assert!(outcome.is_ok(), "{:?}", outcome.failure);
    assert_eq!(outcome.stdout.bytes.len(), STREAM_CAP_BYTES);
    assert!(outcome.stdout.truncated);
    // Dropped bytes still count as written, so guests do not retry forever.
    assert_eq!(errno_and_written(&outcome), (0, 1000));
    assert_healthy(&sandbox);
}

#[test]
fn other_file_descriptors_are_bad() {
    let sandbox = Sandbox::new().expect("sandbox");
    for fd in [0, 3, -1] {
        let outcome = run_text(&sandbox, &fd_writer(fd, "secret", 1), &limits());
        assert!(outcome.is_ok(), "{:?}", outcome.failure);
        assert_eq!(errno_and_written(&outcome).0, 8, "fd {fd}: EBADF");
        assert!(outcome.stdout.bytes.is_empty() && outcome.stderr.bytes.is_empty());
    }
    assert_healthy(&sandbox);
}

#[test]
fn fd_write_faults_are_errno_not_writes() {
    let sandbox = Sandbox::new().expect("sandbox");
    // An iovec pointing past the end of memory: EFAULT, nothing captured.
    let text = r#"(module
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (import "edgecoder" "write_output" (func $out (param i32 i32)))
        (memory (export "memory") 1)
        (func (export "run")
            (i32.store (i32.const 0) (i32.const 65530))
            (i32.store (i32.const 4) (i32.const 100))
            (i32.store (i32.const 8)
                (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
            (call $out (i32.const 8) (i32.const 4))))"#;
    let outcome = run_text(&sandbox, text, &limits());
    assert!(outcome.is_ok(), "{:?}", outcome.failure);
    assert_eq!(outcome.output, 21i32.to_le_bytes());
    assert!(outcome.stdout.bytes.is_empty());
    assert_healthy(&sandbox);
}

#[test]
fn proc_exit_zero_succeeds_and_nonzero_traps() {
    let sandbox = Sandbox::new().expect("sandbox");
    let exit_with = |code: i32| {
        format!(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (import "edgecoder" "write_output" (func $w (param i32 i32)))
                (memory (export "memory") 1)
                (data (i32.const 0) "partial")
                (func (export "_start")
                    (call $w (i32.const 0) (i32.const 7))
                    (call $exit (i32.const {code}))
                    (call $w (i32.const 0) (i32.const 7))))"#
        )
    };
    let outcome = run_text(&sandbox, &exit_with(0), &limits());
    assert!(outcome.is_ok(), "{:?}", outcome.failure);
    assert_eq!(outcome.output, b"partial", "nothing after proc_exit runs");

    let outcome = run_text(&sandbox, &exit_with(3), &limits());
    assert_fails(&outcome, FailureReason::Trap);
    assert_eq!(outcome.failure.as_ref().and_then(|f| f.exit_code), Some(3));
    assert_healthy(&sandbox);
}

#[test]
fn concurrent_runs_do_not_cut_each_other_short() {
    let sandbox = Sandbox::new().expect("sandbox");
    std::thread::scope(|s| {
        let spinner = s.spawn(|| run_text(&sandbox, SPIN, &Limits::new(16, u64::MAX, 300)));
        for _ in 0..20 {
            assert_healthy(&sandbox);
        }
        let outcome = spinner.join().expect("spinner thread");
        assert_fails(&outcome, FailureReason::Timeout);
    });
}
