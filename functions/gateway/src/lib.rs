//! Composition of the functions into what a runtime serves.
//!
//! In scope: choosing which functions a deployment serves ([`Selection`]),
//! merging their routers, and `GET /openapi.json`, the OpenAPI 3.1 document of
//! every route of every function, generated from the same route tables that
//! dispatch. Unknown paths fall through to the kernel's `not_found` problem.
//!
//! Out of scope: platform bindings and any logic of the functions themselves.
//!
//! Deployments: the native runtime and the Worker serve [`Selection::All`] on one
//! origin. On Spin each function is its own component ([`Selection::Only`]) with
//! only its own stores, and a storage-less `gateway` component
//! ([`Selection::Gateway`]) answers `/openapi.json` and every other path.

use std::rc::Rc;

use edgecoder_kernel::http::{JSON, json_response};
use edgecoder_kernel::http_types::{Method, StatusCode};
use edgecoder_kernel::router::{RouteDoc, handler, response_doc};
use edgecoder_kernel::{Config, Error, Router};
use serde_json::Value as Json;

/// One of the functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Portal identity.
    Auth,
    /// Coordinator mesh.
    Mesh,
    /// Transparency log and credits.
    Ledger,
}

impl Function {
    /// All functions, in documentation order.
    pub const ALL: [Function; 3] = [Function::Auth, Function::Mesh, Function::Ledger];

    /// The function's name, also its path prefix and store names.
    pub fn name(self) -> &'static str {
        match self {
            Function::Auth => edgecoder_auth::NAME,
            Function::Mesh => edgecoder_mesh::NAME,
            Function::Ledger => edgecoder_ledger::NAME,
        }
    }

    /// Parses a function name.
    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    fn router(self, config: &Config) -> Router {
        match self {
            Function::Auth => edgecoder_auth::router(config),
            Function::Mesh => edgecoder_mesh::router(config),
            Function::Ledger => edgecoder_ledger::router(config),
        }
    }
}

/// What one deployment unit serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Every function plus `/openapi.json` (native, Workers).
    All,
    /// One function's routes only (a Spin function component).
    Only(Function),
    /// `/openapi.json` and the not-found fallback (the Spin gateway component).
    Gateway,
}

impl Selection {
    /// Parses `all`, `gateway` or a function name.
    pub fn from_name(name: &str) -> Result<Selection, Error> {
        match name {
            "all" => Ok(Selection::All),
            "gateway" => Ok(Selection::Gateway),
            other => Function::from_name(other)
                .map(Selection::Only)
                .ok_or_else(|| {
                    Error::Config("function must be all, gateway, auth, mesh or ledger".into())
                }),
        }
    }

    /// Whether this unit needs SQL and KV (the gateway does not).
    pub fn uses_storage(self) -> bool {
        !matches!(self, Selection::Gateway)
    }
}

const OPENAPI_PATH: &str = "/openapi.json";

fn openapi_route(router: Router, doc: Rc<Json>) -> Router {
    router.route(
        Method::GET,
        OPENAPI_PATH,
        handler(move |_s, _r| {
            let doc = Rc::clone(&doc);
            async move { Ok(json_response(StatusCode::OK, JSON, doc.as_ref())) }
        }),
        RouteDoc {
            operation_id: "openapi".into(),
            summary: "This OpenAPI 3.1 document",
            tag: "meta",
            request_schema: None,
            responses: vec![response_doc(200, "the document", Some(JSON))],
        },
    )
}

fn all_functions(config: &Config) -> Router {
    Function::ALL
        .into_iter()
        .fold(Router::new(), |r, f| r.merge(f.router(config)))
}

/// The OpenAPI document of the whole app under `config`.
pub fn openapi(config: &Config) -> Json {
    // Document the openapi route itself too: build the table once with a
    // placeholder document, then describe that table.
    openapi_route(all_functions(config), Rc::new(Json::Null))
        .openapi("EdgeCoder Edge", env!("CARGO_PKG_VERSION"))
}

/// The router for a deployment unit.
pub fn router(selection: Selection, config: &Config) -> Router {
    match selection {
        Selection::All => openapi_route(all_functions(config), Rc::new(openapi(config))),
        Selection::Only(f) => f.router(config),
        Selection::Gateway => openapi_route(Router::new(), Rc::new(openapi(config))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecoder_kernel::ConfigSource;

    struct Dev;
    impl ConfigSource for Dev {
        fn var(&self, name: &str) -> Option<String> {
            (name == "mode").then(|| "development".into())
        }
        fn secret(&self, _: &str) -> Option<String> {
            None
        }
    }

    struct DevWithTestRoutes;
    impl ConfigSource for DevWithTestRoutes {
        fn var(&self, name: &str) -> Option<String> {
            match name {
                "mode" => Some("development".into()),
                "insecure_test_routes" => Some("true".into()),
                _ => None,
            }
        }
        fn secret(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn every_function_route_is_under_its_prefix() {
        let cfg = Config::load(&DevWithTestRoutes).expect("config");
        for f in Function::ALL {
            for (_, path) in router(Selection::Only(f), &cfg).endpoints() {
                let own = path.starts_with(&format!("/{}/", f.name()));
                let issuer_metadata = f == Function::Auth && path.starts_with("/.well-known/");
                assert!(own || issuer_metadata, "{path}");
            }
        }
    }

    /// Built without `danger-test-routes` (as `cargo test` and every release
    /// artefact are), the setting mounts nothing; built with it, the setting
    /// mounts the echo and ports routes.
    #[test]
    fn test_routes_only_when_built_and_enabled() {
        let off = router(Selection::All, &Config::load(&Dev).expect("config")).endpoints();
        let on = router(
            Selection::All,
            &Config::load(&DevWithTestRoutes).expect("config"),
        )
        .endpoints();
        for f in Function::ALL {
            let name = f.name();
            for path in [
                format!("/{name}/_test/echo"),
                format!("/{name}/_test/ports"),
            ] {
                assert!(
                    !off.iter().any(|(_, p)| *p == path),
                    "{path} mounted by default"
                );
                let mounted = on.iter().any(|(m, p)| *p == path && *m == Method::POST);
                assert_eq!(
                    mounted,
                    cfg!(feature = "danger-test-routes"),
                    "{path} mounted: {mounted}"
                );
            }
            for path in [format!("/{name}/health"), format!("/{name}/health/ready")] {
                assert!(
                    off.iter().any(|(m, p)| *p == path && *m == Method::GET),
                    "{path} missing"
                );
            }
        }
    }

    #[test]
    fn openapi_lists_every_served_route() {
        let cfg = Config::load(&Dev).expect("config");
        let doc = openapi(&cfg);
        assert_eq!(doc["openapi"], "3.1.0");
        for (method, path) in router(Selection::All, &cfg).endpoints() {
            let op = &doc["paths"][path][method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {path} missing from openapi");
            assert!(op["operationId"].is_string());
        }
    }

    #[test]
    fn spin_units_partition_the_routes() {
        let cfg = Config::load(&Dev).expect("config");
        let mut parts: Vec<_> = Function::ALL
            .into_iter()
            .flat_map(|f| router(Selection::Only(f), &cfg).endpoints())
            .chain(router(Selection::Gateway, &cfg).endpoints())
            .collect();
        let mut all = router(Selection::All, &cfg).endpoints();
        parts.sort_by_key(|(m, p)| (p.to_string(), m.to_string()));
        all.sort_by_key(|(m, p)| (p.to_string(), m.to_string()));
        assert_eq!(parts, all);
    }

    #[test]
    fn selection_names() {
        assert_eq!(
            Selection::from_name("mesh").ok(),
            Some(Selection::Only(Function::Mesh))
        );
        assert!(Selection::from_name("../etc").is_err());
        assert!(!Selection::Gateway.uses_storage());
    }
}
