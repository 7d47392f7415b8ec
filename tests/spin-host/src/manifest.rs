//! The subset of Spin's application manifest (`spin_manifest_version = 2`) the
//! test host honours: HTTP routes, per-component sources, SQLite databases,
//! key-value stores and variables with `{{ name }}` templates over
//! application variables.
//!
//! Anything this host does not implement (other triggers, outbound hosts,
//! files, build sections) is ignored, except that a component naming a store
//! it was not granted is refused at run time, as Spin does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wasmtime::error::Context;
use wasmtime::{Result, bail, format_err as anyhow};

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: u32,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize, Default)]
struct RawVariable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
}

#[derive(Deserialize, Default)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
struct RawHttpTrigger {
    route: String,
    component: String,
}

#[derive(Deserialize)]
struct RawComponent {
    source: String,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
}

/// One component, resolved.
#[derive(Debug, Clone)]
pub struct Component {
    /// Its id in the manifest.
    pub id: String,
    /// The Wasm file.
    pub source: PathBuf,
    /// Databases it may open.
    pub sqlite_databases: Vec<String>,
    /// Key-value stores it may open.
    pub key_value_stores: Vec<String>,
    /// Its variables with templates expanded.
    pub variables: HashMap<String, String>,
    /// Origins (`scheme://host:port`) it may call, templates expanded.
    pub allowed_outbound_hosts: Vec<String>,
}

/// An HTTP route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path without the trailing `/...`.
    pub prefix: String,
    /// Whether the route ends in `/...`.
    pub wildcard: bool,
    /// Index into [`App::components`].
    pub component: usize,
}

/// A resolved application.
#[derive(Debug)]
pub struct App {
    /// Components by index.
    pub components: Vec<Component>,
    /// Routes.
    pub routes: Vec<Route>,
}

impl App {
    /// Loads `spin.toml`, resolving variables from `overrides` (like Spin's
    /// `SPIN_VARIABLE_*` provider) and then defaults. Sources are relative to
    /// the manifest's directory.
    pub fn load(path: &Path, overrides: &HashMap<String, String>) -> Result<App> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let raw: RawManifest =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if raw.spin_manifest_version != 2 {
            bail!("only spin_manifest_version = 2 is supported");
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut app_vars = HashMap::new();
        for (name, var) in &raw.variables {
            let value = overrides.get(name).cloned().or_else(|| var.default.clone());
            match value {
                Some(v) => {
                    app_vars.insert(name.clone(), v);
                }
                None if var.required => bail!("required variable {name} has no value"),
                None => {}
            }
        }
        let mut components = Vec::new();
        let mut index = HashMap::new();
        for (id, c) in raw.component {
            let mut variables = HashMap::new();
            for (name, template) in &c.variables {
                variables.insert(name.clone(), expand(template, &app_vars)?);
            }
            let mut allowed_outbound_hosts = Vec::new();
            for template in &c.allowed_outbound_hosts {
                let origin = expand(template, &app_vars)?;
                if !origin.is_empty() {
                    allowed_outbound_hosts.push(origin.trim_end_matches('/').to_owned());
                }
            }
            index.insert(id.clone(), components.len());
            components.push(Component {
                id,
                source: base.join(&c.source),
                sqlite_databases: c.sqlite_databases,
                key_value_stores: c.key_value_stores,
                variables,
                allowed_outbound_hosts,
            });
        }
        let mut routes = Vec::new();
        for t in raw.trigger.http {
            let component = *index.get(&t.component).ok_or_else(|| {
                anyhow!("route {} names unknown component {}", t.route, t.component)
            })?;
            let (prefix, wildcard) = match t.route.strip_suffix("/...") {
                Some(p) => (p.to_owned(), true),
                None => (t.route.trim_end_matches('/').to_owned(), false),
            };
            routes.push(Route {
                prefix,
                wildcard,
                component,
            });
        }
        Ok(App { components, routes })
    }

    /// The component serving `path`: an exact route first, then the longest
    /// matching wildcard prefix.
    pub fn route(&self, path: &str) -> Option<&Route> {
        let trimmed = path.trim_end_matches('/');
        if let Some(r) = self
            .routes
            .iter()
            .find(|r| !r.wildcard && r.prefix == trimmed)
        {
            return Some(r);
        }
        self.routes
            .iter()
            .filter(|r| {
                r.wildcard
                    && (r.prefix.is_empty()
                        || path == r.prefix
                        || path.starts_with(&format!("{}/", r.prefix)))
            })
            .max_by_key(|r| r.prefix.len())
    }
}

fn expand(template: &str, vars: &HashMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("unclosed template in {template:?}"))?;
        let name = after[..end].trim();
        let value = vars
            .get(name)
            .ok_or_else(|| anyhow!("template names variable {name} which has no value"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}
