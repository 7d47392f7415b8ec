//! The credit economy's wire rules, shared by the coordinator that applies
//! them and by anyone who checks its log offline (`edgecoder verify
//! --epochs`): the published price table, how an epoch's pool is split, and
//! the log payloads that record both.
//!
//! In scope: pricing a task from what its submitter declared (never from
//! anything a node reports), the fee split of a payment, the largest-
//! remainder allocation of an issuance pool, the allocation table's digest,
//! and the `task-completion/v1` fields and `issuance-epoch/v1` payloads the
//! allocation is recomputed from. Out of scope: storage, balances and the
//! HTTP routes (the mesh function), and log proofs (`edgecoder-tlog`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The log entry type of a credit transfer.
pub const CREDIT_TRANSFER_V1: &str = "edgecoder.dev/credit-transfer/v1";
/// The log entry type of an epoch's close and of each credit it issues.
pub const ISSUANCE_EPOCH_V1: &str = "edgecoder.dev/issuance-epoch/v1";
/// The log entry type of a task's completion (acceptance or failure).
pub const TASK_COMPLETION_V1: &str = "edgecoder.dev/task-completion/v1";
/// The largest amount anywhere (2^50): sums of many stay far from `i64`'s
/// end, and every amount is exact in a JavaScript number.
pub const MAX_AMOUNT: i64 = 1 << 50;
/// Most replicas a task may ask for.
pub const MAX_REPLICAS: i64 = 5;

/// What one task kind costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindPrice {
    /// Credits per task, whatever its size.
    pub base: i64,
    /// Credits per started second of the declared timeout.
    pub per_second: i64,
    /// Credits per started 256 MiB of declared memory.
    pub per_256_mib: i64,
}

/// The published price table: what a task costs to submit (per replica),
/// and the fee the coordinator keeps from each payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Fee in basis points (1/100 of a percent) of each payment.
    pub fee_bps: i64,
    /// Prices by task kind (`wasm`, `inference`).
    pub kinds: BTreeMap<String, KindPrice>,
}

impl Default for PriceTable {
    fn default() -> Self {
        let mut kinds = BTreeMap::new();
        kinds.insert(
            "wasm".to_owned(),
            KindPrice {
                base: 10,
                per_second: 1,
                per_256_mib: 1,
            },
        );
        kinds.insert(
            "inference".to_owned(),
            KindPrice {
                base: 20,
                per_second: 2,
                per_256_mib: 1,
            },
        );
        PriceTable {
            fee_bps: 500,
            kinds,
        }
    }
}

impl PriceTable {
    /// Checks a table an operator configured: known kinds, non-negative
    /// prices below 2^20 each, a fee below 100 %.
    pub fn validate(&self) -> Result<(), &'static str> {
        if !(0..10_000).contains(&self.fee_bps) {
            return Err("fee_bps must be 0 to 9999");
        }
        if self.kinds.is_empty() {
            return Err("the price table lists no task kind");
        }
        for (kind, p) in &self.kinds {
            if !matches!(kind.as_str(), "wasm" | "inference") {
                return Err("task kinds are wasm and inference");
            }
            if [p.base, p.per_second, p.per_256_mib]
                .iter()
                .any(|v| !(0..1 << 20).contains(v))
            {
                return Err("prices are 0 to 2^20 credits");
            }
            if p.base == 0 && p.per_second == 0 && p.per_256_mib == 0 {
                return Err("a task kind may not be free");
            }
        }
        Ok(())
    }

    /// The price of one replica of a task of `kind` with the declared
    /// limits, or `None` for a kind the table does not price.
    pub fn price(&self, kind: &str, timeout_ms: i64, memory_mb: i64) -> Option<i64> {
        let p = self.kinds.get(kind)?;
        let seconds = timeout_ms.max(0).unsigned_abs().div_ceil(1000);
        let blocks = memory_mb.max(0).unsigned_abs().div_ceil(256);
        let (seconds, blocks) = (
            i64::try_from(seconds).unwrap_or(i64::MAX),
            i64::try_from(blocks).unwrap_or(i64::MAX),
        );
        Some(
            p.base
                .saturating_add(seconds.saturating_mul(p.per_second))
                .saturating_add(blocks.saturating_mul(p.per_256_mib)),
        )
    }

    /// How a payment of `price` splits between `payees` (each gets the same
    /// share of what remains after the fee) and the fee; the fee also takes
    /// what does not divide evenly, so the parts always sum to `price`.
    pub fn split(&self, price: i64, payees: usize) -> (i64, i64) {
        let payees = i64::try_from(payees.max(1)).unwrap_or(1);
        let fee = price * self.fee_bps / 10_000;
        let share = (price - fee) / payees;
        (share, price - share * payees)
    }
}

/// One row of an epoch's allocation table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The credited account (`user:<id>`).
    pub account: String,
    /// Its priced work accepted in the epoch.
    pub work: u64,
    /// The credits it receives.
    pub amount: u64,
}

/// Splits `pool` over `work` (account → priced work) in proportion, in
/// whole credits: each account first gets the floor of its exact share, and
/// the credits left over go one each to the largest remainders, ties broken
/// by account id (ascending). Accounts with no work, and those whose share
/// rounds to no credit, are not listed (a row is a transfer, and a transfer
/// moves something); with no work at all, nothing is issued. The rows come
/// sorted by account id.
pub fn allocate(pool: u64, work: &BTreeMap<String, u64>) -> Vec<Allocation> {
    let total: u128 = work.values().map(|w| u128::from(*w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut rows: Vec<(Allocation, u128)> = work
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|(account, w)| {
            let exact = u128::from(pool) * u128::from(*w);
            let amount = u64::try_from(exact / total).unwrap_or(u64::MAX);
            let row = Allocation {
                account: account.clone(),
                work: *w,
                amount,
            };
            (row, exact % total)
        })
        .collect();
    let given: u64 = rows.iter().map(|(r, _)| r.amount).sum();
    let mut left = pool - given;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    // Largest remainder first; the account id breaks ties (rows are in
    // account order already, and the sort is stable).
    order.sort_by(|a, b| rows[*b].1.cmp(&rows[*a].1));
    for i in order {
        if left == 0 {
            break;
        }
        rows[i].0.amount += 1;
        left -= 1;
    }
    rows.into_iter()
        .map(|(r, _)| r)
        .filter(|r| r.amount > 0)
        .collect()
}

/// The allocation table's digest: blake3 over one line per row,
/// `<account> <work> <amount>\n`, in account order, after a header line
/// `issuance-epoch/v1 <epoch> <pool>\n`.
pub fn allocation_digest(epoch: u64, pool: u64, rows: &[Allocation]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(format!("issuance-epoch/v1 {epoch} {pool}\n").as_bytes());
    for r in rows {
        h.update(format!("{} {} {}\n", r.account, r.work, r.amount).as_bytes());
    }
    format!("blake3:{}", h.finalize().to_hex())
}

/// The fields of a `task-completion/v1` payload the economy reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Completion {
    /// Task id.
    pub task_id: String,
    /// Who submitted it (`user:<id>`).
    #[serde(default)]
    pub submitter: String,
    /// Whether the task was accepted.
    pub ok: bool,
    /// The priced work accepted (the task's price, all replicas together);
    /// absent on completions from before the economy, which count nothing.
    #[serde(default)]
    pub work: Option<u64>,
    /// The accounts of the owners of the nodes whose agreeing results were
    /// accepted; the work counts equally for each.
    #[serde(default)]
    pub payees: Vec<String>,
}

/// An `issuance-epoch/v1` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EpochEntry {
    /// An epoch's close: which completions it counts (those at log indices
    /// `from_index <= i < through_index`), its pool and the digest of the
    /// allocation table the credit entries that follow carry.
    Close {
        /// Epoch number: its start is `epoch * epoch_secs` seconds after the
        /// Unix epoch (UTC).
        epoch: u64,
        /// The epoch's length in seconds.
        epoch_secs: u64,
        /// The first log index counted (the previous close's
        /// `through_index`; 0 for the first).
        from_index: u64,
        /// One past the last log index counted.
        through_index: u64,
        /// Credits issued.
        pool: u64,
        /// Rows in the allocation table.
        accounts: u64,
        /// Total priced work counted.
        total_work: u64,
        /// [`allocation_digest`] of the table.
        allocation_digest: String,
    },
    /// One row of a closed epoch's allocation, and the transfer that pays it
    /// once the close is final.
    Credit {
        /// The epoch.
        epoch: u64,
        /// The transfer id.
        transfer: String,
        /// The credited account.
        account: String,
        /// Its priced work.
        work: u64,
        /// The credits.
        amount: u64,
    },
}

/// The per-account work of the completions in `entries` (log index and
/// `task-completion/v1` payload) with `from <= index < through`: each
/// accepted completion's work, divided equally among its payees (the
/// remainder to the payees in account order, one credit of work each). A
/// task counts once, at the first accepted completion of it among `entries`
/// (one before `from` means it counted in an earlier epoch). A payee who
/// submitted the task earns no issuance from it: running one's own tasks
/// costs only the fee, and must not farm the pool.
pub fn epoch_work(entries: &[(u64, Completion)], from: u64, through: u64) -> BTreeMap<String, u64> {
    let mut work: BTreeMap<String, u64> = BTreeMap::new();
    // `entries` are in log order: the first accepted completion of a task
    // is the one that counts.
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in entries {
        let (Some(w), true) = (c.work, c.ok) else {
            continue;
        };
        if *i >= through || !seen.insert(c.task_id.as_str()) || *i < from {
            continue;
        }
        let mut payees = c.payees.clone();
        payees.sort();
        payees.dedup();
        let n = u64::try_from(payees.len()).unwrap_or(u64::MAX);
        if n == 0 {
            continue;
        }
        for (k, p) in payees.into_iter().enumerate() {
            let extra = u64::from(u64::try_from(k).unwrap_or(u64::MAX) < w % n);
            if p != c.submitter {
                let e = work.entry(p).or_default();
                *e = e.saturating_add(w / n + extra);
            }
        }
    }
    work
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(rows: &[(&str, u64)]) -> BTreeMap<String, u64> {
        rows.iter().map(|(a, w)| ((*a).to_owned(), *w)).collect()
    }

    #[test]
    fn allocation_is_largest_remainder_with_ties_by_account() {
        let rows = allocate(10, &work(&[("user:b", 1), ("user:a", 1), ("user:c", 1)]));
        let amounts: Vec<(&str, u64)> = rows
            .iter()
            .map(|r| (r.account.as_str(), r.amount))
            .collect();
        assert_eq!(amounts, vec![("user:a", 4), ("user:b", 3), ("user:c", 3)]);
        let rows = allocate(100, &work(&[("user:a", 1), ("user:b", 2)]));
        assert_eq!(rows[0].amount + rows[1].amount, 100);
        assert_eq!((rows[0].amount, rows[1].amount), (33, 67));
        assert!(allocate(100, &work(&[])).is_empty());
        assert!(allocate(100, &work(&[("user:a", 0)])).is_empty());
    }

    #[test]
    fn allocation_always_sums_to_the_pool() {
        let mut seed = 7u64;
        for _ in 0..200 {
            let mut w = BTreeMap::new();
            for k in 0..(seed % 13 + 1) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                w.insert(format!("user:{k}"), seed >> 44);
            }
            let pool = seed >> 40;
            let rows = allocate(pool, &w);
            let total: u64 = rows.iter().map(|r| r.amount).sum();
            if w.values().any(|v| *v > 0) {
                assert_eq!(total, pool);
            }
        }
    }

    #[test]
    fn prices_come_from_declared_limits_and_splits_balance() {
        let t = PriceTable::default();
        assert_eq!(t.price("wasm", 30_000, 64), Some(10 + 30 + 1));
        assert_eq!(t.price("wasm", 1, 257), Some(10 + 1 + 2));
        assert_eq!(t.price("other", 1, 1), None);
        for (price, n) in [(41, 1), (41, 2), (100, 3), (7, 5)] {
            let (share, fee) = t.split(price, n);
            assert_eq!(share * i64::try_from(n).expect("small") + fee, price);
            assert!(fee >= 0 && share >= 0);
        }
        assert!(t.validate().is_ok());
    }

    #[test]
    fn work_of_a_shared_completion_is_split_among_payees() {
        let c = |w: u64, payees: &[&str]| Completion {
            task_id: format!("t{w}{payees:?}"),
            submitter: "user:s".into(),
            ok: true,
            work: Some(w),
            payees: payees.iter().map(|p| (*p).to_owned()).collect(),
        };
        let entries = vec![
            (3, c(7, &["user:b", "user:a"])),
            (4, c(5, &["user:a"])),
            (9, c(100, &["user:z"])),
            (5, c(50, &["user:s"])),
        ];
        let w = epoch_work(&entries, 0, 9);
        assert_eq!(w.get("user:a"), Some(&(4 + 5)));
        assert_eq!(w.get("user:b"), Some(&3));
        assert_eq!(w.get("user:z"), None);
        // Running one's own task earns no issuance.
        assert_eq!(w.get("user:s"), None);
        // A task logged twice counts once, where it was first accepted.
        let mut again = c(7, &["user:b"]);
        again.task_id = "dup".into();
        let twice = vec![(1, again.clone()), (4, again)];
        assert_eq!(epoch_work(&twice, 0, 9).get("user:b"), Some(&7));
        assert!(epoch_work(&twice, 2, 9).is_empty());
    }
}
