//! `edgecoder spin-manifest fermyon-cloud`: the repository's `spin.toml`
//! rewritten for Fermyon Cloud, whose platform does not take two things the
//! manifest relies on elsewhere.
//!
//! In scope, the two rewrites:
//! - variable templates in `allowed_outbound_hosts` (`{{ mail_api_base }}`,
//!   `{{ oauth_outbound_host }}`, `{{ mesh_peer_hosts }}`,
//!   `{{ log_witness_hosts }}`) become literal entries, from the values given
//!   (a comma-separated list becomes one entry each) or else the variable's
//!   default, and that default is set to the same value so the component
//!   reads what the manifest allows;
//! - service chaining (`http://<component>.spin.internal`) becomes the app's
//!   own https origin: the callers' entries, and the `ledger_url` and
//!   `auth_url` defaults.
//!
//! Out of scope: store linking, variables and secrets, which `spin deploy`
//! and `spin cloud` set at deploy time (README, "Deploy"). A template this
//! code does not know fails the rewrite, naming it, rather than reaching the
//! platform.

use std::collections::BTreeMap;

use toml::{Table, Value};

/// Rewrites `manifest` (the text of `spin.toml`) for an app served at
/// `origin`, with `vars` (variable name to value) for the outbound hosts.
/// Every host written must be an https origin (a `*.` wildcard subdomain
/// allowed); `loopback` also lets the origin and hosts be plain http on a
/// loopback address, which only a local test host serves.
pub fn fermyon_cloud(
    manifest: &str,
    origin: &str,
    vars: &BTreeMap<String, String>,
    loopback: bool,
) -> Result<String, String> {
    let origin = origin.trim_end_matches('/');
    if !edgecoder_kernel::config::is_origin(origin) || !host_allowed(origin, loopback) {
        return Err(format!(
            "--origin {origin:?} must be the app's https origin (e.g. https://edgecoder-edge.fermyon.app)"
        ));
    }
    let mut doc: Table = manifest
        .parse()
        .map_err(|e| format!("the manifest is not TOML: {e}"))?;
    let Some(Value::Table(mut variables)) = doc.remove("variables") else {
        return Err("the manifest has no [variables]".into());
    };
    // The value each template stands for: given, else the default.
    let mut value_of = |name: &str| -> Result<String, String> {
        let var = variables
            .get_mut(name)
            .and_then(Value::as_table_mut)
            .ok_or_else(|| format!("allowed_outbound_hosts uses {{{{ {name} }}}}, which [variables] does not declare"))?;
        let value = match vars.get(name) {
            Some(v) => v.clone(),
            None => var
                .get("default")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("give --var {name}=<hosts>: it has no default"))?,
        };
        var.insert("default".into(), Value::String(value.clone()));
        Ok(value)
    };
    let mut used: Vec<String> = Vec::new();
    let mut rewritten: Vec<(String, Vec<String>)> = Vec::new();
    let components = doc
        .get("component")
        .and_then(Value::as_table)
        .ok_or("the manifest has no components")?;
    for (id, component) in components {
        let Some(hosts) = component
            .get("allowed_outbound_hosts")
            .and_then(Value::as_array)
        else {
            continue;
        };
        let mut out: Vec<String> = Vec::new();
        for entry in hosts {
            let entry = entry
                .as_str()
                .ok_or_else(|| format!("component {id}: a host entry is not a string"))?;
            let expanded: Vec<String> = if let Some(name) = template_name(entry) {
                used.push(name.to_owned());
                let hosts: Vec<String> = value_of(name)?
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| h.trim_end_matches('/').to_owned())
                    .collect();
                if let Some(bad) = hosts.iter().find(|h| !host_allowed(h, loopback)) {
                    return Err(format!(
                        "{name}: {bad:?} is not an https origin (https://host[:port], or https://*.domain)"
                    ));
                }
                hosts
            } else if entry.contains("{{") {
                return Err(format!(
                    "component {id}: {entry:?} mixes a template with text; write it literally"
                ));
            } else if is_chained(entry) {
                vec![origin.to_owned()]
            } else {
                vec![entry.to_owned()]
            };
            for host in expanded {
                if !out.contains(&host) {
                    out.push(host);
                }
            }
        }
        rewritten.push((id.clone(), out));
    }
    // A value for a variable no host entry uses would change nothing the
    // manifest allows: most likely a misspelt name.
    if let Some(unused) = vars.keys().find(|k| !used.contains(k)) {
        used.sort();
        used.dedup();
        return Err(format!(
            "--var {unused}: no allowed_outbound_hosts entry uses it (those that do: {})",
            used.join(", ")
        ));
    }
    for name in ["ledger_url", "auth_url"] {
        if let Some(var) = variables.get_mut(name).and_then(Value::as_table_mut) {
            var.insert("default".into(), Value::String(origin.to_owned()));
        }
    }
    doc.insert("variables".into(), Value::Table(variables));
    let components = doc
        .get_mut("component")
        .and_then(Value::as_table_mut)
        .ok_or("the manifest has no components")?;
    for (id, hosts) in rewritten {
        if let Some(c) = components.get_mut(&id).and_then(Value::as_table_mut) {
            c.insert(
                "allowed_outbound_hosts".into(),
                Value::Array(hosts.into_iter().map(Value::String).collect()),
            );
        }
    }
    let body = toml::to_string(&doc).map_err(|e| format!("writing the manifest: {e}"))?;
    Ok(format!(
        "# Generated by `edgecoder spin-manifest fermyon-cloud --origin {origin}` from\n\
         # spin.toml: literal outbound hosts and the app's own origin in place of\n\
         # service chaining, which Fermyon Cloud does not support. Regenerate it\n\
         # rather than editing it.\n{body}"
    ))
}

/// Whether `host` may be written as an allowed outbound host: an https
/// origin without a path (a `*.` wildcard subdomain allowed, a bare `*` not),
/// or with `loopback`, plain http to a loopback address.
fn host_allowed(host: &str, loopback: bool) -> bool {
    let Some((scheme, authority)) = host.split_once("://") else {
        return false;
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', '{', ' ']) {
        return false;
    }
    let name = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(authority, |(h, _)| h);
    let name = name.strip_prefix("*.").unwrap_or(name);
    if name.is_empty() || name.contains('*') {
        return false;
    }
    match scheme {
        "https" => true,
        "http" => loopback && matches!(name, "127.0.0.1" | "localhost" | "[::1]"),
        _ => false,
    }
}

/// `name` of an entry that is exactly `{{ name }}`.
fn template_name(entry: &str) -> Option<&str> {
    let inner = entry.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    (!inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    .then_some(inner)
}

/// `http://<component>.spin.internal`, Spin's service chaining.
fn is_chained(entry: &str) -> bool {
    entry
        .split_once("://")
        .is_some_and(|(_, host)| host.trim_end_matches('/').ends_with(".spin.internal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> String {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spin.toml");
        std::fs::read_to_string(root).expect("spin.toml")
    }

    fn hosts(doc: &Table, id: &str) -> Vec<String> {
        doc["component"][id]["allowed_outbound_hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|v| v.as_str().expect("str").to_owned())
            .collect()
    }

    #[test]
    fn the_repository_manifest_becomes_literal_hosts_and_the_origin() {
        let mut vars = BTreeMap::new();
        vars.insert(
            "mesh_peer_hosts".to_owned(),
            "https://peer-a.example, https://peer-b.example".to_owned(),
        );
        let out =
            fermyon_cloud(&manifest(), "https://edge.fermyon.app/", &vars, false).expect("rewrite");
        let doc: Table = out.parse().expect("toml");
        for (id, c) in doc["component"].as_table().expect("components") {
            for h in c
                .get("allowed_outbound_hosts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let h = h.as_str().expect("str");
                assert!(
                    !h.contains("{{") && !h.contains("spin.internal"),
                    "{id}: {h}"
                );
            }
        }
        let mesh = hosts(&doc, "mesh");
        assert!(
            mesh.contains(&"https://edge.fermyon.app".to_owned()),
            "{mesh:?}"
        );
        assert!(
            mesh.contains(&"https://peer-a.example".to_owned()),
            "{mesh:?}"
        );
        assert!(
            mesh.contains(&"https://peer-b.example".to_owned()),
            "{mesh:?}"
        );
        // Defaults where nothing was given, and the variable agrees.
        assert!(hosts(&doc, "auth").contains(&"https://api.resend.com".to_owned()));
        assert_eq!(
            doc["variables"]["mesh_peer_hosts"]["default"].as_str(),
            Some("https://peer-a.example, https://peer-b.example")
        );
        for name in ["ledger_url", "auth_url"] {
            assert_eq!(
                doc["variables"][name]["default"].as_str(),
                Some("https://edge.fermyon.app")
            );
        }
    }

    #[test]
    fn an_unknown_template_or_a_bad_origin_is_refused() {
        let m = manifest();
        let none = BTreeMap::new();
        for origin in [
            "http://edge.example",
            "http://127.0.0.1:3000",
            "https://e.example/path",
        ] {
            let err = fermyon_cloud(&m, origin, &none, false).expect_err(origin);
            assert!(err.contains("https origin"), "{origin}: {err}");
        }
        fermyon_cloud(&m, "http://127.0.0.1:3000", &none, true).expect("a local test host");
        for value in [
            "*://*:*",
            "http://peer.example",
            "https://*",
            "https://p.example/x",
        ] {
            let vars = BTreeMap::from([("mesh_peer_hosts".to_owned(), value.to_owned())]);
            let err = fermyon_cloud(&m, "https://e.fermyon.app", &vars, false).expect_err(value);
            assert!(err.contains("mesh_peer_hosts"), "{value}: {err}");
        }
        let vars = BTreeMap::from([("mesh_peer_host".to_owned(), "https://p.example".to_owned())]);
        let err = fermyon_cloud(&m, "https://e.fermyon.app", &vars, false).expect_err("typo");
        assert!(err.contains("mesh_peer_host:"), "{err}");
        let vars = BTreeMap::from([(
            "mesh_peer_hosts".to_owned(),
            "https://*.peers.example".to_owned(),
        )]);
        fermyon_cloud(&m, "https://e.fermyon.app", &vars, false).expect("a wildcard subdomain");
        let broken = m.replacen("\"{{ mail_api_base }}\"", "\"{{ nope }}\"", 1);
        let err = fermyon_cloud(&broken, "https://e.fermyon.app", &BTreeMap::new(), false)
            .expect_err("unknown");
        assert!(err.contains("nope"), "{err}");
        let mixed = m.replacen("\"{{ mail_api_base }}\"", "\"https://{{ x }}\"", 1);
        let err = fermyon_cloud(&mixed, "https://e.fermyon.app", &BTreeMap::new(), false)
            .expect_err("mixed");
        assert!(err.contains("literally"), "{err}");
    }
}
