//! The node's identity on this device: its P-256 key and its local settings.
//!
//! In scope: generating the key on the device from OS randomness, keeping it
//! as PKCS#8 PEM in a file only the owner can read (created 0600, never
//! silently overwritten, refused on load when others can read it), the agent
//! directory (0700) and `agent.json` (node id, kind, coordinator URL), the
//! key id and the public key in its wire form.
//!
//! Out of scope: talking to the coordinator ([`crate::client`]) and key
//! rotation (a new key means `init --force` and registering again).

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use p256::ecdsa::SigningKey;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use serde::{Deserialize, Serialize};

use edgecoder_proto::NodeId;
use edgecoder_proto::mesh::NodeKind;

use crate::Error;

/// The key file inside the agent directory.
pub const KEY_FILE: &str = "node-key.pem";
/// The settings file inside the agent directory.
pub const CONFIG_FILE: &str = "agent.json";
/// Environment variable naming the agent directory.
pub const DIR_ENV: &str = "EDGECODER_AGENT_DIR";
/// The node kind this binary registers as.
pub const DEFAULT_KIND: NodeKind = NodeKind::Agent;

/// `agent.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The node's id at the coordinator.
    pub node_id: String,
    /// The node kind.
    pub kind: NodeKind,
    /// The coordinator's base URL, once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    /// The device class reported in telemetry, detected at `init` (or set
    /// there with `--device-type`): the coordinator's policy for a laptop
    /// or phone differs from a server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<edgecoder_proto::mesh::DeviceType>,
}

/// The node: its directory, settings and key.
pub struct Node {
    dir: PathBuf,
    config: AgentConfig,
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Node")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The agent directory: `$EDGECODER_AGENT_DIR`, else `$HOME/.edgecoder-agent`.
pub fn default_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Config(format!("set {DIR_ENV} or HOME, or pass --dir")))?;
    Ok(PathBuf::from(home).join(".edgecoder-agent"))
}

/// Fills `buf` from the operating system's randomness.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(buf).map_err(|e| Error::Random(e.to_string()))
}

/// A fresh P-256 key from OS randomness.
pub fn generate_key() -> Result<SigningKey, Error> {
    loop {
        let mut scalar = [0u8; 32];
        random_bytes(&mut scalar)?;
        // 32 random bytes are a valid scalar except with negligible
        // probability (zero or not below the group order): draw again then.
        let key = SigningKey::from_slice(&scalar);
        scalar.fill(0);
        if let Ok(key) = key {
            return Ok(key);
        }
    }
}

pub use edgecoder_proto::keys::public_key_b64url;

/// Whether `id` is an acceptable node id (`edgecoder_proto::NodeId`), checked
/// here so `init` fails early rather than at registration.
pub fn valid_node_id(id: &str) -> bool {
    NodeId::is_valid(id)
}

impl Node {
    /// Creates the directory (0700), a new key (0600) and `agent.json`.
    /// Refuses to replace an existing key unless `force`. Without a node id,
    /// one is derived from the key id (`node-<key id>`).
    pub fn init(
        dir: &Path,
        node_id: Option<&str>,
        kind: NodeKind,
        force: bool,
    ) -> Result<Node, Error> {
        if let Some(id) = node_id
            && !valid_node_id(id)
        {
            return Err(Error::Config(format!(
                "invalid node id {id:?}: {} to {} of a-z 0-9 . _ -, starting with a letter or digit",
                edgecoder_proto::node_id::MIN_LEN,
                edgecoder_proto::node_id::MAX_LEN
            )));
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;

        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            if !force {
                return Err(Error::Key(format!(
                    "{} already exists; pass --force to replace it (the node must then register again)",
                    key_path.display()
                )));
            }
            std::fs::remove_file(&key_path)
                .map_err(|e| Error::io(format!("removing {}", key_path.display()), e))?;
        }

        let key = generate_key()?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::Key(format!("cannot encode the key: {e}")))?;
        write_private(&key_path, pem.as_bytes(), true)?;

        let key_id = edgecoder_proto::keys::key_id(key.verifying_key());
        let config = AgentConfig {
            node_id: node_id.map_or_else(|| format!("node-{key_id}"), str::to_owned),
            kind,
            coordinator: None,
            device_type: None,
        };
        let node = Node {
            dir: dir.to_owned(),
            config,
            key,
            key_id,
        };
        node.save_config()?;
        Ok(node)
    }

    /// Loads the key and `agent.json` from `dir`. Refuses a key file that
    /// group or others can read, as ssh does.
    pub fn load(dir: &Path) -> Result<Node, Error> {
        let key_path = dir.join(KEY_FILE);
        let meta = std::fs::metadata(&key_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Key(format!(
                    "{} not found; run `edgecoder-agent init` first",
                    key_path.display()
                ))
            } else {
                Error::io(format!("reading {}", key_path.display()), e)
            }
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Key(format!(
                "{} has mode {mode:o}; it must be readable by its owner only (chmod 600)",
                key_path.display()
            )));
        }
        let pem = std::fs::read_to_string(&key_path)
            .map_err(|e| Error::io(format!("reading {}", key_path.display()), e))?;
        let key = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|_| {
            Error::Key(format!(
                "{} is not a PKCS#8 PEM P-256 private key",
                key_path.display()
            ))
        })?;

        let config_path = dir.join(CONFIG_FILE);
        let raw = std::fs::read(&config_path)
            .map_err(|e| Error::io(format!("reading {}", config_path.display()), e))?;
        let config: AgentConfig = serde_json::from_slice(&raw)
            .map_err(|e| Error::Config(format!("{}: {e}", config_path.display())))?;
        if !valid_node_id(&config.node_id) {
            return Err(Error::Config(format!(
                "{}: invalid node id {:?}",
                config_path.display(),
                config.node_id
            )));
        }
        let key_id = edgecoder_proto::keys::key_id(key.verifying_key());
        Ok(Node {
            dir: dir.to_owned(),
            config,
            key,
            key_id,
        })
    }

    /// Writes `agent.json` (replacing it atomically).
    pub fn save_config(&self) -> Result<(), Error> {
        let mut json = serde_json::to_vec_pretty(&self.config)
            .map_err(|e| Error::Config(format!("cannot encode agent.json: {e}")))?;
        json.push(b'\n');
        let tmp = self.dir.join(format!(".{CONFIG_FILE}.tmp"));
        // A leftover from an interrupted write is ours to replace.
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, &json, false)?;
        let path = self.dir.join(CONFIG_FILE);
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("replacing {}", path.display()), e))
    }

    /// Records the device class and saves `agent.json`.
    pub fn set_device_type(
        &mut self,
        device_type: edgecoder_proto::mesh::DeviceType,
    ) -> Result<(), Error> {
        self.config.device_type = Some(device_type);
        self.save_config()
    }

    /// Records the coordinator's URL and saves `agent.json`.
    pub fn set_coordinator(&mut self, url: &str) -> Result<(), Error> {
        self.config.coordinator = Some(url.trim_end_matches('/').to_owned());
        self.save_config()
    }

    /// The agent directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The key id (`edgecoder_proto::keys::key_id` of the public key).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key in its wire form (see [`public_key_b64url`]).
    pub fn public_key(&self) -> String {
        public_key_b64url(self.key.verifying_key())
    }
}

/// Creates `path` (which must not exist) with mode 0600 from the start, so the
/// contents are never readable by others, not even briefly.
fn write_private(path: &Path, bytes: &[u8], sync: bool) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    if sync {
        file.sync_all()
            .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::ecdsa::VerifyingKey;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let mut suffix = [0u8; 8];
        random_bytes(&mut suffix).expect("randomness");
        let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        std::env::temp_dir().join(format!("edgecoder-agent-{name}-{hex}"))
    }

    #[test]
    fn init_creates_a_private_key_and_settings() {
        let dir = temp_dir("init");
        let node = Node::init(&dir, None, DEFAULT_KIND, false).expect("init");
        let key_mode = std::fs::metadata(dir.join(KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(node.node_id(), format!("node-{}", node.key_id()));
        assert_eq!(node.key_id().len(), 16);

        let loaded = Node::load(&dir).expect("load");
        assert_eq!(loaded.key_id(), node.key_id());
        assert_eq!(loaded.config(), node.config());
        assert!(!format!("{loaded:?}").contains("key:"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn init_refuses_to_overwrite_a_key_without_force() {
        let dir = temp_dir("overwrite");
        let first = Node::init(&dir, Some("node-1"), DEFAULT_KIND, false).expect("init");
        let err = Node::init(&dir, Some("node-1"), DEFAULT_KIND, false).expect_err("must refuse");
        assert!(matches!(err, Error::Key(_)), "{err}");
        assert_eq!(
            Node::load(&dir).expect("load").key_id(),
            first.key_id(),
            "the old key is untouched"
        );
        let second = Node::init(&dir, Some("node-1"), DEFAULT_KIND, true).expect("forced");
        assert_ne!(second.key_id(), first.key_id());
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn load_refuses_a_key_others_can_read() {
        let dir = temp_dir("mode");
        Node::init(&dir, Some("node-2"), DEFAULT_KIND, false).expect("init");
        std::fs::set_permissions(dir.join(KEY_FILE), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        assert!(matches!(Node::load(&dir), Err(Error::Key(_))));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn coordinator_is_saved() {
        let dir = temp_dir("coord");
        let mut node = Node::init(&dir, Some("node-3"), DEFAULT_KIND, false).expect("init");
        node.set_coordinator("http://127.0.0.1:8787/")
            .expect("save");
        let loaded = Node::load(&dir).expect("load");
        assert_eq!(
            loaded.config().coordinator.as_deref(),
            Some("http://127.0.0.1:8787")
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn bad_ids_and_kinds_are_refused() {
        let dir = temp_dir("ids");
        for id in [
            "",
            "ab",
            "a/b/c",
            "a b c",
            "Node-1",
            "-node",
            "node..1",
            &"x".repeat(64),
            "nodeü",
        ] {
            assert!(
                matches!(
                    Node::init(&dir, Some(id), DEFAULT_KIND, false),
                    Err(Error::Config(_))
                ),
                "{id:?}"
            );
        }
        assert_eq!(NodeKind::parse("Agent!"), None);
        assert!(!dir.exists(), "nothing written for refused input");
        assert!(valid_node_id("abc") && valid_node_id(&"x".repeat(63)));
        assert!(valid_node_id("0.edge_node-7"));
    }

    #[test]
    fn public_key_is_the_uncompressed_point() {
        let key = generate_key().expect("key");
        let wire = public_key_b64url(key.verifying_key());
        let raw = URL_SAFE_NO_PAD.decode(&wire).expect("base64url");
        assert_eq!(raw.len(), 65);
        assert_eq!(raw[0], 0x04);
        assert!(!wire.contains(['=', '+', '/']));
        assert_eq!(
            VerifyingKey::from_sec1_bytes(&raw).expect("point"),
            *key.verifying_key()
        );
    }
}
