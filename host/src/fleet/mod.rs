//! A fleet of healers sharing the targets marked `fleet = true` through
//! etcd (`../shared/FLEET.md` is the design): each such target belongs to
//! one of 4,096 fixed shards, and only the member owning its shard now
//! checks and recovers it.
//!
//! A member holds one lease ([`session`]); its member key and the owner
//! keys of its shards live on it, so etcd deletes them all when the
//! member dies. The member renews the lease every fifth of its TTL and
//! counts its own deadline from the send time of the latest renewal
//! etcd acknowledged: past it, the member drops every shard (fail
//! closed), before the server can have expired the lease. Every
//! [`SCAN_EVERY`] it reads the owner keys: a shard of its own whose key
//! is gone is lost; an unowned shard that some fleet target needs is
//! taken by a create-only transaction (its revision is the shard's
//! *epoch*), up to its share plus one, preferred by rendezvous hash; a
//! surplus shard is handed back at most one every [`RELEASE_EVERY`], once
//! its targets' loops have stopped. What a shard's targets do goes
//! through [`fence::ShardFence`]: every recovery is claimed by a
//! transaction on the epoch and the issue's revision first.
//!
//! The daemon hears of shards taken, lost and to release as [`Change`]s
//! and starts or stops their targets' loops.

mod confirm;
mod dedup;
pub mod fence;
mod keys;
mod link;
mod session;
mod shard;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;

use crate::config::{Config, Fleet as Settings};
use crate::events::{Event, Events};
use crate::issues::Issue;
use healer_plugin_sdk::Duration as HumanDuration;

pub use confirm::{agreed, views, Answer, Seen, ASK_WITHIN};
pub use dedup::{alert_key, anomaly_key, ALERT_KEPT};
pub use fence::{Saved, ShardFence};
pub use session::Session;
pub use shard::{most_to_own, preference, shard_of, SHARDS};

/// How often a member reads who owns what.
pub const SCAN_EVERY: Duration = Duration::from_millis(250);

/// A surplus shard is handed back at most this often.
pub const RELEASE_EVERY: Duration = Duration::from_secs(2);

/// A member that just joined waits this long before it takes a shard,
/// so that members starting together see each other first (the first
/// to join would otherwise take every shard and hand them back one at
/// a time).
pub const SETTLE: Duration = Duration::from_secs(1);

/// The longest any one call to etcd may take.
const CALL_WITHIN: Duration = Duration::from_secs(2);

/// What the daemon is told to do with a shard's targets.
pub enum Change {
    /// This member owns `shard` since `epoch`: start its targets, each
    /// carrying on from the open issues etcd holds for it.
    Taken {
        shard: u32,
        epoch: u64,
        saved: HashMap<String, Vec<Saved>>,
    },
    /// This member no longer owns `shard` since `epoch`: stop the loops
    /// of that epoch at once.
    Lost { shard: u32, epoch: u64 },
    /// `shard` (owned since `epoch`) is to be handed back: stop its
    /// targets, then say `done`.
    Release {
        shard: u32,
        epoch: u64,
        done: oneshot::Sender<()>,
    },
}

/// A shard this member owns.
#[derive(Clone, Copy, Debug)]
struct Owned {
    epoch: u64,
    since: Instant,
    /// Being handed back: nothing new is claimed on it.
    releasing: bool,
}

/// What the member knows of the fleet now.
#[derive(Default)]
struct State {
    session: Option<Session>,
    owned: BTreeMap<u32, Owned>,
    /// The members etcd listed at the latest scan.
    members: Vec<String>,
    /// Whether the member is in touch with etcd (for one event per
    /// change).
    coordinated: Option<bool>,
    /// Why it is not, as last seen.
    trouble: Option<String>,
    /// When its current session began.
    joined_at: Option<Instant>,
    /// Shards some fleet target needs that had no owner at the latest
    /// scan.
    unowned: usize,
    /// Its claims and reports since it started.
    counts: Counts,
}

/// What this member's claims and reports came to since it started (the
/// `healer_fleet_*_total` counters).
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Counts {
    /// Claims etcd accepted.
    pub claims_made: u64,
    /// Claims etcd refused (the shard's owner key or the issue's record
    /// not as this member last saw them) or did not answer.
    pub claims_refused: u64,
    /// Claims not sent: the member may not claim now (the lease's last
    /// second, a shard being handed back, a previous owner's recovery
    /// that may still run).
    pub claims_held: u64,
    /// Reports this member was the first in the fleet to get.
    pub reports_acted: u64,
    /// Reports it got again, having been the first.
    pub reports_resent: u64,
    /// Reports another member got first.
    pub reports_duplicate: u64,
    /// Reports it could not ask etcd about (answered 503).
    pub reports_unanswered: u64,
}

impl Counts {
    /// Each count the larger of the two: what was counted, whichever of
    /// two readings came last.
    pub fn max(self, other: Counts) -> Counts {
        Counts {
            claims_made: self.claims_made.max(other.claims_made),
            claims_refused: self.claims_refused.max(other.claims_refused),
            claims_held: self.claims_held.max(other.claims_held),
            reports_acted: self.reports_acted.max(other.reports_acted),
            reports_resent: self.reports_resent.max(other.reports_resent),
            reports_duplicate: self.reports_duplicate.max(other.reports_duplicate),
            reports_unanswered: self.reports_unanswered.max(other.reports_unanswered),
        }
    }
}

/// The fleet as this member takes part in it: cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    etcd: link::Link,
    events: Events,
    /// The shards the config's fleet targets need, and their targets.
    needed: BTreeMap<u32, Vec<String>>,
    state: Mutex<State>,
    /// Where the daemon hears what to start and stop.
    changes: mpsc::UnboundedSender<Change>,
    /// The leases of dedup keys.
    leases: Mutex<dedup::Leases>,
    /// The token other members' APIs require.
    token: std::sync::OnceLock<Option<String>>,
    /// The client confirmations are asked with.
    http: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

/// What `GET /api/v1/fleet` and `healer status` show.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct View {
    /// This member's name.
    pub member: String,
    /// Whether it is in touch with etcd and may act on its shards.
    pub coordinated: bool,
    /// Why not, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trouble: Option<String>,
    /// Its lease (hex, as `etcdctl lease list` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Milliseconds until its deadline, if the lease is not renewed.
    pub lease_left_ms: u64,
    /// The etcd endpoint it talks to now.
    #[serde(default)]
    pub etcd: String,
    /// The members etcd lists.
    pub members: Vec<String>,
    /// Shards some fleet target needs.
    pub shards_needed: usize,
    /// Of those, the ones no member owned at the latest scan.
    #[serde(default)]
    pub shards_unowned: usize,
    /// Claims and reports since this member started.
    #[serde(default)]
    pub counts: Counts,
    /// The shards it owns, with their epochs and targets.
    pub shards: Vec<ShardView>,
}

/// One owned shard, as shown.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ShardView {
    pub shard: u32,
    pub epoch: u64,
    pub owned_for_ms: u64,
    pub targets: Vec<String>,
}

/// The shards `config`'s fleet targets need, each with its targets.
pub fn needed_by(config: &Config) -> BTreeMap<u32, Vec<String>> {
    let mut needed: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for target in config.targets.iter().filter(|t| t.fleet && t.enabled) {
        needed
            .entry(shard_of(&target.name))
            .or_default()
            .push(target.name.clone());
    }
    needed
}

impl Fleet {
    /// Joins the fleet `config` names (none without `[fleet]`): the
    /// member's lease is renewed and its shards taken in the background
    /// until `shutdown`; the daemon hears what to start and stop.
    pub async fn start(
        config: &Config,
        events: &Events,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Option<(Fleet, mpsc::UnboundedReceiver<Change>)>, String> {
        let Some(settings) = config.fleet.clone() else {
            return Ok(None);
        };
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(CALL_WITHIN)
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
            .with_keep_alive_while_idle(true)
            // An etcd member cut off from its leader says so at once
            // (unavailable: the link moves on) rather than at the timeout.
            .with_require_leader(true);
        // The channel connects lazily: an etcd down at start is a fleet
        // not yet joined, not a failed start.
        let etcd = link::Link::connect(&settings.etcd, &options, &settings.member)
            .await
            .map_err(|err| format!("[fleet] etcd {:?}: {}", settings.etcd, etcd_error(&err)))?;
        // Unbounded, yet bounded by the shards: each has at most a few
        // changes waiting.
        let (changes, heard) = mpsc::unbounded_channel();
        let fleet = Fleet {
            inner: Arc::new(Inner {
                settings,
                etcd,
                events: events.clone(),
                needed: needed_by(config),
                state: Mutex::new(State::default()),
                changes,
                leases: Mutex::default(),
                token: std::sync::OnceLock::new(),
                http: std::sync::OnceLock::new(),
            }),
        };
        tokio::spawn(fleet.clone().renew(shutdown.clone()));
        tokio::spawn(fleet.clone().own(shutdown));
        Ok(Some((fleet, heard)))
    }

    /// This member's name.
    pub fn member(&self) -> &str {
        &self.inner.settings.member
    }

    /// The targets of `shard` in the config.
    pub fn targets_of(&self, shard: u32) -> Vec<String> {
        self.inner.needed.get(&shard).cloned().unwrap_or_default()
    }

    /// What it knows now.
    pub fn view(&self) -> View {
        let now = Instant::now();
        let state = self.state();
        let needed = &self.inner.needed;
        View {
            member: self.inner.settings.member.clone(),
            coordinated: state.coordinated == Some(true),
            trouble: state.trouble.clone(),
            lease: state.session.as_ref().map(|s| format!("{:x}", s.lease)),
            lease_left_ms: state
                .session
                .as_ref()
                .map_or(0, |s| s.left(now).as_millis() as u64),
            members: state.members.clone(),
            etcd: self.inner.etcd.endpoint().to_owned(),
            shards_needed: needed.len(),
            shards_unowned: state.unowned,
            counts: state.counts,
            shards: state
                .owned
                .iter()
                .map(|(&shard, owned)| ShardView {
                    shard,
                    epoch: owned.epoch,
                    owned_for_ms: now.duration_since(owned.since).as_millis() as u64,
                    targets: needed.get(&shard).cloned().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// The fence a target of `shard` owned since `epoch` claims its
    /// recoveries through.
    pub fn fence(&self, shard: u32, epoch: u64, target: &str) -> ShardFence {
        ShardFence::new(self.clone(), shard, epoch, target)
    }

    /// Leaves the fleet (healer stops): the lease is revoked, so every
    /// shard it owned is free at once, not after the TTL.
    pub async fn leave(&self) {
        let lease = {
            let mut state = self.state();
            state.owned.clear();
            state.session.take().map(|s| s.lease)
        };
        if let Some(lease) = lease {
            self.revoke(lease).await;
        }
    }

    /// Revokes `lease` (best effort): its keys go at once.
    async fn revoke(&self, lease: i64) {
        let _ = self
            .inner
            .etcd
            .call(CALL_WITHIN, |mut client| async move {
                client.lease_revoke(lease).await
            })
            .await;
    }

    /// Counts one claim or report in the count `which` picks.
    fn count(&self, which: fn(&mut Counts) -> &mut u64) {
        *which(&mut self.state().counts) += 1;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether `shard` is still owned since `epoch`, the session holding,
    /// and a claim may be made now: `Err` says why not.
    fn may_claim(&self, shard: u32, epoch: u64) -> Result<(), String> {
        let now = Instant::now();
        let state = self.state();
        match state.owned.get(&shard) {
            Some(owned) if owned.epoch == epoch && !owned.releasing => {}
            Some(owned) if owned.releasing => {
                return Err(format!("shard {shard} is being handed back"))
            }
            _ => return Err(format!("this member no longer owns shard {shard}")),
        }
        match &state.session {
            Some(session) if session.may_claim(now) => Ok(()),
            Some(session) => Err(format!(
                "the lease has {} left before this member stops acting",
                HumanDuration(session.left(now))
            )),
            None => Err("this member has no lease".to_owned()),
        }
    }

    /// Whether `shard` is owned since `epoch` (and not being handed back).
    pub fn owns(&self, shard: u32, epoch: u64) -> bool {
        self.state()
            .owned
            .get(&shard)
            .is_some_and(|owned| owned.epoch == epoch && !owned.releasing)
    }

    /// Whether the session still holds (an action may start).
    fn holds(&self) -> bool {
        self.state()
            .session
            .as_ref()
            .is_some_and(|s| s.holds(Instant::now()))
    }

    /// Forgets `shard` as owned since `epoch` (its owner key is gone or
    /// replaced, or it was handed back): the daemon stops that epoch's
    /// loops. A newer ownership of the shard is left alone.
    fn lose(&self, shard: u32, epoch: u64, reason: &str) {
        let gone = {
            let mut state = self.state();
            match state.owned.get(&shard) {
                Some(owned) if owned.epoch == epoch => state.owned.remove(&shard),
                _ => None,
            }
        };
        if gone.is_some() {
            self.inner.events.emit(Event::FleetShardLost {
                member: self.member().to_owned(),
                shard,
                epoch,
                reason: reason.to_owned(),
            });
            let _ = self.inner.changes.send(Change::Lost { shard, epoch });
        }
    }

    /// Every shard owned now, with its epoch.
    fn owned_now(&self) -> Vec<(u32, Owned)> {
        self.state().owned.iter().map(|(s, o)| (*s, *o)).collect()
    }

    /// Says, once per change, whether the member is in touch with etcd:
    /// `trouble` is why not (none: it is).
    fn coordinated(&self, trouble: Option<String>) {
        let now = trouble.is_none();
        let was = {
            let mut state = self.state();
            state.trouble.clone_from(&trouble);
            state.coordinated.replace(now)
        };
        if was == Some(now) {
            return;
        }
        let member = self.member().to_owned();
        self.inner.events.emit(match trouble {
            None => Event::FleetJoined {
                member,
                etcd: self.inner.settings.etcd.clone(),
                lease: self.inner.settings.lease,
            },
            Some(reason) => Event::FleetCoordinationLost { member, reason },
        });
    }

    /// Renews the lease every fifth of its TTL until `shutdown`; each
    /// acknowledged renewal moves the deadline to its send time plus the
    /// TTL granted.
    async fn renew(self, mut shutdown: watch::Receiver<bool>) {
        let every = self.inner.settings.lease.0 / 5;
        // A renewal (or a new stream for them) not answered in this is
        // given up, and the endpoint with it: a lease of 2 s leaves no
        // room for a whole call's time.
        let renew_within = every.max(Duration::from_millis(500));
        // The lease, the endpoint, and the stream renewals go on.
        let mut keeping: Option<(
            i64,
            usize,
            etcd_client::LeaseKeeper,
            etcd_client::LeaseKeepAliveStream,
        )> = None;
        loop {
            let lease = self.state().session.as_ref().map(|s| s.lease);
            let sent = Instant::now();
            if let Some(lease) = lease {
                if keeping.as_ref().is_none_or(|(id, ..)| *id != lease) {
                    let (endpoint, mut client) = self.inner.etcd.client();
                    let opened = timeout(renew_within, client.lease_keep_alive(lease)).await;
                    self.inner.etcd.judge(endpoint, &opened);
                    keeping = match opened {
                        Ok(Ok((keeper, stream))) => Some((lease, endpoint, keeper, stream)),
                        Ok(Err(etcd_client::Error::LeaseKeepAliveError(why)))
                            if why == "lease not found" =>
                        {
                            self.expired(lease, "etcd says the lease expired");
                            None
                        }
                        _ => None,
                    };
                }
                if let Some((_, endpoint, keeper, stream)) = &mut keeping {
                    let renewed = timeout(renew_within, async {
                        keeper.keep_alive().await?;
                        stream.message().await
                    })
                    .await;
                    match renewed {
                        Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                            let ttl = Duration::from_secs(answer.ttl() as u64);
                            if let Some(session) = self.state().session.as_mut() {
                                if session.lease == lease {
                                    session.renewed(sent, ttl);
                                }
                            }
                        }
                        Ok(Ok(Some(_))) => {
                            // etcd no longer knows the lease: it expired.
                            self.expired(lease, "etcd says the lease expired");
                            keeping = None;
                        }
                        Ok(Ok(None)) => {
                            // The stream ended: its endpoint went away.
                            self.inner.etcd.failed(*endpoint);
                            keeping = None;
                        }
                        other => {
                            self.inner.etcd.judge(*endpoint, &other);
                            keeping = None;
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until((sent + every).into()) => {}
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            }
        }
    }

    /// The session of `lease` ended: every shard it owned is dropped (a
    /// newer session's are not).
    fn expired(&self, lease: i64, reason: &str) {
        {
            let mut state = self.state();
            if state.session.as_ref().is_none_or(|s| s.lease != lease) {
                return;
            }
            state.session = None;
        }
        for (shard, owned) in self.owned_now() {
            self.lose(shard, owned.epoch, reason);
        }
    }

    /// Takes, keeps and hands back shards until `shutdown`.
    async fn own(self, mut shutdown: watch::Receiver<bool>) {
        let mut last_release = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SCAN_EVERY) => {}
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            }
            if let Err(trouble) = self.own_once(&mut last_release).await {
                self.coordinated(Some(trouble));
            }
        }
    }

    /// One round: the session, the owners, shards taken, lost and
    /// handed back. `Err` when etcd could not be asked.
    async fn own_once(&self, last_release: &mut Instant) -> Result<(), String> {
        let now = Instant::now();
        let session = self.state().session.clone();
        let session = match session {
            Some(session) if session.holds(now) => session,
            Some(session) => {
                // No renewal was acknowledged in time: fail closed.
                let reason = format!(
                    "no renewal of the lease was acknowledged within {}: etcd cannot be reached",
                    HumanDuration(session.ttl)
                );
                self.expired(session.lease, &reason);
                let fleet = self.clone();
                tokio::spawn(async move { fleet.revoke(session.lease).await });
                return Err(reason);
            }
            None => self.join().await?,
        };
        // A scan that fails while the session holds (an election, a slow
        // member) is tried again next round: the shards are still ours
        // until the deadline says otherwise.
        let (owners, members) = match self.scan().await {
            Ok(scanned) => scanned,
            Err(why) => {
                tracing::debug!(reason = %why, "fleet: etcd not read this round");
                return Ok(());
            }
        };
        self.coordinated(None);
        {
            let mut state = self.state();
            state.members.clone_from(&members);
            state.unowned = self
                .inner
                .needed
                .keys()
                .filter(|shard| !owners.contains_key(shard))
                .count();
        }
        let owned = self.owned_now();
        for (shard, mine) in &owned {
            let still = owners
                .get(shard)
                .is_some_and(|(epoch, lease)| *epoch == mine.epoch && *lease == session.lease);
            if !still {
                self.lose(
                    *shard,
                    mine.epoch,
                    "its owner key in etcd is gone or another member's",
                );
            }
        }
        // An owner key on this member's lease that it does not own (a take
        // whose answer was lost, a hand-back whose delete failed) would
        // keep the shard from everyone: deleted.
        for (shard, (epoch, lease)) in &owners {
            if *lease == session.lease && !owned.iter().any(|(s, _)| s == shard) {
                let _ = self.release_key(*shard, *epoch).await;
            }
        }
        let needed: Vec<u32> = self.inner.needed.keys().copied().collect();
        let most = most_to_own(needed.len(), members.len());
        let held = self.state().owned.len();
        let settled = self
            .state()
            .joined_at
            .is_some_and(|at| at.elapsed() >= SETTLE);
        if held < most && settled && session.may_claim(Instant::now()) {
            let member = self.member().to_owned();
            let mut free: Vec<u32> = needed
                .iter()
                .copied()
                .filter(|shard| !owners.contains_key(shard))
                .collect();
            free.sort_by_key(|&shard| std::cmp::Reverse(preference(&member, shard)));
            free.truncate(most - held);
            let taking = free
                .into_iter()
                .map(|shard| self.take(shard, session.lease));
            let taken = futures_util::future::join_all(taking).await;
            for taken in taken.into_iter().flatten() {
                let _ = self.inner.changes.send(taken);
            }
        } else if held > most && last_release.elapsed() >= RELEASE_EVERY {
            // The least preferred shard goes, once its loops stopped.
            let member = self.member().to_owned();
            let surplus = self
                .state()
                .owned
                .iter()
                .filter(|(_, owned)| !owned.releasing)
                .min_by_key(|(shard, _)| preference(&member, **shard))
                .map(|(shard, owned)| (*shard, *owned));
            if let Some((shard, mine)) = surplus {
                *last_release = Instant::now();
                let reason = format!(
                    "handed back: {} members share {} shards, at most {most} each",
                    members.len(),
                    needed.len()
                );
                // In the background: its loops may take as long as a
                // recovery to stop, and nothing else waits for that.
                let fleet = self.clone();
                tokio::spawn(async move { fleet.hand_back(shard, mine, &reason).await });
            }
        }
        Ok(())
    }

    /// A new session: a lease granted and the member key put on it.
    async fn join(&self) -> Result<Session, String> {
        let ttl = self.inner.settings.lease.0;
        let sent = Instant::now();
        let secs = ttl.as_secs().max(1) as i64;
        let granted = self
            .inner
            .etcd
            .call(CALL_WITHIN, |mut client| async move {
                client.lease_grant(secs, None).await
            })
            .await
            .map_err(|_| {
                format!(
                    "etcd did not grant a lease within {}",
                    HumanDuration(CALL_WITHIN)
                )
            })?
            .map_err(|err| format!("etcd did not grant a lease: {}", etcd_error(&err)))?;
        let session = Session::granted(
            granted.id(),
            Duration::from_secs(granted.ttl().max(1) as u64),
            sent,
        );
        let about = serde_json::json!({
            "pid": std::process::id(),
            "advertise": self.inner.settings.advertise,
        });
        // Create-only: two members of one name would both act on what
        // either was sent first.
        let key = keys::member(self.member());
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                about.to_string(),
                Some(PutOptions::new().with_lease(session.lease)),
            )]);
        let written = self
            .inner
            .etcd
            .call(
                CALL_WITHIN,
                |mut client| async move { client.txn(txn).await },
            )
            .await;
        let refused = match written {
            Ok(Ok(answer)) if answer.succeeded() => None,
            Ok(Ok(_)) => Some(format!(
                "another live member is named {:?}: give each healer its own [fleet] member",
                self.member()
            )),
            Ok(Err(err)) => Some(format!(
                "the member key was not written: {}",
                etcd_error(&err)
            )),
            Err(_) => Some("the member key was not written in time".to_owned()),
        };
        if let Some(why) = refused {
            self.revoke(session.lease).await;
            return Err(why);
        }
        let mut state = self.state();
        state.session = Some(session.clone());
        state.joined_at = Some(Instant::now());
        Ok(session)
    }

    /// Who owns each shard (its epoch and lease), and the members.
    async fn scan(&self) -> Result<(HashMap<u32, (u64, i64)>, Vec<String>), String> {
        let asked = |mut client: etcd_client::Client| async move {
            let shards = client
                .get(
                    keys::shards(),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await?;
            let members = client
                .get(
                    keys::members(),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await?;
            Ok::<_, etcd_client::Error>((shards, members))
        };
        let (shards, members) = self
            .inner
            .etcd
            .call(CALL_WITHIN, asked)
            .await
            .map_err(|_| format!("etcd did not answer within {}", HumanDuration(CALL_WITHIN)))?
            .map_err(|err| format!("etcd did not answer: {}", etcd_error(&err)))?;
        let owners = shards
            .kvs()
            .iter()
            .filter_map(|kv| {
                let shard = keys::owner_shard(kv.key())?;
                Some((shard, (kv.create_revision() as u64, kv.lease())))
            })
            .collect();
        let prefix = keys::members();
        let members = members
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        Ok((owners, members))
    }

    /// Takes `shard` if nobody owns it: its epoch and open issues.
    async fn take(&self, shard: u32, lease: i64) -> Option<Change> {
        let owner = keys::owner(shard);
        let txn = Txn::new()
            .when([Compare::create_revision(owner.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                owner,
                self.member(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let answer = self
            .inner
            .etcd
            .call(
                CALL_WITHIN,
                |mut client| async move { client.txn(txn).await },
            )
            .await;
        let Ok(Ok(answer)) = answer else {
            return None;
        };
        if !answer.succeeded() {
            return None;
        }
        let epoch = answer.header()?.revision() as u64;
        // The issues are read after the shard is ours: nobody else writes
        // them now.
        let issues = self
            .inner
            .etcd
            .call(CALL_WITHIN, |mut client| async move {
                let all = GetOptions::new().with_prefix();
                client.get(keys::issues(shard), Some(all)).await
            })
            .await;
        let saved = match issues {
            Ok(Ok(issues)) => fence::read_saved(issues.kvs()),
            _ => {
                // Without them the shard cannot be carried on: hand it
                // back for another try.
                let _ = self.release_key(shard, epoch).await;
                return None;
            }
        };
        self.state().owned.insert(
            shard,
            Owned {
                epoch,
                since: Instant::now(),
                releasing: false,
            },
        );
        let targets = self.targets_of(shard);
        self.inner.events.emit(Event::FleetShardTaken {
            member: self.member().to_owned(),
            shard,
            epoch,
            targets,
            issues: saved.values().map(Vec::len).sum(),
        });
        Some(Change::Taken {
            shard,
            epoch,
            saved,
        })
    }

    /// Hands `shard` back: no claim on it from now, its loops stopped
    /// (the daemon says when), then its owner key deleted.
    async fn hand_back(&self, shard: u32, mine: Owned, reason: &str) {
        match self.state().owned.get_mut(&shard) {
            Some(owned) if owned.epoch == mine.epoch => owned.releasing = true,
            _ => return,
        }
        // The key goes only once every loop of the shard stopped: never
        // while a recovery of it may still run here.
        let (done, stopped) = oneshot::channel();
        let epoch = mine.epoch;
        if self
            .inner
            .changes
            .send(Change::Release { shard, epoch, done })
            .is_err()
            || stopped.await.is_err()
        {
            return;
        }
        // A delete that fails leaves a key on this lease that the next
        // round finds and deletes.
        let _ = self.release_key(shard, epoch).await;
        self.lose(shard, epoch, reason);
    }

    /// Deletes `shard`'s owner key if it is still the one of `epoch`.
    async fn release_key(&self, shard: u32, epoch: u64) -> Result<(), String> {
        let owner = keys::owner(shard);
        let txn = Txn::new()
            .when([Compare::create_revision(
                owner.clone(),
                CompareOp::Equal,
                epoch as i64,
            )])
            .and_then([TxnOp::delete(owner, None)]);
        let answer = self
            .inner
            .etcd
            .call(
                CALL_WITHIN,
                |mut client| async move { client.txn(txn).await },
            )
            .await;
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(etcd_error(&err)),
            Err(_) => Err("etcd did not answer in time".to_owned()),
        }
    }
}

/// An etcd client error on one line.
fn etcd_error(err: &etcd_client::Error) -> String {
    crate::one_line::OneLine(&err.to_string()).to_string()
}

/// What an open issue of a fleet target is, kept in etcd.
/// A claim's record also says how long its recovery may run
/// (`running_ms`); the writes after it do not.
pub(crate) fn issue_record(
    target: &str,
    issue: &Issue,
    member: &str,
    epoch: u64,
    running: Option<Duration>,
) -> String {
    let mut record =
        serde_json::json!({ "target": target, "issue": issue, "member": member, "epoch": epoch });
    if let Some(running) = running {
        record["running_ms"] = serde_json::json!(running.as_millis() as u64);
    }
    record.to_string()
}
