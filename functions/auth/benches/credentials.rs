//! CPU cost of the credential work behind login and every authenticated
//! request, natively: Argon2id hash and verify at the OWASP parameters, and
//! access-token issue and verify. Numbers go to `bench/README.md`.
//!
//! Run: `cargo bench -p edgecoder-auth --bench credentials`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use edgecoder_auth::password;
use edgecoder_kernel::tokens::{self, AccessClaims, Verifier};
use edgecoder_kernel::{Rng, SigningKey};

struct Counter(std::cell::Cell<u8>);
impl Rng for Counter {
    fn fill(&self, buf: &mut [u8]) {
        for b in buf {
            self.0.set(self.0.get().wrapping_mul(29).wrapping_add(11));
            *b = self.0.get();
        }
    }
}

const NOW: i64 = 1_800_000_000_000;

fn claims() -> AccessClaims {
    AccessClaims {
        iss: "https://edge.example".into(),
        aud: "edgecoder".into(),
        sub: "user-1".into(),
        sid: "session-1".into(),
        jti: "token-1".into(),
        roles: vec!["user".into()],
        auth_time: NOW / 1000,
        amr: vec!["pwd".into()],
    }
}

fn credentials(c: &mut Criterion) {
    let rng = Counter(std::cell::Cell::new(3));
    let stored = password::hash("correct horse battery", &rng).expect("hash");
    let mut g = c.benchmark_group("argon2id_m19456_t2_p1");
    g.sample_size(20);
    g.bench_function("hash", |b| {
        b.iter(|| password::hash("correct horse battery", &rng).expect("hash"));
    });
    g.bench_function("verify", |b| {
        b.iter(|| password::verify("correct horse battery", &stored));
    });
    g.finish();

    let key = SigningKey::generate(&rng);
    let token = tokens::issue(&key, claims(), NOW, 900).expect("issue");
    let verifier = Verifier::new("https://edge.example", "edgecoder", [key.verifying_key()]);
    let mut g = c.benchmark_group("access_token_es256");
    g.bench_function("issue", |b| {
        b.iter(|| tokens::issue(&key, claims(), NOW, 900).expect("issue"));
    });
    g.bench_function("verify", |b| {
        b.iter(|| verifier.check(&token, NOW).expect("valid"));
    });
    g.finish();
}

criterion_group!(benches, credentials);
criterion_main!(benches);
