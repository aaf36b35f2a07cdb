//! A fleet of healers on etcd (`../shared/FLEET.md`, issue 25), tested as
//! FLEET.md §7 plans it: 3 etcd members and 3 healers, each in its own
//! network namespace on a bridge the test makes, watching targets served
//! by one `fleet-service` process that records every check and recovery
//! on one monotonic clock and refuses a stale fence. Needs root, iproute2,
//! and Debian's etcd-server and etcd-client (`.ci/run` installs them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use healer_e2e::*;

const SERVICE: &str = env!("CARGO_BIN_EXE_fleet-service");

/// The lease of every test fleet: etcd's floor with 500 ms elections.
const TTL: Duration = Duration::from_secs(2);

/// How often a member hands back a surplus shard (`fleet::RELEASE_EVERY`).
const RELEASE_EVERY: Duration = healer::fleet::RELEASE_EVERY;

/// A fleet: its fabric, etcd, the services and three healers.
struct World {
    fabric: Fabric,
    etcd: Etcd,
    services: Services,
    members: Vec<Member>,
    /// What the members were made of, for one added later.
    shape: Shape,
    dir: tempfile::TempDir,
    plugins: tempfile::TempDir,
    /// Dropped last: the next test's fleet starts once this one is gone.
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// How each test shapes its fleet.
#[derive(Clone, Copy)]
struct Shape {
    targets: usize,
    interval: &'static str,
    /// Extra lines of each target (after `fleet = true`).
    extra: &'static str,
    /// The members' lease.
    lease: Duration,
    /// Extra config after the targets (local targets, alerts), given the
    /// member's directory and the services' URL.
    tail: fn(&Path, &str) -> String,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            targets: 30,
            interval: "500ms",
            extra: "",
            lease: TTL,
            tail: |_, _| String::new(),
        }
    }
}

const HEALERS: [&str; 3] = ["h1", "h2", "h3"];

/// The token of every member's API and intake.
const TOKEN: &str = "fleet-test-token-5f1c0e9a7b3d";

/// One fleet at a time: three etcd members and three healers each are
/// what a 2-core machine runs with its timing intact.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn world(shape: Shape) -> World {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let fabric = Fabric::new(&[
        "e1", "e2", "e3", "h1", "h2", "h3", "h4", "svc", "am1", "am2",
    ]);
    let mut dir = tempfile::tempdir().expect("temp dir");
    if std::env::var_os("HEALER_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("kept: {}", dir.path().display());
    }
    let etcd = Etcd::start(&fabric, &["e1", "e2", "e3"], dir.path());
    let services = Services::start(&fabric, "svc", &dir.path().join("svc"), SERVICE);
    let plugins = plugins_dir_with(&[
        "healer-plugin-http",
        "healer-plugin-webhook",
        "healer-plugin-process",
        "healer-plugin-command",
    ]);
    let members = HEALERS
        .iter()
        .map(|node| {
            let (home, config) = member_config(
                &shape,
                node,
                &fabric,
                &etcd,
                &services,
                &plugins,
                dir.path(),
            );
            Member::start(&fabric, node, &home, config)
        })
        .collect();
    let world = World {
        fabric,
        etcd,
        services,
        members,
        shape,
        dir,
        plugins,
        _turn: turn,
    };
    world.wait_all_checked(shape.targets, Duration::from_secs(60));
    world
}

/// The directory and config of member `node` of a fleet shaped `shape`.
fn member_config(
    shape: &Shape,
    node: &str,
    fabric: &Fabric,
    etcd: &Etcd,
    services: &Services,
    plugins: &tempfile::TempDir,
    dir: &Path,
) -> (std::path::PathBuf, String) {
    let etcd_urls: Vec<String> = etcd
        .urls(fabric)
        .iter()
        .map(|url| format!("{url:?}"))
        .collect();
    let home = dir.join(node);
    std::fs::create_dir_all(&home).expect("member dir");
    // The API listens on the fabric, beyond loopback: a token.
    let token = home.join("token");
    std::fs::write(&token, TOKEN).expect("token");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("token mode");
    let mut config = format!(
        "[healer]\ninterval = \"{interval}\"\nbackoff = \"200ms\"\nbackoff_max = \"1s\"\ngrace = \"100ms\"\nstable_after = \"1s\"\nmax_attempts = 5\nrecovery_timeout = \"6s\"\n\
         plugins_dir = \"{plugins}\"\nlog_file = \"healer.log\"\nevent_log = \"events.jsonl\"\n\
         state_dir = \"state\"\nlog_level = \"info\"\n\
         [intake]\nbind = \"{addr}:8000\"\ntoken_file = \"token\"\ncooldown = \"1s\"\n\
         [fleet]\netcd = [{etcd}]\nmember = \"{node}\"\nlease = \"{ttl}s\"\nadvertise = \"http://{addr}:8000\"\n",
        interval = shape.interval,
        plugins = plugins.path().display(),
        addr = fabric.addr(node),
        etcd = etcd_urls.join(", "),
        ttl = shape.lease.as_secs(),
    );
    for i in 0..shape.targets {
        config.push_str(&format!(
            "\n[[target]]\nname = \"t{i}\"\nfleet = true\n{extra}\
             monitor = {{ plugin = \"http\", url = \"{svc}/t/t{i}\", timeout = \"400ms\" }}\n\
             [[target.diagnose]]\nplugin = \"http\"\n\
             [[target.recover]]\nplugin = \"webhook\"\non = [\"http.status_5xx\"]\n\
             url = \"{svc}/recover/t{i}\"\ntimeout = \"5500ms\"\nretries = 0\n",
            extra = shape.extra,
            svc = services.url,
        ));
    }
    config.push_str(&(shape.tail)(&home, &services.url));
    (home, config)
}

impl World {
    /// Starts another member, on `node` of the fabric.
    fn add_member(&mut self, node: &str) {
        let (home, config) = member_config(
            &self.shape,
            node,
            &self.fabric,
            &self.etcd,
            &self.services,
            &self.plugins,
            self.dir.path(),
        );
        self.members
            .push(Member::start(&self.fabric, node, &home, config));
    }

    /// Waits until every target was checked in the latest second.
    fn wait_all_checked(&self, targets: usize, limit: Duration) {
        within("every fleet target is checked", limit, || {
            let since = monotonic_ns() - 1_000_000_000;
            let checked: HashSet<String> = self
                .services
                .checks()
                .into_iter()
                .filter(|(ns, _, _)| *ns > since)
                .map(|(_, _, name)| name)
                .collect();
            checked.len() == targets
        });
    }

    /// The member that checked `target` last, and when.
    fn checker_of(&self, target: &str) -> Option<(String, u128)> {
        self.services
            .checks()
            .into_iter()
            .rev()
            .find(|(_, _, name)| name == target)
            .map(|(ns, peer, _)| (self.fabric.node_of(&peer).unwrap_or("?").to_owned(), ns))
    }

    /// The targets (of `t0` to `t{targets-1}`) `member` checked last.
    fn checked_by(&self, member: &str, targets: usize) -> Vec<String> {
        (0..targets)
            .map(|i| format!("t{i}"))
            .filter(|t| self.checker_of(t).is_some_and(|(m, _)| m == member))
            .collect()
    }

    fn member(&mut self, node: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.node == node)
            .expect("a member")
    }

    /// Every (target, episode, attempt) that reached the service more
    /// than once.
    fn duplicates(&self) -> Vec<((String, String, u64), usize)> {
        let mut seen: BTreeMap<(String, String, u64), usize> = BTreeMap::new();
        for r in self.services.recoveries() {
            *seen.entry((r.target, r.episode, r.attempt)).or_default() += 1;
        }
        seen.into_iter().filter(|(_, n)| *n > 1).collect()
    }

    /// Waits until no member has taken or lost a shard for 3 s: every
    /// member holds its share (a member over it hands one back every 2 s).
    fn settle(&self) {
        let quiet_since = || {
            self.members
                .iter()
                .flat_map(Member::records)
                .filter(|r| {
                    matches!(
                        r.event,
                        Event::FleetShardTaken { .. } | Event::FleetShardLost { .. }
                    )
                })
                .map(|r| r.at)
                .max()
        };
        within(
            "the shards are settled for 3 s",
            Duration::from_secs(90),
            || {
                quiet_since()
                    .is_some_and(|at| healer::clock::Wall::now().since(at) > Duration::from_secs(3))
            },
        );
    }

    /// Waits (at most `limit`) until every one of `targets` was checked
    /// after `since` by a member other than `gone`: how long that took.
    fn taken_over(
        &self,
        what: &str,
        targets: &[String],
        gone: &str,
        since: u128,
        limit: Duration,
    ) -> Duration {
        let started = std::time::Instant::now();
        within(what, limit, || {
            let checks = self.services.checks();
            targets.iter().all(|t| {
                checks.iter().any(|(ns, peer, name)| {
                    *ns > since && name == t && self.fabric.node_of(peer) != Some(gone)
                })
            })
        });
        started.elapsed()
    }

    /// Nothing happened twice: no (target, episode, attempt) recovered
    /// twice, no two recoveries of a target at once, and no two members
    /// checking one of the `targets` at once (at 500 ms).
    fn assert_nothing_twice(&self, targets: usize) {
        assert_eq!(self.duplicates(), vec![], "a recovery ran twice");
        assert_eq!(
            self.services.overlapping_recoveries(),
            vec![],
            "two recoveries of one target ran at once"
        );
        assert_eq!(
            self.double_owned(targets, Duration::from_millis(500)),
            Duration::ZERO
        );
    }

    /// The double-owned time of all targets: spans of two members checking
    /// the same target that overlap.
    fn double_owned(&self, targets: usize, interval: Duration) -> Duration {
        let checks = self.services.checks();
        (0..targets)
            .map(|i| overlap(&spans(&checks, &format!("t{i}"), interval)))
            .sum()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn each_fleet_target_is_checked_by_exactly_one_member_at_a_time() {
    let world = world(Shape {
        targets: 60,
        interval: "1s",
        ..Shape::default()
    });
    world.settle();
    let from = monotonic_ns();
    std::thread::sleep(Duration::from_secs(10));
    let to = monotonic_ns();
    let mut per_target: HashMap<String, Vec<String>> = HashMap::new();
    for (ns, peer, name) in world.services.checks() {
        if ns >= from && ns < to {
            per_target.entry(name).or_default().push(peer);
        }
    }
    assert_eq!(
        per_target.len(),
        60,
        "every target was checked in the window"
    );
    let mut by_member: BTreeMap<String, usize> = BTreeMap::new();
    for (target, checkers) in &per_target {
        let distinct: HashSet<&String> = checkers.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{target} was checked by {distinct:?} in the same 10 s"
        );
        // One check per interval (10 in 10 s, give or take the grid's
        // edges), not one per member.
        assert!(
            (9..=11).contains(&checkers.len()),
            "{target}: {} checks in 10 s at 1 s",
            checkers.len()
        );
        *by_member
            .entry(world.fabric.node_of(&checkers[0]).unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        by_member.len(),
        3,
        "every member checks some: {by_member:?}"
    );
    eprintln!("targets checked per member: {by_member:?}");
    // What each member says it owns is what it checks.
    let mut listed = 0;
    let (mut owned_in_all, mut shards_needed) = (0, 0);
    for member in &world.members {
        let (_, out) = member.ask(&world.fabric, &["status", "--json"]);
        let status: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
        let targets = status.as_array().expect("targets");
        listed += targets.len();
        let fleet = member.fleet(&world.fabric);
        assert_eq!(fleet["member"], member.node.as_str());
        assert_eq!(fleet["members"].as_array().map(Vec::len), Some(3));
        let shards: usize = fleet["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .map(|s| s["targets"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(shards, targets.len(), "{}: {fleet}", member.node);
        assert_eq!(
            by_member.get(&member.node).copied().unwrap_or(0),
            targets.len()
        );
        // And what its metrics say.
        let url = format!("http://{}:8000/metrics", world.fabric.addr(&member.node));
        let (status, text) = world.fabric.get(&member.node, &url, Some(TOKEN));
        assert_eq!(status, 200, "{url}: {text}");
        let owned = fleet["shards"].as_array().map_or(0, Vec::len);
        for line in [
            "healer_fleet_in_touch 1".to_owned(),
            "healer_fleet_members 3".to_owned(),
            "healer_fleet_shards_unowned 0".to_owned(),
            format!("healer_fleet_shards_owned {owned}"),
            format!("healer_fleet_shards_needed {}", fleet["shards_needed"]),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{}: {line} in:\n{text}",
                member.node
            );
        }
        owned_in_all += owned;
        shards_needed = fleet["shards_needed"].as_u64().unwrap_or(0) as usize;
    }
    assert_eq!(listed, 60, "each target listed by exactly one member");
    assert_eq!(
        owned_in_all, shards_needed,
        "each shard owned by one member"
    );
}

#[test]
fn a_killed_owners_targets_are_taken_over_within_two_leases_and_no_recovery_runs_twice() {
    let targets = 30;
    let mut world = world(Shape::default());
    let mut failovers = Vec::new();
    let mut downed = HashSet::new();
    for run in 0..20 {
        // A target and its owner; three of the owner's targets go down
        // just before it dies, so recoveries are in flight.
        let (victim, _) = world
            .checker_of(&format!("t{}", run % targets))
            .expect("checked");
        let theirs: Vec<String> = world
            .checked_by(&victim, targets)
            .into_iter()
            .take(3)
            .collect();
        for target in &theirs {
            world.services.take_down(target, &format!("run{run}"));
            downed.insert((target.clone(), format!("run{run}")));
        }
        std::thread::sleep(Duration::from_millis(150 * (run % 4) as u64));
        let killed_at = monotonic_ns();
        world.member(&victim).kill();
        let watched = theirs[0].clone();
        let services = &world.services;
        let fabric = &world.fabric;
        let took = within(
            "another member checks the killed owner's target",
            TTL * 4,
            || {
                services.checks().iter().any(|(ns, peer, name)| {
                    *ns > killed_at
                        && *name == watched
                        && fabric.node_of(peer) != Some(victim.as_str())
                })
            },
        );
        failovers.push(took);
        // Every target of the run is healed by someone.
        within("the run's targets are recovered", TTL * 5, || {
            theirs.iter().all(|t| !services.is_down(t))
        });
        let World {
            fabric, members, ..
        } = &mut world;
        let member = members
            .iter_mut()
            .find(|m| m.node == victim)
            .expect("member");
        member.restart(fabric);
    }
    failovers.sort();
    let (p50, max) = (percentile(&failovers, 0.5), failovers[failovers.len() - 1]);
    eprintln!("failover (kill -9 to the first check by another member), 20 runs: p50 {p50:?}, max {max:?}, all {failovers:?}");
    assert!(
        max < TTL * 2,
        "failover took {max:?}, more than 2x the lease"
    );
    assert_eq!(world.duplicates(), vec![], "a recovery ran twice");
    assert_eq!(world.services.overlapping_recoveries(), vec![]);
    let recovered = world.services.recoveries();
    let episodes: HashSet<(String, String)> = recovered
        .iter()
        .map(|r| (r.target.clone(), r.episode.clone()))
        .collect();
    assert_eq!(episodes, downed, "every episode was recovered");
    assert!(
        recovered.iter().all(|r| r.accepted && r.fence > 0),
        "{recovered:?}"
    );
    eprintln!("{} episodes, {} recoveries", downed.len(), recovered.len());
    assert_eq!(
        world.double_owned(targets, Duration::from_millis(500)),
        Duration::ZERO
    );
}

#[test]
fn an_owner_stopped_past_its_lease_acts_on_nothing_after_waking() {
    let targets = 30;
    let mut world = world(Shape::default());
    let (sleeper, _) = world.checker_of("t0").expect("checked");
    let theirs = world.checked_by(&sleeper, targets);
    let address = world.fabric.addr(&sleeper);
    // A recovery of its in flight when it stops: slow (4.5 s, under the
    // webhook's 5.5 s and the 6 s recovery_timeout), so it is still
    // running at the service when another member takes the shard over
    // (about 2.5 s later), which must not start another.
    world.services.slow_recoveries(Some(4_500));
    world.services.take_down(&theirs[0], "in-flight");
    let services = &world.services;
    within(
        "the owner's recovery reaches the service",
        Duration::from_secs(10),
        || {
            services
                .begun()
                .iter()
                .any(|(_, peer, name)| *peer == address && *name == theirs[0])
        },
    );
    let pid = world.member(&sleeper).pid().expect("running");
    signal(pid, "STOP");
    let stopped_at = monotonic_ns();
    // Down while it sleeps: another member must heal them.
    for target in theirs.iter().skip(1).take(2) {
        world.services.take_down(target, "asleep");
    }
    std::thread::sleep(TTL * 2);
    signal(pid, "CONT");
    let woke_at = monotonic_ns();
    std::thread::sleep(Duration::from_secs(3));
    let address = world.fabric.addr(&sleeper);
    // Whatever it checks from 1 s after waking on is under shards it
    // took anew (a member that joins waits SETTLE, 1 s, before taking
    // any); the double-owned time below covers those.
    let after: Vec<_> = world
        .services
        .checks()
        .into_iter()
        .filter(|(ns, peer, name)| {
            *ns > woke_at
                && *ns < woke_at + 1_000_000_000
                && *peer == address
                && theirs.contains(name)
        })
        .collect();
    assert_eq!(
        after,
        vec![],
        "the stopped owner checked its old targets after waking"
    );
    let recovered = world.services.recoveries();
    assert!(
        recovered.iter().all(|r| r.peer != address
            || r.began < stopped_at
            || r.began > woke_at + 1_000_000_000),
        "the stopped owner recovered on its old claims after waking: {recovered:?}"
    );
    let services = &world.services;
    within(
        "every downed target is healed",
        Duration::from_secs(15),
        || theirs.iter().take(3).all(|t| !services.is_down(t)),
    );
    assert_eq!(
        world.services.overlapping_recoveries(),
        vec![],
        "two recoveries of one target ran at once"
    );
    assert_eq!(world.duplicates(), vec![]);
    assert_eq!(
        world.double_owned(targets, Duration::from_millis(500)),
        Duration::ZERO
    );
    // It says why it stopped, and joins again.
    let member = world.member(&sleeper);
    let said = member
        .records()
        .iter()
        .any(|r| matches!(&r.event, Event::FleetShardLost { .. }));
    assert!(said, "fleet_shard_lost was said");
}

/// The gaps in the checks of every target between `from` and `to`: the
/// longest, over all targets (the edges count as checks).
fn longest_gap(world: &World, targets: usize, from: u128, to: u128) -> Duration {
    let checks = world.services.checks();
    (0..targets)
        .map(|i| {
            let name = format!("t{i}");
            let mut times: Vec<u128> = checks
                .iter()
                .filter(|(ns, _, n)| *n == name && *ns > from && *ns < to)
                .map(|(ns, _, _)| *ns)
                .collect();
            times.insert(0, from);
            times.push(to);
            times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
        })
        .map(|ns| Duration::from_nanos(ns as u64))
        .max()
        .unwrap_or_default()
}

#[test]
fn losing_the_etcd_leader_alone_or_with_an_owner_keeps_the_bounds() {
    let targets = 30;
    // etcd's own default lease: a new leader extends every lease by its
    // TTL plus an election timeout (lessor Promote), a fixed cost of
    // seconds that a 2 s lease cannot absorb within two leases.
    let ttl = Duration::from_secs(5);
    let mut world = world(Shape {
        lease: ttl,
        ..Shape::default()
    });
    // The leader alone: every target goes on being checked, by someone,
    // with no gap longer than two leases.
    let leader = world.etcd.leader(&world.fabric);
    let from = monotonic_ns();
    world.etcd.kill(&leader);
    std::thread::sleep(Duration::from_secs(6));
    let gap = longest_gap(&world, targets, from, monotonic_ns());
    eprintln!(
        "etcd leader {leader} killed: the longest gap between two checks of a target: {gap:?}"
    );
    assert!(gap < ttl * 2, "a target went unchecked for {gap:?}");
    world.etcd.restart(&world.fabric, &leader);
    world.wait_all_checked(targets, Duration::from_secs(30));
    // The new leader and an owner at once: its targets are taken over.
    std::thread::sleep(Duration::from_secs(2));
    let leader = world.etcd.leader(&world.fabric);
    let (victim, _) = world.checker_of("t0").expect("checked");
    let theirs = world.checked_by(&victim, targets);
    for target in theirs.iter().take(3) {
        world.services.take_down(target, "leader-and-owner");
    }
    let killed_at = monotonic_ns();
    world.etcd.kill(&leader);
    world.member(&victim).kill();
    let took = world.taken_over(
        "the owner's targets are checked by another member",
        &theirs,
        &victim,
        killed_at,
        ttl * 3,
    );
    let services = &world.services;
    eprintln!("etcd leader {leader} and owner {victim} killed: all {} of its targets checked by another member after {took:?}", theirs.len());
    within("the downed targets are recovered", ttl * 2, || {
        theirs.iter().take(3).all(|t| !services.is_down(t))
    });
    assert!(
        took < ttl * 2,
        "failover with the leader lost took {took:?}"
    );
    world.assert_nothing_twice(targets);
}

#[test]
fn an_owner_cut_off_from_etcd_stops_checking_before_another_member_takes_over() {
    let targets = 30;
    let mut world = world(Shape::default());
    world.settle();
    let (cut, _) = world.checker_of("t0").expect("checked");
    let theirs = world.checked_by(&cut, targets);
    let address = world.fabric.addr(&cut);
    // It still reaches the services, so every check it makes after the
    // cut is on the record: it must stop before anyone else begins.
    for target in theirs.iter().take(2) {
        world.services.take_down(target, "cut");
    }
    let cut_at = monotonic_ns();
    let cut_wall = healer::clock::Wall::now();
    for node in world.etcd.nodes.clone() {
        world.fabric.block(&cut, &node, true);
    }
    let took = world.taken_over(
        "another member checks every target of the owner cut off from etcd",
        &theirs,
        &cut,
        cut_at,
        TTL * 4,
    );
    std::thread::sleep((TTL * 3).saturating_sub(took));
    let checks = world.services.checks();
    let last_by_cut = checks
        .iter()
        .filter(|(ns, peer, name)| *ns > cut_at && *peer == address && theirs.contains(name))
        .map(|(ns, _, _)| *ns)
        .max();
    let first_by_others = checks
        .iter()
        .filter(|(ns, peer, name)| *ns > cut_at && *peer != address && theirs.contains(name))
        .map(|(ns, _, _)| *ns)
        .min()
        .expect("taken over");
    let stopped = last_by_cut.map_or(Duration::ZERO, |ns| {
        Duration::from_nanos((ns - cut_at) as u64)
    });
    eprintln!(
        "owner {cut} cut off from etcd: its last check {stopped:?} after the cut, \
         the first by another member {:?} after, all {} of its targets {took:?} after",
        Duration::from_nanos((first_by_others - cut_at) as u64),
        theirs.len()
    );
    assert!(
        last_by_cut.is_none_or(|last| last < first_by_others),
        "the owner cut off from etcd checked after another member took over"
    );
    assert!(took < TTL * 2, "failover took {took:?}");
    // It claims nothing while cut off: every recovery is someone else's.
    let recovered = world.services.recoveries();
    assert!(
        recovered
            .iter()
            .all(|r| r.peer != address || r.began < cut_at),
        "the owner cut off from etcd recovered: {recovered:?}"
    );
    let services = &world.services;
    within("the downed targets are recovered", TTL * 3, || {
        theirs.iter().take(2).all(|t| !services.is_down(t))
    });
    // Back in touch: it joins again and takes its share.
    let healed = healer::clock::Wall::now();
    for node in world.etcd.nodes.clone() {
        world.fabric.block(&cut, &node, false);
    }
    let member = world.member(&cut);
    let said_lost = member
        .records()
        .iter()
        .any(|r| r.at >= cut_wall && matches!(&r.event, Event::FleetCoordinationLost { .. }));
    assert!(said_lost, "{cut} said fleet_coordination_lost");
    within("the member joins again and owns shards", TTL * 5, || {
        member
            .records()
            .iter()
            .any(|r| r.at >= healed && matches!(&r.event, Event::FleetShardTaken { .. }))
    });
    world.wait_all_checked(targets, Duration::from_secs(10));
    world.assert_nothing_twice(targets);
}

#[test]
fn a_member_added_and_one_removed_leave_no_target_unchecked_or_checked_twice() {
    let targets = 30;
    let mut world = world(Shape::default());
    let from = monotonic_ns();
    // h4 joins: it takes a share of unowned shards only, as the others
    // hand back their surplus one every 2 s.
    world.add_member("h4");
    let h4 = world.fabric.addr("h4");
    let services = &world.services;
    let took = within(
        "the new member checks targets",
        Duration::from_secs(30),
        || {
            services
                .checks()
                .iter()
                .filter(|(ns, peer, _)| *ns > from && *peer == h4)
                .map(|(_, _, name)| name)
                .collect::<HashSet<_>>()
                .len()
                >= 2
        },
    );
    // Its share: the others hand back what they hold beyond theirs plus
    // one (a lazy balance: nothing moves that need not).
    std::thread::sleep(RELEASE_EVERY * 2);
    eprintln!(
        "h4 joined: checks targets after {took:?}, {} of them 4 s later",
        world.checked_by("h4", targets).len()
    );
    // h2 leaves as an operator stops it: its shards are free at once.
    let (victim, _) = world.checker_of("t0").expect("checked");
    let victim = if victim == "h4" {
        "h2".to_owned()
    } else {
        victim
    };
    let theirs = world.checked_by(&victim, targets);
    for target in theirs.iter().take(2) {
        world.services.take_down(target, "leaving");
    }
    let stopped_at = monotonic_ns();
    assert!(world.member(&victim).stop(), "{victim} stopped in time");
    let took = world.taken_over(
        "the targets of the member stopped are checked by others",
        &theirs,
        &victim,
        stopped_at,
        TTL * 4,
    );
    let services = &world.services;
    eprintln!(
        "{victim} stopped: all {} of its targets checked by others after {took:?}",
        theirs.len()
    );
    within("the downed targets are recovered", TTL * 3, || {
        theirs.iter().take(2).all(|t| !services.is_down(t))
    });
    std::thread::sleep(Duration::from_secs(3));
    let gap = longest_gap(&world, targets, from, monotonic_ns());
    eprintln!(
        "a member added and one removed: the longest gap between two checks of a target: {gap:?}"
    );
    assert!(gap < TTL, "a target went unchecked for {gap:?}");
    world.assert_nothing_twice(targets);
}

#[test]
fn an_etcd_member_cut_off_the_fabric_is_routed_around_and_nothing_moves() {
    let targets = 30;
    let ttl = Duration::from_secs(5);
    let world = world(Shape {
        lease: ttl,
        ..Shape::default()
    });
    world.settle();
    // The etcd member h1 talks to (whichever its role), cut off silently:
    // h1 must find another.
    let fleet = world.members[0].fleet(&world.fabric);
    let endpoint = fleet["etcd"]
        .as_str()
        .expect("the endpoint in use")
        .to_owned();
    let host = endpoint
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap_or_default();
    let cut = world
        .fabric
        .node_of(host)
        .expect("an etcd member's address")
        .to_owned();
    let leader = world.etcd.leader(&world.fabric);
    let cut_at = healer::clock::Wall::now();
    let from = monotonic_ns();
    world.fabric.attach(&cut, false);
    // While it is cut off, a target of h1's goes down: its recovery needs
    // a claim in etcd, so h1 must be talking to another member.
    std::thread::sleep(ttl);
    let theirs = world.checked_by("h1", targets);
    world.services.take_down(&theirs[0], "etcd-cut");
    let services = &world.services;
    within("h1's downed target is recovered", ttl, || {
        !services.is_down(&theirs[0])
    });
    std::thread::sleep(ttl.saturating_sub(Duration::from_secs(1)));
    let gap = longest_gap(&world, targets, from, monotonic_ns());
    let fleet = world.members[0].fleet(&world.fabric);
    world.fabric.attach(&cut, true);
    eprintln!(
        "etcd member {cut} ({}) cut off for 2 leases: h1 moved from {endpoint} to {}; the longest gap between two checks of a target: {gap:?}",
        if cut == leader { "the leader" } else { "a follower" },
        fleet["etcd"]
    );
    assert_eq!(fleet["coordinated"], true, "h1 in touch: {fleet}");
    assert_ne!(fleet["etcd"].as_str(), Some(endpoint.as_str()), "{fleet}");
    let recovered = world.services.recoveries();
    let h1 = world.fabric.addr("h1");
    assert!(
        recovered
            .iter()
            .any(|r| r.target == theirs[0] && r.episode == "etcd-cut" && r.peer == h1),
        "h1 claimed and recovered its target: {recovered:?}"
    );
    // Nobody lost touch, no shard moved.
    for member in &world.members {
        let moved: Vec<_> = member
            .records()
            .into_iter()
            .filter(|r| {
                r.at >= cut_at
                    && matches!(
                        &r.event,
                        Event::FleetCoordinationLost { .. } | Event::FleetShardLost { .. }
                    )
            })
            .collect();
        assert_eq!(moved, vec![], "{} while {cut} was cut off", member.node);
    }
    assert!(
        gap < Duration::from_secs(1),
        "a target went unchecked for {gap:?}"
    );
    world.assert_nothing_twice(targets);
}

#[test]
fn without_etcd_no_fleet_target_is_acted_on_local_targets_heal_and_it_resumes() {
    let targets = 10;
    let mut world = world(Shape {
        targets,
        tail: |home, services| {
            format!(
                "{}\n[[alert]]\ntype = \"webhook\"\nurl = \"{services}/alert\"\n",
                supervised_target(home, 600)
            )
        },
        ..Shape::default()
    });
    let h1 = world.members[0].config.with_file_name("service.pid");
    wait_until("h1's local service runs", Duration::from_secs(20), || {
        read_pid(&h1)
    });
    world.etcd.stop_all();
    let stopped_at = monotonic_ns();
    // Down while etcd is: nobody may recover it.
    world.services.take_down("t0", "no-etcd");
    std::thread::sleep(TTL * 2);
    let quiet_from = monotonic_ns();
    // The local service of h1 dies and is healed all the same.
    let pid = read_pid(&h1).expect("pid");
    signal(pid, "KILL");
    wait_until(
        "h1 restarts its local service",
        Duration::from_secs(20),
        || read_pid(&h1).filter(|new| *new != pid && is_alive(*new)),
    );
    std::thread::sleep(TTL);
    let checked: Vec<_> = world
        .services
        .checks()
        .into_iter()
        .filter(|(ns, _, _)| *ns > quiet_from)
        .collect();
    assert_eq!(checked, vec![], "fleet targets were checked without etcd");
    let recovered: Vec<Recovered> = world
        .services
        .recoveries()
        .into_iter()
        .filter(|r| r.ns > stopped_at)
        .collect();
    assert_eq!(
        recovered,
        vec![],
        "a fleet target was recovered without etcd"
    );
    assert!(world.services.is_down("t0"));
    for member in &world.members {
        let said = member.records().iter().any(|r| {
            matches!(&r.event, Event::FleetCoordinationLost { member: m, .. } if *m == member.node)
        });
        assert!(said, "{} said it lost touch with etcd", member.node);
        let (ok, out) = member.ask(&world.fabric, &["fleet"]);
        assert!(
            !ok && out.contains("OUT OF TOUCH"),
            "{}: {out}",
            member.node
        );
    }
    let alerts = world.services.alerts();
    assert!(
        alerts
            .iter()
            .filter(|(_, body)| body.contains("fleet.coordination_lost"))
            .count()
            >= 3,
        "each member's alert: {alerts:?}"
    );
    // etcd back: the members join again, take the shards, heal t0.
    world.etcd.start_all(&world.fabric);
    let back_at = monotonic_ns();
    let services = &world.services;
    within(
        "fleet targets are checked again",
        Duration::from_secs(20),
        || {
            services
                .checks()
                .iter()
                .filter(|(ns, _, _)| *ns > back_at)
                .map(|(_, _, n)| n)
                .collect::<HashSet<_>>()
                .len()
                == targets
        },
    );
    within(
        "t0 is recovered once etcd is back",
        Duration::from_secs(20),
        || !services.is_down("t0"),
    );
    assert_eq!(world.duplicates(), vec![]);
}

/// Alertmanager 0.25 (Debian's), one of an HA pair on `node`, sending
/// every alert to all three healers.
fn alertmanager(world: &World, node: &str, peer: &str) -> Owned {
    let dir = world.dir.path().join(node);
    std::fs::create_dir_all(&dir).expect("am dir");
    let webhooks: String = HEALERS
        .iter()
        .map(|h| {
            format!(
                "      - url: http://{}:8000/alertmanager\n        send_resolved: true\n        http_config:\n          authorization:\n            credentials: {TOKEN}\n",
                world.fabric.addr(h)
            )
        })
        .collect();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: healer\n  group_by: ['alertname']\n  group_wait: 100ms\n  group_interval: 1s\n  repeat_interval: 2s\n\
             receivers:\n  - name: healer\n    webhook_configs:\n{webhooks}"
        ),
    )
    .expect("am config");
    let addr = world.fabric.addr(node);
    let log = std::fs::File::create(dir.join("alertmanager.log")).expect("am log");
    let child = world
        .fabric
        .command(node, "/usr/bin/prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}:9093"))
        .arg(format!("--cluster.listen-address={addr}:9094"))
        .arg(format!("--cluster.peer={}:9094", world.fabric.addr(peer)))
        // Both send at once, as a pair does across a partition.
        .arg("--cluster.peer-timeout=50ms")
        .arg("--cluster.settle-timeout=1s")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("Alertmanager (Debian's prometheus-alertmanager) starts");
    Owned(child)
}

#[test]
fn an_alertmanager_pair_sending_to_every_member_runs_each_workflow_once_per_episode() {
    let world = world(Shape {
        targets: 3,
        tail: |_, services| {
            ["FleetA", "FleetB"]
                .iter()
                .map(|name| {
                    format!(
                        "\n[[reflex]]\nmatch = \"{name}\"\nworkflow = \"{name}\"\n\
                         [workflow.{name}]\nsteps = [{{ plugin = \"webhook\", url = \"{services}/recover/{name}\", retries = 0 }}]\n"
                    )
                })
                .collect()
        },
        ..Shape::default()
    });
    let _am1 = alertmanager(&world, "am1", "am2");
    let _am2 = alertmanager(&world, "am2", "am1");
    let fire = |name: &str, starts_at: &str, ends_at: Option<&str>| {
        let ends = ends_at.map_or(String::new(), |at| format!(", \"endsAt\": \"{at}\""));
        let alerts = format!(
            "[{{\"labels\": {{\"alertname\": \"{name}\", \"instance\": \"remote:9100\"}}, \"startsAt\": \"{starts_at}\"{ends}}}]"
        );
        // Prometheus sends every alert to each Alertmanager of the pair.
        for am in ["am1", "am2"] {
            let url = format!("http://{}:9093/api/v2/alerts", world.fabric.addr(am));
            within(
                "an Alertmanager takes the alert",
                Duration::from_secs(20),
                || world.fabric.post("svc", &url, &alerts, None).0 == 200,
            );
        }
    };
    let runs = |name: &str| -> Vec<Recovered> {
        world
            .services
            .recoveries()
            .into_iter()
            .filter(|r| r.target == name)
            .collect()
    };
    fire("FleetA", "2026-12-07T08:00:00Z", None);
    fire("FleetB", "2026-12-07T08:00:00Z", None);
    within("both workflows ran", Duration::from_secs(30), || {
        !runs("FleetA").is_empty() && !runs("FleetB").is_empty()
    });
    // Both Alertmanagers deliver to all three, and again every 2 s
    // (repeat_interval).
    std::thread::sleep(Duration::from_secs(6));
    // A replayer sends each payload 3 times to each member.
    let received = world
        .members
        .iter()
        .flat_map(Member::records)
        .find_map(|r| match r.event {
            Event::AlertReceived {
                alertname,
                fingerprint,
                starts_at,
                ..
            } if alertname == "FleetA" => Some((fingerprint, starts_at)),
            _ => None,
        })
        .expect("a member received FleetA");
    let payload = format!(
        "{{\"version\": \"4\", \"receiver\": \"healer\", \"status\": \"firing\", \"alerts\": [{{\"status\": \"firing\", \"labels\": {{\"alertname\": \"FleetA\", \"instance\": \"remote:9100\"}}, \"startsAt\": \"{}\", \"fingerprint\": \"{}\"}}]}}",
        received.1, received.0
    );
    for _ in 0..3 {
        for member in HEALERS {
            let url = format!("http://{}:8000/alertmanager", world.fabric.addr(member));
            let (status, answer) = world.fabric.post("svc", &url, &payload, Some(TOKEN));
            assert_eq!(status, 200, "{member}: {answer}");
            assert!(answer.contains("\"duplicates\":1"), "{member}: {answer}");
        }
    }
    // A new episode of FleetA (resolved, then firing again) runs once more.
    fire(
        "FleetA",
        "2026-12-07T08:00:00Z",
        Some("2026-12-07T08:00:01Z"),
    );
    std::thread::sleep(Duration::from_secs(3));
    fire("FleetA", "2026-12-07T08:05:00Z", None);
    within("the second episode ran", Duration::from_secs(30), || {
        runs("FleetA").len() >= 2
    });
    std::thread::sleep(Duration::from_secs(5));
    let mut delivered = BTreeMap::new();
    for member in &world.members {
        for record in member.records() {
            if let Event::AlertReceived { duplicate, .. } = record.event {
                *delivered
                    .entry((member.node.clone(), duplicate))
                    .or_insert(0) += 1;
            }
        }
    }
    let (a, b) = (runs("FleetA"), runs("FleetB"));
    eprintln!(
        "alerts received (member, duplicate): {delivered:?}; runs: FleetA {}, FleetB {}",
        a.len(),
        b.len()
    );
    for member in HEALERS {
        let duplicates = delivered
            .get(&(member.to_owned(), true))
            .copied()
            .unwrap_or(0);
        assert!(
            duplicates >= 3,
            "{member} was sent duplicates: {delivered:?}"
        );
    }
    let episodes: Vec<&str> = a.iter().map(|r| r.episode.as_str()).collect();
    assert_eq!(
        episodes,
        ["2026-12-07T08:00:00Z", "2026-12-07T08:05:00Z"],
        "FleetA ran once per episode: {a:?}"
    );
    assert_eq!(b.len(), 1, "FleetB ran once: {b:?}");
}

#[test]
fn a_target_unreachable_only_from_its_owner_is_unknown_and_one_unreachable_from_all_is_recovered_once(
) {
    let targets = 6;
    let mut world = world(Shape {
        targets,
        extra: "confirm = 2\n",
        ..Shape::default()
    });
    let (owner, _) = world.checker_of("t0").expect("checked");
    // From the owner's namespace alone the services cannot be reached.
    world.fabric.block(&owner, "svc", true);
    let member = world.member(&owner);
    // The owner's own check says CRITICAL; what it decides is an UNKNOWN
    // issue naming every member's view.
    let unknown = |member: &Member| {
        member.records().into_iter().find_map(|r| match r.event {
            Event::IssueOpened { target, issue }
                if target == "t0" && issue.severity == healer_plugin_sdk::Status::Unknown =>
            {
                Some(issue.summary)
            }
            _ => None,
        })
    };
    let said = wait_until(
        "the owner says t0 is UNKNOWN",
        Duration::from_secs(20),
        || unknown(member),
    );
    eprintln!("t0 from {owner} alone: {said}");
    assert!(said.contains("not confirmed by the fleet"), "{said}");
    assert!(
        said.contains(&format!("{owner} (owner) sees CRITICAL")),
        "{said}"
    );
    let others: Vec<&str> = HEALERS.iter().copied().filter(|h| *h != owner).collect();
    for other in &others {
        assert!(said.contains(&format!("{other} sees OK")), "{said}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let member = world.member(&owner);
    let attempted = member
        .records()
        .iter()
        .any(|r| matches!(&r.event, Event::AttemptStarted { target, .. } if target == "t0"));
    assert!(!attempted, "t0 was recovered on the owner's word alone");
    world.fabric.block(&owner, "svc", false);
    // Down for everyone: the owner and both others agree, and it is
    // recovered once.
    std::thread::sleep(Duration::from_secs(2));
    world.services.take_down("t0", "everywhere");
    let services = &world.services;
    within("t0 is recovered", Duration::from_secs(20), || {
        !services.is_down("t0")
    });
    std::thread::sleep(Duration::from_secs(2));
    let runs: Vec<Recovered> = services
        .recoveries()
        .into_iter()
        .filter(|r| r.target == "t0")
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].episode, "everywhere");
}
