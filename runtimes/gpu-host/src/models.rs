//! The model directory: what a model name means on this host.
//!
//! In scope: models on local disk, one directory per `name@version` holding
//! the ONNX file and `manifest.json`; the manifest's blake3 digests checked
//! against the file before any byte reaches the backend; the manifest's own
//! digest. The [`Resolver`] trait is the seam: a resolver answers with
//! verified bytes or a typed refusal. A directory serves the local `infer`
//! command and tests; a node serving the mesh resolves through
//! [`crate::supply`] (signed releases, assigned by the coordinator).
//!
//! Out of scope: compiling graphs and caching them (the host), and fetching
//! models from anywhere.
//!
//! ```text
//! <models>/
//!   tiny-byte@1/
//!     manifest.json   {"name","version","format":"onnx","file","size","digest", tokenizer…}
//!     model.onnx      blake3 must equal manifest.digest, size manifest.size
//! ```

use std::path::{Path, PathBuf};

use edgecoder_proto::inference::valid_model_name;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// Largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Largest model file accepted (4 GiB): far above the test model, below a
/// size that could not be held in memory for the backend.
pub const MAX_MODEL_BYTES: u64 = 4 << 30;

/// A model's manifest (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The model's name (the part before `@`).
    pub name: String,
    /// Its version (the part after `@`).
    pub version: String,
    /// Graph encoding; `onnx` only.
    pub format: String,
    /// The graph's file name inside the model's directory.
    pub file: String,
    /// The file's size in bytes.
    pub size: u64,
    /// `blake3:<hex>` of the file.
    pub digest: String,
    /// The tokenizer (`byte`).
    pub tokenizer: String,
    /// Tokens the model attends to.
    pub context_length: u32,
    /// Logits per position.
    pub vocab_size: u32,
    /// The end-of-text token, if any.
    #[serde(default)]
    pub end_of_text: Option<u32>,
    /// The input tensor's name (f32 token ids, `[1, n]`).
    pub input: String,
    /// The output tensor's name (f32 logits, `[1, n, vocab]` or `[1, 1, vocab]`).
    pub output: String,
}

/// A model resolved and verified: what the guest is told, and the bytes.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `name@version`.
    pub name: String,
    /// The manifest.
    pub manifest: Manifest,
    /// `blake3:<hex>` of the manifest as stored.
    pub manifest_digest: String,
    /// The graph's bytes, matching the manifest's digest.
    pub bytes: Vec<u8>,
}

/// Why a model cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No model of that name.
    NotFound(String),
    /// The model exists but fails its checks.
    NotApproved(String),
}

/// What a model name means: the seam for signed manifests and rollout.
pub trait Resolver: Send + Sync {
    /// The names this resolver can serve now.
    fn names(&self) -> Vec<String>;
    /// The verified model named `name`.
    fn resolve(&self, name: &str) -> Result<Verified, Refusal>;
    /// Whether `name` may be served now (a graph loaded earlier is dropped
    /// once its model is no longer assigned).
    fn serves(&self, _name: &str) -> bool {
        true
    }
    /// Whether the resolver keeps its own record of refused models (the
    /// host then need not remember refusals itself).
    fn tracks_refusals(&self) -> bool {
        false
    }
}

impl<T: Resolver + ?Sized> Resolver for std::sync::Arc<T> {
    fn names(&self) -> Vec<String> {
        (**self).names()
    }
    fn resolve(&self, name: &str) -> Result<Verified, Refusal> {
        (**self).resolve(name)
    }
    fn serves(&self, name: &str) -> bool {
        (**self).serves(name)
    }
    fn tracks_refusals(&self) -> bool {
        (**self).tracks_refusals()
    }
}

/// The family of `name@version`.
pub fn family(model: &str) -> &str {
    model.split_once('@').map_or(model, |(f, _)| f)
}

/// The checks on a model's configuration that do not depend on where it
/// came from: format, tokenizer, context and a plain graph file name.
pub fn check_config(m: &Manifest) -> Result<(), String> {
    if m.format != "onnx" {
        return Err("only onnx models are served".into());
    }
    if m.tokenizer != "byte" || m.vocab_size != 256 {
        return Err("the tokenizer is not one this host implements (byte, vocabulary 256)".into());
    }
    if m.context_length == 0 || m.context_length > 1 << 16 {
        return Err("context_length is out of range".into());
    }
    let plain = |f: &str| {
        !f.is_empty()
            && f != "."
            && f != ".."
            && f != MANIFEST
            && f.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if !plain(&m.file) {
        return Err("the manifest's file is not a plain file name".into());
    }
    if m.size > MAX_MODEL_BYTES {
        return Err("the model file is over the size limit".into());
    }
    Ok(())
}

/// `"blake3:" + hex`.
pub fn digest(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

/// Models in a local directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    /// The directory at `root` (which must exist).
    pub fn open(root: &Path) -> Result<Self, Error> {
        if !root.is_dir() {
            return Err(Error::Config(format!(
                "the model directory {} does not exist",
                root.display()
            )));
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// Adds a model: copies `onnx` into `<root>/<name>/` and writes its
    /// manifest from `template` with the file's size and digest filled in.
    pub fn add(&self, name: &str, onnx: &Path, mut template: Manifest) -> Result<String, Error> {
        if !valid_model_name(name) {
            return Err(Error::Config(format!(
                "{name:?} is not name@version (lowercase letters, digits, . _ -)"
            )));
        }
        let bytes =
            std::fs::read(onnx).map_err(|e| Error::io(format!("reading {}", onnx.display()), e))?;
        let (n, v) = name.split_once('@').unwrap_or((name, ""));
        template.name = n.to_owned();
        template.version = v.to_owned();
        template.size = bytes.len() as u64;
        template.digest = digest(&bytes);
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        std::fs::write(dir.join(&template.file), &bytes)
            .map_err(|e| Error::io("writing the model file", e))?;
        let manifest = serde_json::to_vec_pretty(&template)
            .map_err(|e| Error::Model(format!("encoding the manifest: {e}")))?;
        std::fs::write(dir.join(MANIFEST), &manifest)
            .map_err(|e| Error::io("writing the manifest", e))?;
        Ok(digest(&manifest))
    }

    fn manifest(&self, name: &str) -> Result<(Manifest, String, PathBuf), Refusal> {
        // The name is checked before it touches the filesystem, so it can
        // only ever name a direct child of the root.
        if !valid_model_name(name) {
            return Err(Refusal::NotFound(format!("{name:?} is not a model name")));
        }
        let dir = self.root.join(name);
        let path = dir.join(MANIFEST);
        let meta = std::fs::metadata(&path)
            .map_err(|_| Refusal::NotFound(format!("no model {name} on this host")))?;
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(Refusal::NotApproved(format!(
                "{name}: the manifest is too large"
            )));
        }
        let raw = std::fs::read(&path)
            .map_err(|e| Refusal::NotApproved(format!("{name}: reading the manifest: {e}")))?;
        let manifest: Manifest = serde_json::from_slice(&raw)
            .map_err(|e| Refusal::NotApproved(format!("{name}: the manifest is invalid: {e}")))?;
        let bad = |m: &str| Err(Refusal::NotApproved(format!("{name}: {m}")));
        if format!("{}@{}", manifest.name, manifest.version) != name {
            return bad("the manifest names another model");
        }
        if let Err(m) = check_config(&manifest) {
            return bad(&m);
        }
        let file = dir.join(&manifest.file);
        Ok((manifest, digest(&raw), file))
    }
}

impl Resolver for ModelDir {
    fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| self.manifest(n).is_ok())
            .collect();
        names.sort();
        names
    }

    fn resolve(&self, name: &str) -> Result<Verified, Refusal> {
        let (manifest, manifest_digest, file) = self.manifest(name)?;
        let meta = std::fs::metadata(&file)
            .map_err(|_| Refusal::NotApproved(format!("{name}: the model file is missing")))?;
        if meta.len() != manifest.size {
            return Err(Refusal::NotApproved(format!(
                "{name}: the model file is {} bytes; the manifest says {}",
                meta.len(),
                manifest.size
            )));
        }
        let bytes = std::fs::read(&file)
            .map_err(|e| Refusal::NotApproved(format!("{name}: reading the model file: {e}")))?;
        let actual = digest(&bytes);
        if actual != manifest.digest {
            return Err(Refusal::NotApproved(format!(
                "{name}: the model file's digest {actual} differs from the manifest's {}",
                manifest.digest
            )));
        }
        Ok(Verified {
            name: name.to_owned(),
            manifest,
            manifest_digest,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn template() -> Manifest {
        Manifest {
            name: String::new(),
            version: String::new(),
            format: "onnx".into(),
            file: "model.onnx".into(),
            size: 0,
            digest: String::new(),
            tokenizer: "byte".into(),
            context_length: 64,
            vocab_size: 256,
            end_of_text: None,
            input: "input_ids".into(),
            output: "logits".into(),
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("edgecoder-models-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn a_file_that_differs_from_its_manifest_is_refused() {
        let root = scratch("digest");
        let src = root.join("src.onnx");
        std::fs::write(&src, b"graph bytes").expect("write");
        let dir = ModelDir::open(&root).expect("open");
        let manifest_digest = dir.add("m@1", &src, template()).expect("add");
        let ok = dir.resolve("m@1").expect("resolves");
        assert_eq!(ok.manifest_digest, manifest_digest);
        assert_eq!(ok.bytes, b"graph bytes");
        assert_eq!(dir.names(), vec!["m@1".to_owned()]);
        // Same size, other bytes.
        std::fs::write(root.join("m@1/model.onnx"), b"graph bytez").expect("write");
        assert!(matches!(dir.resolve("m@1"), Err(Refusal::NotApproved(m)) if m.contains("digest")));
        std::fs::write(root.join("m@1/model.onnx"), b"short").expect("write");
        assert!(matches!(dir.resolve("m@1"), Err(Refusal::NotApproved(_))));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn names_cannot_leave_the_directory() {
        let root = scratch("names");
        let dir = ModelDir::open(&root).expect("open");
        for bad in [
            "../m@1",
            "m@1/../../x",
            "m",
            "/etc@passwd",
            "m@1/manifest.json",
        ] {
            assert!(
                matches!(dir.resolve(bad), Err(Refusal::NotFound(_))),
                "{bad}"
            );
        }
        assert!(matches!(dir.resolve("absent@1"), Err(Refusal::NotFound(_))));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_manifest_naming_a_path_is_refused() {
        let root = scratch("path");
        let src = root.join("src.onnx");
        std::fs::write(&src, b"x").expect("write");
        let dir = ModelDir::open(&root).expect("open");
        dir.add("m@1", &src, template()).expect("add");
        let path = root.join("m@1").join(MANIFEST);
        let mut m: Manifest =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        m.file = "../src.onnx".into();
        std::fs::write(&path, serde_json::to_vec(&m).expect("json")).expect("write");
        assert!(matches!(dir.resolve("m@1"), Err(Refusal::NotApproved(_))));
        let _ = std::fs::remove_dir_all(&root);
    }
}
