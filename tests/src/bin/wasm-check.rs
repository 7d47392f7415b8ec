//! `wasm-check`: the artefact checks `scripts/test` runs after the wasm
//! builds, without installing the wasm-tools CLI.
//!
//! ```text
//! wasm-check validate [--all-features] FILE...   exit 1 on the first invalid file
//! wasm-check wit PATH                            the WIT of a component or WIT directory
//! ```

use std::path::Path;
use std::process::ExitCode;

use edgecoder_conformance::wasm::{self, Features};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("validate") => {
            let mut features = Features::Default;
            let mut files = Vec::new();
            for arg in &args[1..] {
                if arg == "--all-features" {
                    features = Features::All;
                } else {
                    files.push(Path::new(arg));
                }
            }
            if files.is_empty() {
                usage()
            } else {
                files
                    .into_iter()
                    .try_for_each(|f| wasm::validate(f, features))
            }
        }
        Some("wit") if args.len() == 2 => {
            wasm::component_wit(Path::new(&args[1])).map(|wit| print!("{wit}"))
        }
        _ => usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm-check: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> Result<(), String> {
    Err("usage: wasm-check validate [--all-features] FILE... | wasm-check wit PATH".into())
}
