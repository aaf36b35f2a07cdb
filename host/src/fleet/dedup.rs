//! Reports deduplicated across the fleet: every member serves the intake,
//! so Alertmanager's HA pair (which delivers at least once, by design)
//! and a sender that retries may bring the same report to several
//! members. The first member to write the report's key in etcd, create
//! only, acts on it; the others answer that it is a duplicate. The key
//! is written on the member's own lease first: should the member die (or
//! refuse the report) before acting, the key goes with its lease and the
//! sender's next try reaches a member that acts. Once acted on, the key
//! moves to a lease as long as the report stays a duplicate: a week for
//! an alert's occurrence (receiver, fingerprint, `startsAt`), the
//! intake's `cooldown` for an anomaly name.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use sha2::{Digest, Sha256};

use super::{etcd_error, keys, Fleet, CALL_WITHIN};

/// How long an alert's occurrence stays a duplicate.
pub const ALERT_KEPT: Duration = Duration::from_secs(7 * 86_400);

/// The leases dedup keys are put on, one per lifetime, each reused for a
/// tenth of it (so a key lives between 90 % and all of its lifetime).
#[derive(Default)]
pub(super) struct Leases(HashMap<u64, (i64, Instant)>);

/// The dedup key of an Alertmanager alert's occurrence.
pub fn alert_key(receiver: &str, fingerprint: &str, starts_at: &str) -> String {
    digest(&["alert", receiver, fingerprint, starts_at])
}

/// The dedup key of an anomaly name.
pub fn anomaly_key(name: &str) -> String {
    digest(&["anomaly", name])
}

fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Whether this member was the first to write a report's key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum First {
    /// Now.
    Now,
    /// Before: the report is sent to it again.
    Before,
    /// Another member was.
    Not,
}

impl Fleet {
    /// Whether this member acts on the report of dedup key `key`: it is
    /// the first in the fleet to write it (or wrote it itself, for a
    /// report it is sent again), kept `keep`. `Err` when etcd cannot be
    /// asked: nobody can tell, so the report is refused (its sender
    /// tries again).
    pub async fn first_to_report(&self, key: &str) -> Result<bool, String> {
        let first = self.ask_first(key).await;
        self.count(match first {
            Ok(First::Now) => |c| &mut c.reports_acted,
            Ok(First::Before) => |c| &mut c.reports_resent,
            Ok(First::Not) => |c| &mut c.reports_duplicate,
            Err(_) => |c| &mut c.reports_unanswered,
        });
        first.map(|first| first != First::Not)
    }

    async fn ask_first(&self, key: &str) -> Result<First, String> {
        let lease = self
            .state()
            .session
            .as_ref()
            .filter(|session| session.holds(std::time::Instant::now()))
            .map(|session| session.lease)
            .ok_or_else(|| "this member is not in touch with etcd".to_owned())?;
        let key = keys::dedup(key);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.member(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let answer = self
            .inner
            .etcd
            .call(
                CALL_WITHIN,
                |mut client| async move { client.txn(txn).await },
            )
            .await
            .map_err(|_| "etcd did not answer in time".to_owned())?
            .map_err(|err| format!("etcd refused the write: {}", etcd_error(&err)))?;
        if answer.succeeded() {
            return Ok(First::Now);
        }
        let ours = answer.op_responses().into_iter().any(|response| {
            matches!(response, TxnOpResponse::Get(got)
                if got.kvs().first().is_some_and(|kv| kv.value() == self.member().as_bytes()))
        });
        Ok(if ours { First::Before } else { First::Not })
    }

    /// The report of `key`, which this member acted on, stays a duplicate
    /// for `keep`, whatever becomes of this member. Best effort: should
    /// it fail, the key lives as long as this member's lease.
    pub async fn reported(&self, key: &str, keep: Duration) {
        let Ok(lease) = self.dedup_lease(keep).await else {
            return;
        };
        let key = keys::dedup(key);
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, self.member())])
            .and_then([TxnOp::put(
                key,
                self.member(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let _ = self
            .inner
            .etcd
            .call(
                CALL_WITHIN,
                |mut client| async move { client.txn(txn).await },
            )
            .await;
    }

    /// A lease for keys kept `keep`.
    async fn dedup_lease(&self, keep: Duration) -> Result<i64, String> {
        let secs = keep.as_secs().max(1);
        let reuse = Duration::from_secs(secs) / 10;
        {
            let leases = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((lease, granted)) = leases.0.get(&secs) {
                if granted.elapsed() < reuse {
                    return Ok(*lease);
                }
            }
        }
        let granted = self
            .inner
            .etcd
            .call(CALL_WITHIN, |mut client| async move {
                client.lease_grant(secs as i64, None).await
            })
            .await
            .map_err(|_| "etcd did not grant a lease in time".to_owned())?
            .map_err(|err| format!("etcd did not grant a lease: {}", etcd_error(&err)))?;
        let mut leases = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.0.insert(secs, (granted.id(), Instant::now()));
        Ok(granted.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_occurrences_apart() {
        assert_eq!(alert_key("r", "f", "s"), alert_key("r", "f", "s"));
        assert_ne!(alert_key("r", "f", "s1"), alert_key("r", "f", "s2"));
        assert_ne!(alert_key("ab", "c", ""), alert_key("a", "bc", ""));
        assert_ne!(anomaly_key("x"), alert_key("x", "", ""));
        assert_eq!(anomaly_key("x").len(), 32);
    }
}
