//! The log as a client of c2sp.org/tlog-witness witnesses: each new
//! checkpoint is sent to every configured witness (`log_witnesses`) with a
//! consistency proof from the size that witness cosigned last, and the
//! cosignatures that come back are verified against the witness's key and
//! this very checkpoint before they are kept and served with it.
//!
//! In scope: one round ([`Round::run`]): the request body, the 409
//! `text/x.tlog.size` answer (the witness's size, then one retry), keeping
//! what each witness holds, and verifying and storing cosignatures. Rounds
//! run after a checkpoint is signed (deferred, never in a reader's path)
//! and when an admin signs one (`POST /ledger/checkpoint`). Out of scope:
//! being a witness (the mesh function) and choosing witnesses (settings).

use std::rc::Rc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgecoder_kernel::http_types::Method;
use edgecoder_kernel::{Clock, Outbound, OutboundRequest, Services, Sql};
use edgecoder_tlog::checkpoint::{self, NoteKey, TrustedKey};
use serde_json::{Value as Json, json};

use crate::settings::Witness;
use crate::{Error, log, store};

/// What a round needs, owned, so that it can run after the response.
pub struct Round {
    sql: Rc<dyn Sql>,
    outbound: Rc<dyn Outbound>,
    clock: Rc<dyn Clock>,
    witnesses: Vec<Witness>,
    log_keys: Vec<TrustedKey>,
}

impl Round {
    /// The round of this deployment, if it has witnesses.
    pub fn of(s: &Services, log_keys: Vec<TrustedKey>) -> Result<Option<Round>, Error> {
        let witnesses = crate::Settings::of(s)?.witnesses.clone();
        if witnesses.is_empty() {
            return Ok(None);
        }
        Ok(Some(Round {
            sql: s.sql.clone(),
            outbound: s.outbound.clone(),
            clock: s.clock.clone(),
            witnesses,
            log_keys,
        }))
    }

    /// Asks every witness to cosign `note`; one outcome per witness.
    pub async fn run(&self, note: &str) -> Vec<Json> {
        let mut out = Vec::new();
        for w in &self.witnesses {
            out.push(match self.one(w, note).await {
                Ok((size, time)) => {
                    json!({"witness": w.name, "cosigned": true, "size": size, "time": time})
                }
                Err(why) => json!({"witness": w.name, "cosigned": false, "error": why}),
            });
        }
        out
    }

    async fn one(&self, w: &Witness, note: &str) -> Result<(u64, u64), String> {
        let sql = self.sql.as_ref();
        let cp = checkpoint::body_of(note).map_err(|e| e.to_string())?;
        let mut old = store::witness_size(sql, &w.name)
            .await
            .map_err(|e| e.to_string())?;
        for _ in 0..2 {
            if old > cp.size {
                // The witness holds a larger head of this log than the log
                // has: this log was rolled back, or another instance signs
                // under its name.
                return Err(format!(
                    "the witness holds size {old}, above this checkpoint's {}",
                    cp.size
                ));
            }
            let proof = if old == 0 || old == cp.size {
                Vec::new()
            } else {
                log::consistency_proof(sql, old, cp.size)
                    .await
                    .map_err(|e| e.to_string())?
            };
            let mut body = format!("old {old}\n");
            for h in &proof {
                body.push_str(&STANDARD.encode(h));
                body.push('\n');
            }
            body.push('\n');
            body.push_str(note);
            let resp = self
                .outbound
                .send(OutboundRequest {
                    method: Method::POST,
                    url: format!("{}/add-checkpoint", w.url),
                    headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
                    body: body.into_bytes(),
                })
                .await
                .map_err(|e| e.to_string())?;
            let is_size = resp.headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("content-type") && v.starts_with("text/x.tlog.size")
            });
            match resp.status {
                200 => return self.keep(w, note, &cp, &resp.body).await,
                409 if is_size => {
                    old = std::str::from_utf8(&resp.body)
                        .ok()
                        .and_then(|t| t.strip_suffix('\n'))
                        .and_then(|t| t.parse::<u64>().ok())
                        .ok_or("a 409 without a tree size")?;
                    if old > cp.size {
                        // Not remembered: one odd answer must not stop us
                        // asking this witness.
                        return Err(format!(
                            "the witness holds size {old}, above this checkpoint's {}: this log was rolled back, or another instance signs under its name",
                            cp.size
                        ));
                    }
                    store::set_witness_size(sql, &w.name, old, self.clock.now_ms())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                status => {
                    return Err(format!(
                        "the witness answered {status}: {}",
                        String::from_utf8_lossy(&resp.body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ));
                }
            }
        }
        Err("the witness's size kept moving".into())
    }

    /// Verifies the witness's lines against its key and this checkpoint,
    /// then keeps the cosignature.
    async fn keep(
        &self,
        w: &Witness,
        note: &str,
        cp: &checkpoint::Checkpoint,
        body: &[u8],
    ) -> Result<(u64, u64), String> {
        let text = std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8")?;
        let key = NoteKey::parse_vkey(&w.vkey).map_err(|e| e.to_string())?;
        let mut trusted = self.log_keys.clone();
        trusted.push(key);
        for line in text.lines().filter(|l| !l.is_empty()) {
            let opened = checkpoint::open_cosigned(&format!("{note}{line}\n"), &trusted)
                .map_err(|e| format!("a cosignature does not verify: {e}"))?;
            if let Some((_, time)) = opened.cosigners.iter().find(|(n, _)| *n == w.name) {
                let sql = self.sql.as_ref();
                store::add_cosignature(sql, cp.size, &w.name, line, *time)
                    .await
                    .map_err(|e| e.to_string())?;
                store::set_witness_size(sql, &w.name, cp.size, self.clock.now_ms())
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok((cp.size, *time));
            }
        }
        Err("no cosignature by this witness's key in the answer".into())
    }
}

/// The checkpoint `note` with the cosignatures kept for it.
pub async fn with_cosignatures(sql: &dyn Sql, note: String) -> Result<String, Error> {
    let Ok(cp) = checkpoint::body_of(&note) else {
        return Ok(note);
    };
    let lines = store::cosignatures(sql, cp.size).await?;
    let mut out = note;
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}
