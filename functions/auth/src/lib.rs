//! The `auth` function, served under `/auth/`.
//!
//! In scope: Portal identity: accounts, sessions and keys, roles, node enrollment (issues 3 and 6 fill it in). For now: health, readiness and the shared request pipeline.
//!
//! Out of scope: platform bindings. Like every function crate this one is pure
//! logic over the kernel's ports; `runtimes/` serve it.

use edgecoder_kernel::{Config, Router, health, testroutes};

/// The function's name and path prefix.
pub const NAME: &str = "auth";

/// The function's routes under the given configuration.
pub fn router(config: &Config) -> Router {
    let mut r = health::routes(NAME, "/auth/health", "/auth/health/ready");
    if config.insecure_test_routes {
        r = r.merge(testroutes::routes(
            NAME,
            "/auth/_test/echo",
            "auth_test_echo",
            "/auth/_test/ports",
            "auth_test_ports",
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
            assert!(path.starts_with("/auth/"), "{path}");
        }
    }

    #[test]
    fn test_routes_only_when_enabled() {
        let off = router(&Config::load(&Dev(false)).expect("config")).endpoints();
        assert!(!off.contains(&(Method::POST, "/auth/_test/echo")));
        let on = router(&Config::load(&Dev(true)).expect("config")).endpoints();
        assert!(on.contains(&(Method::POST, "/auth/_test/echo")));
        assert!(on.contains(&(Method::GET, "/auth/health")));
        assert!(on.contains(&(Method::GET, "/auth/health/ready")));
    }
}
