//! The `mesh` function, served under `/mesh/`.
//!
//! In scope: The coordinator: node identity, signed requests, registration and approval, heartbeat policy, scheduling, peers and blacklist (issue 5 fills it in). For now: health, readiness and the shared request pipeline.
//!
//! Out of scope: platform bindings. Like every function crate this one is pure
//! logic over the kernel's ports; `runtimes/` serve it.

use edgecoder_kernel::{Config, Router, health, testroutes};

/// The function's name and path prefix.
pub const NAME: &str = "mesh";

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    let mut r = health::routes(NAME, "/mesh/health", "/mesh/health/ready");
    if config.insecure_test_routes {
        r = r.merge(testroutes::routes(
            NAME,
            "/mesh/_test/echo",
            "mesh_test_echo",
            "/mesh/_test/ports",
            "mesh_test_ports",
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgecoder_kernel::{ConfigSource, http_types::Method};

    struct Dev(bool);
    impl ConfigSource for Dev {
        fn var(&self, name: &str) -> Option<String> {
            match name {
                "mode" => Some("development".into()),
                "insecure_test_routes" => Some(self.0.to_string()),
                _ => None,
            }
        }
        fn secret(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn every_route_is_under_the_prefix() {
        let cfg = Config::load(&Dev(true)).expect("config");
        for (_, path) in router(&cfg).endpoints() {
            assert!(path.starts_with("/mesh/"), "{path}");
        }
    }

    #[test]
    fn test_routes_only_when_enabled() {
        let off = router(&Config::load(&Dev(false)).expect("config")).endpoints();
        assert!(!off.contains(&(Method::POST, "/mesh/_test/echo")));
        let on = router(&Config::load(&Dev(true)).expect("config")).endpoints();
        assert!(on.contains(&(Method::POST, "/mesh/_test/echo")));
        assert!(on.contains(&(Method::GET, "/mesh/health")));
        assert!(on.contains(&(Method::GET, "/mesh/health/ready")));
    }
}
