//! What a fleet target's loop writes to etcd, every write fenced on its
//! shard's epoch: its open issues (what the next owner carries on from)
//! and, before every recovery, the claim.
//!
//! A claim is one transaction: if the shard's owner key is still the one
//! created at the epoch (this member still owns it, and nobody took it
//! since) and the issue's key is as this member last wrote or read it,
//! the issue is written as being recovered (attempt n, the member, the
//! epoch). Its revision is the claim ([`Fence::claim`]): the recovery
//! carries it (`HEALER_FENCE`, `Idempotency-Key`), and it grows with
//! every later claim. A member that was paused or cut off fails it: etcd
//! deleted its owner key when its lease expired, and a new owner's key
//! has a later create revision. The recovery starts only within a
//! second of the claim being sent and while the session holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};
use healer_plugin_sdk::Fence;
use serde::Deserialize;

use super::{issue_record, keys, Fleet, CALL_WITHIN};
use crate::issues::Issue;

/// A recovery starts within this of its claim being sent, or not at all.
pub const ACT_WITHIN: Duration = Duration::from_secs(1);

/// An open issue as etcd holds it.
#[derive(Clone, Debug)]
pub struct Saved {
    pub issue: Issue,
    /// The revision of its key.
    pub revision: i64,
    /// A recovery claimed and not known to have ended: who claimed it,
    /// and how long it may run from when it was read.
    pub running: Option<(String, Duration)>,
}

/// The open issues in `kvs` (a shard's `issues/` keys), by target.
pub(super) fn read_saved(kvs: &[KeyValue]) -> HashMap<String, Vec<Saved>> {
    #[derive(Deserialize)]
    struct Record {
        target: String,
        issue: Issue,
        #[serde(default)]
        member: String,
        /// Written by a claim: how long its recovery may run.
        #[serde(default)]
        running_ms: Option<u64>,
    }
    let mut saved: HashMap<String, Vec<Saved>> = HashMap::new();
    for kv in kvs {
        // A record healer cannot read is left alone: the issue is found
        // again by the new owner's own checks.
        if let Ok(record) = serde_json::from_slice::<Record>(kv.value()) {
            saved.entry(record.target).or_default().push(Saved {
                issue: record.issue,
                revision: kv.mod_revision(),
                running: record
                    .running_ms
                    .map(|ms| (record.member, Duration::from_millis(ms))),
            });
        }
    }
    saved
}

/// One fleet target's writes to etcd, fenced on its shard's epoch.
pub struct ShardFence {
    fleet: Fleet,
    shard: u32,
    epoch: u64,
    target: String,
    /// Each open issue's key revision as last written or read (none: no
    /// key).
    revisions: HashMap<String, i64>,
    /// What was last written of each open issue.
    written: HashMap<String, String>,
    /// Issues whose recovery the previous owner claimed and may still be
    /// running: no claim before then, and why.
    held: HashMap<String, (Instant, String)>,
}

impl ShardFence {
    pub(super) fn new(fleet: Fleet, shard: u32, epoch: u64, target: &str) -> ShardFence {
        ShardFence {
            fleet,
            shard,
            epoch,
            target: target.to_owned(),
            revisions: HashMap::new(),
            written: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// Carries on from the issues etcd held for the target. A recovery
    /// the previous owner claimed may still be running (it did not live
    /// to say it ended): this member claims nothing on that issue until
    /// it must have ended, counted from now (FLEET.md's claim deadline).
    pub fn carry_on(&mut self, saved: &[Saved]) {
        let now = Instant::now();
        for saved in saved {
            let kind = saved.issue.kind.clone();
            self.revisions.insert(kind.clone(), saved.revision);
            let record = self.record(&saved.issue, None);
            self.written.insert(kind.clone(), record);
            if let Some((member, runs_for)) = &saved.running {
                let why = format!(
                    "{member}'s recovery (attempt {}) may still be running, for {} from the takeover",
                    saved.issue.attempts,
                    healer_plugin_sdk::Duration(*runs_for)
                );
                self.held.insert(kind, (now + *runs_for, why));
            }
        }
    }

    /// Whether this member may still act on the target: it owns the
    /// shard since the same epoch, and its session holds.
    pub fn holds(&self) -> bool {
        self.fleet.owns(self.shard, self.epoch) && self.fleet.holds()
    }

    /// Whether a recovery step may start now: as for a claim (owned,
    /// not handed back, more than the margin before the deadline).
    pub fn may_act(&self) -> bool {
        self.fleet.may_claim(self.shard, self.epoch).is_ok()
    }

    /// The fleet it writes to.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    fn record(&self, issue: &Issue, running: Option<Duration>) -> String {
        issue_record(
            &self.target,
            issue,
            self.fleet.member(),
            self.epoch,
            running,
        )
    }

    fn key(&self, kind: &str) -> String {
        keys::issue(self.shard, &self.target, kind)
    }

    /// The two conditions of every write: the shard is still ours since
    /// the epoch, the issue's key as last seen.
    fn fenced(&self, kind: &str) -> Vec<Compare> {
        vec![
            Compare::create_revision(keys::owner(self.shard), CompareOp::Equal, self.epoch as i64),
            Compare::mod_revision(
                self.key(kind),
                CompareOp::Equal,
                self.revisions.get(kind).copied().unwrap_or(0),
            ),
        ]
    }

    /// Claims the recovery `issue` is about to get (its next attempt,
    /// which may run for `runs_for`): the fence it runs under, or why it
    /// may not run.
    pub async fn claim(&mut self, issue: &Issue, runs_for: Duration) -> Result<Fence, String> {
        // Not sent (`held`): the member may not claim now.
        if let Err(why) = self.fleet.may_claim(self.shard, self.epoch) {
            self.fleet.count(|c| &mut c.claims_held);
            return Err(why);
        }
        if let Some((until, why)) = self.held.get(&issue.kind) {
            if Instant::now() < *until {
                self.fleet.count(|c| &mut c.claims_held);
                return Err(why.clone());
            }
            self.held.remove(&issue.kind);
        }
        let claimed = self.send_claim(issue, runs_for).await;
        self.fleet.count(match claimed {
            Ok(_) => |c| &mut c.claims_made,
            Err(_) => |c| &mut c.claims_refused,
        });
        claimed
    }

    /// The claim's write, and whether it still holds once answered.
    async fn send_claim(&mut self, issue: &Issue, runs_for: Duration) -> Result<Fence, String> {
        let sent = Instant::now();
        let mut claimed = issue.clone();
        claimed.attempts += 1;
        claimed.state = crate::issues::State::Recovering;
        let record = self.record(&claimed, Some(runs_for));
        let revision = self.write(&issue.kind, Some(record)).await?;
        // A pause between the claim and the action (a stopped process, a
        // slow answer) must not carry it past what the claim proves.
        if sent.elapsed() > ACT_WITHIN || !self.holds() {
            return Err(format!(
                "the claim took {} to be answered; a recovery starts within {} of it",
                healer_plugin_sdk::Duration(sent.elapsed()),
                healer_plugin_sdk::Duration(ACT_WITHIN)
            ));
        }
        Ok(Fence {
            claim: revision as u64,
            epoch: self.epoch,
            shard: self.shard,
            member: self.fleet.member().to_owned(),
        })
    }

    /// Writes what changed of the target's open issues `open` (a new or
    /// changed one put, one no longer open deleted). A write that fails
    /// is tried again at the next call.
    pub async fn sync<'a>(&mut self, open: impl Iterator<Item = &'a Issue>) {
        let mut seen = Vec::new();
        for issue in open {
            seen.push(issue.kind.clone());
            let record = self.record(issue, None);
            if self.written.get(&issue.kind) != Some(&record) {
                let _ = self.write(&issue.kind, Some(record)).await;
            }
        }
        let gone: Vec<String> = self
            .written
            .keys()
            .filter(|kind| !seen.contains(kind))
            .cloned()
            .collect();
        for kind in gone {
            let _ = self.write(&kind, None).await;
        }
    }

    /// Puts (or, with `None`, deletes) the issue of `kind`, fenced: its
    /// revision, or why not. A write refused because the shard is no
    /// longer ours loses it.
    async fn write(&mut self, kind: &str, record: Option<String>) -> Result<i64, String> {
        let key = self.key(kind);
        let then = match &record {
            Some(record) => TxnOp::put(key.clone(), record.clone(), None),
            None => TxnOp::delete(key.clone(), None),
        };
        let txn = Txn::new()
            .when(self.fenced(kind))
            .and_then([then])
            .or_else([
                TxnOp::get(keys::owner(self.shard), None),
                TxnOp::get(key, Some(GetOptions::new().with_keys_only())),
            ]);
        let answer = self
            .fleet
            .inner
            .etcd
            .call(
                CALL_WITHIN,
                |mut client| async move { client.txn(txn).await },
            )
            .await;
        // A write whose answer was lost may have been applied: the next
        // write, made on the revision last seen, then finds the key
        // changed and reads it (below).
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                return Err(format!(
                    "etcd refused the write: {}",
                    super::etcd_error(&err)
                ))
            }
            Err(_) => {
                return Err(format!(
                    "etcd did not answer within {}",
                    healer_plugin_sdk::Duration(CALL_WITHIN)
                ));
            }
        };
        let revision = answer.header().map_or(0, |h| h.revision());
        if answer.succeeded() {
            match record {
                Some(record) => {
                    self.revisions.insert(kind.to_owned(), revision);
                    self.written.insert(kind.to_owned(), record);
                }
                None => {
                    self.revisions.remove(kind);
                    self.written.remove(kind);
                }
            }
            return Ok(revision);
        }
        let mut owner = None;
        let mut issue = 0;
        for (at, response) in answer.op_responses().into_iter().enumerate() {
            if let TxnOpResponse::Get(got) = response {
                let kv = got.kvs().first();
                if at == 0 {
                    owner = kv.map(|kv| kv.create_revision() as u64);
                } else {
                    issue = kv.map_or(0, |kv| kv.mod_revision());
                }
            }
        }
        if owner != Some(self.epoch) {
            self.fleet.lose(
                self.shard,
                self.epoch,
                &format!(
                    "a write of target {:?} found its owner key gone or newer than epoch {}",
                    self.target, self.epoch
                ),
            );
            return Err(format!(
                "this member no longer owns shard {} (epoch {})",
                self.shard, self.epoch
            ));
        }
        // Ours, but the issue's key was not as last seen (a write whose
        // answer was lost): read, and tried again next time (a put by
        // writing it anew, a delete by keeping it as written).
        self.revisions.insert(kind.to_owned(), issue);
        if record.is_some() {
            self.written.remove(kind);
        }
        Err(format!(
            "the issue's record in etcd changed since this member read it (revision {issue})"
        ))
    }
}
