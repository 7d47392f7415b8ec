//! Model releases on disk: making and checking the signed manifest of a
//! model directory (`edgecoder model sign` / `edgecoder model verify`).
//!
//! In scope: listing a directory's files (plain files only: a symlink could
//! point anywhere), hashing each with blake3 as it streams, under a size cap,
//! building the manifest, and checking a directory against a verified
//! manifest: every listed file present with its size and digest, nothing
//! unlisted. Out of scope: the manifest format, DSSE and the signature
//! policy (`edgecoder_proto::model`), and serving models (the GPU host).

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use edgecoder_proto::model::{MAX_FILES, ManifestFile, ModelManifest, valid_file_path};

/// The envelope's file name inside a model directory (never listed).
pub const ENVELOPE: &str = "release.dsse.json";
/// Largest file hashed (64 GiB).
pub const MAX_FILE_BYTES: u64 = 64 << 30;

/// Why a directory does not match its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Stable code: `digest_mismatch`, `file_missing` or `file_unexpected`.
    pub code: &'static str,
    /// Which file, and how.
    pub detail: String,
}

/// `(size, "blake3:<hex>")` of the file at `path`, read in chunks; a file
/// over `cap` bytes is refused as soon as it is.
pub fn hash_file(path: &Path, cap: u64) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > cap {
            bail!("{} is larger than {cap} bytes", path.display());
        }
        hasher.update(&buf[..n]);
    }
    Ok((size, format!("blake3:{}", hasher.finalize().to_hex())))
}

/// The files under `dir` as manifest paths, sorted; symlinks and other
/// non-regular entries are refused, the envelope is left out.
pub fn list_files(dir: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
        let here = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(rel)
        };
        for entry in
            std::fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))?
        {
            let entry = entry?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| anyhow!("a file name under {} is not UTF-8", here.display()))?;
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                bail!("{path} is a symbolic link; a release holds plain files only");
            } else if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                if path != ENVELOPE {
                    out.push(path);
                }
            } else {
                bail!("{path} is not a plain file");
            }
            if out.len() > MAX_FILES {
                bail!("a release holds at most {MAX_FILES} files");
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// The manifest of the model in `dir`.
pub fn manifest_of(
    dir: &Path,
    model: &str,
    publisher: &str,
    created_at: i64,
    expires_at: i64,
) -> Result<ModelManifest> {
    let (name, version) = model
        .split_once('@')
        .ok_or_else(|| anyhow!("--name is name@version"))?;
    let mut files = Vec::new();
    for path in list_files(dir)? {
        if !valid_file_path(&path) {
            bail!("{path}: release files are plain names (letters, digits, . _ -), not hidden");
        }
        let (size, digest) = hash_file(&dir.join(&path), MAX_FILE_BYTES)?;
        files.push(ManifestFile { path, size, digest });
    }
    let m = ModelManifest {
        name: name.to_owned(),
        version: version.to_owned(),
        format: "onnx".into(),
        files,
        created_at,
        expires_at,
        publisher: publisher.to_owned(),
    };
    m.check().map_err(|e| anyhow!("{e}"))?;
    Ok(m)
}

/// Whether `dir` holds exactly the manifest's files, each of its size and
/// digest (a file is hashed only up to its listed size plus one byte).
pub fn check_dir(dir: &Path, manifest: &ModelManifest) -> Result<(), Mismatch> {
    let present = list_files(dir).map_err(|e| Mismatch {
        code: "file_unexpected",
        detail: e.to_string(),
    })?;
    for f in &manifest.files {
        if !present.contains(&f.path) {
            return Err(Mismatch {
                code: "file_missing",
                detail: format!("{} is listed but missing", f.path),
            });
        }
        match hash_file(&dir.join(&f.path), f.size) {
            Ok((size, digest)) if size == f.size && digest == f.digest => {}
            Ok(_) | Err(_) => {
                return Err(Mismatch {
                    code: "digest_mismatch",
                    detail: format!("{} does not match its size and blake3 digest", f.path),
                });
            }
        }
    }
    if let Some(extra) = present
        .iter()
        .find(|p| !manifest.files.iter().any(|f| &f.path == *p))
    {
        return Err(Mismatch {
            code: "file_unexpected",
            detail: format!("{extra} is not in the manifest"),
        });
    }
    Ok(())
}
