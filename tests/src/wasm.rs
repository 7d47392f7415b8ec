//! Checks on built wasm artefacts, in process: validation with `wasmparser`
//! and the WIT a component carries, rendered by `wit-component`'s printer.
//!
//! In scope: what the test command used to ask of the `wasm-tools` CLI
//! (`validate`, `component wit`), with the same crates that CLI is built on,
//! so a cold test run does not compile the whole CLI first. The `wasm-check`
//! binary exposes both to `scripts/test`.
//!
//! Out of scope: rewriting or stripping artefacts; the builds themselves.

use std::collections::BTreeSet;
use std::path::Path;

use wasmparser::{Validator, WasmFeatures};
use wit_component::{DecodedWasm, WitPrinter};
use wit_parser::{Resolve, WorldItem, WorldKey};

/// Which proposals a validation accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Features {
    /// What `wasmparser` enables by default: the Worker's core module,
    /// which V8 compiles, is held to this.
    Default,
    /// Every proposal `wasmparser` knows, as `wasm-tools validate
    /// --features all`: components built for wasmtime and Spin.
    All,
}

/// Validates the module or component at `path`.
pub fn validate(path: &Path, features: Features) -> Result<(), String> {
    let bytes = read(path)?;
    let features = match features {
        Features::Default => WasmFeatures::default(),
        Features::All => WasmFeatures::all(),
    };
    Validator::new_with_features(features)
        .validate_all(&bytes)
        .map(|_| ())
        .map_err(|e| format!("{}: invalid: {e}", path.display()))
}

/// The WIT of a component file, or of a WIT package directory, as `wasm-tools
/// component wit` renders it: the main package first (a component's is its
/// synthesized `root:component`), every other package nested after it.
pub fn component_wit(path: &Path) -> Result<String, String> {
    let (resolve, main) = if path.is_dir() {
        let mut resolve = Resolve::default();
        let (pkg, _) = resolve
            .push_dir(path)
            .map_err(|e| format!("{}: {e:#}", path.display()))?;
        (resolve, pkg)
    } else {
        match decode(path)? {
            DecodedWasm::Component(resolve, world) => {
                let pkg = resolve.worlds[world]
                    .package
                    .ok_or_else(|| format!("{}: the world has no package", path.display()))?;
                (resolve, pkg)
            }
            DecodedWasm::WitPackage(resolve, pkg) => (resolve, pkg),
        }
    };
    let nested: Vec<_> = resolve
        .packages
        .iter()
        .map(|(id, _)| id)
        .filter(|id| *id != main)
        .collect();
    let mut printer = WitPrinter::default();
    printer
        .print(&resolve, main, &nested)
        .map_err(|e| format!("{}: {e:#}", path.display()))?;
    Ok(printer.output.to_string())
}

/// The interfaces a component imports, as `namespace:package/interface`
/// without a version; a bare function or type import by its own name.
pub fn component_imports(path: &Path) -> Result<BTreeSet<String>, String> {
    let DecodedWasm::Component(resolve, world) = decode(path)? else {
        return Err(format!("{}: not a component", path.display()));
    };
    Ok(resolve.worlds[world]
        .imports
        .iter()
        .map(|(key, item)| match (key, item) {
            (WorldKey::Interface(id), _) | (_, WorldItem::Interface { id, .. }) => {
                let iface = &resolve.interfaces[*id];
                match (iface.package, &iface.name) {
                    (Some(pkg), Some(name)) => {
                        let pkg = &resolve.packages[pkg].name;
                        format!("{}:{}/{name}", pkg.namespace, pkg.name)
                    }
                    _ => resolve.name_world_key(key),
                }
            }
            _ => resolve.name_world_key(key),
        })
        .collect())
}

fn decode(path: &Path) -> Result<DecodedWasm, String> {
    let bytes = read(path)?;
    // A core module with embedded bindings metadata decodes too; only a
    // component has a world of its own to report.
    if !wasmparser::Parser::is_component(&bytes) {
        return Err(format!("{}: not a component", path.display()));
    }
    wit_component::decode(&bytes).map_err(|e| format!("{}: {e:#}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("edgecoder-wasm-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test setup");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("test setup");
        path
    }

    #[test]
    fn a_valid_module_passes_and_a_broken_one_is_refused() {
        let good = write(
            "good.wasm",
            &wat::parse_str("(module (func (export \"f\")))").expect("test setup"),
        );
        validate(&good, Features::Default).expect("test setup");
        // A function whose body leaves an i32 where it declares no result.
        let bad = write(
            "bad.wasm",
            &wat::parse_str("(module (func (export \"f\") i32.const 1))").expect("test setup"),
        );
        let err = validate(&bad, Features::Default).expect_err("refused");
        assert!(err.contains("invalid"), "{err}");
        let truncated = write("truncated.wasm", b"\0asm\x01\0\0\0\x01");
        assert!(validate(&truncated, Features::All).is_err());
    }

    #[test]
    fn a_core_module_has_no_component_wit() {
        let module = write(
            "core.wasm",
            &wat::parse_str("(module)").expect("test setup"),
        );
        assert!(component_imports(&module).is_err());
    }

    #[test]
    fn a_wit_directory_renders_with_its_dependencies_nested() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/inference");
        let wit = component_wit(&root).expect("test setup");
        // The package's doc comment comes first, then its declaration.
        let first = wit.lines().find(|l| !l.starts_with("///"));
        assert_eq!(first, Some("package edgecoder:inference@0.1.0;"), "{wit}");
        assert!(wit.contains("package wasi:nn@"), "{wit}");
    }
}
