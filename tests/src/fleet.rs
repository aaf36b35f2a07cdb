//! The fleet's test harness (`../shared/FLEET.md` §7): network namespaces
//! on a bridge the test makes (no link to the host: loopback and the
//! test's own addresses only), a real 3-member etcd cluster, the services
//! the fleet watches (`fleet-service`, one process, one monotonic clock)
//! and healers, each in its own namespace, started with `nsenter` (which
//! execs, so a pid is the program's own: kill -9 and SIGSTOP reach it).
//!
//! Everything is torn down when dropped: processes killed, namespaces
//! deleted (their veths with them). Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{healer_bin, wait_until};

/// The subnet of every fabric (each its own bridge, so fabrics of tests
/// running at once never meet).
const SUBNET: &str = "10.201.0";

/// Namespaces on a bridge of their own.
pub struct Fabric {
    tag: String,
    nodes: Vec<String>,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2) runs");
    assert!(status.success(), "ip {}: {status}", args.join(" "));
}

impl Fabric {
    /// Namespaces named after `nodes` (at most 200), each with one
    /// address on the fabric's bridge.
    pub fn new(nodes: &[&str]) -> Fabric {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "f{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let fabric = Fabric {
            tag: tag.clone(),
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
        };
        let fab = fabric.ns("fab");
        ip(&["netns", "add", &fab]);
        ip(&["-n", &fab, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &fab, "link", "set", "br0", "up"]);
        for (i, node) in nodes.iter().enumerate() {
            let ns = fabric.ns(node);
            let (inside, port) = (format!("{tag}v{i}"), format!("{tag}p{i}"));
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &inside, "type", "veth", "peer", "name", &port,
            ]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&["link", "set", &port, "netns", &fab]);
            ip(&["-n", &ns, "link", "set", &inside, "name", "eth0"]);
            let address = format!("{}/24", fabric.addr(node));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &fab, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &fab, "link", "set", &port, "up"]);
        }
        fabric
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.tag)
    }

    fn index(&self, node: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n == node)
            .unwrap_or_else(|| panic!("no node {node:?} on the fabric"))
    }

    /// `node`'s address.
    pub fn addr(&self, node: &str) -> String {
        format!("{SUBNET}.{}", self.index(node) + 1)
    }

    /// The node an address belongs to.
    pub fn node_of(&self, addr: &str) -> Option<&str> {
        let last: usize = addr.strip_prefix(&format!("{SUBNET}."))?.parse().ok()?;
        self.nodes.get(last.checked_sub(1)?).map(String::as_str)
    }

    /// `program` to run inside `node`'s namespace.
    pub fn command(&self, node: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.ns(node)))
            .arg("--")
            .arg(program);
        command
    }

    /// POSTs JSON `body` to `url` from inside `node` (with Python's
    /// urllib: the test's own process is on no fabric), with a bearer
    /// `token` when given: the answer's status and body.
    pub fn post(&self, node: &str, url: &str, body: &str, token: Option<&str>) -> (u16, String) {
        self.request(node, url, Some(body), token)
    }

    /// GETs `url` from inside `node`, as [`Fabric::post`] does.
    pub fn get(&self, node: &str, url: &str, token: Option<&str>) -> (u16, String) {
        self.request(node, url, None, token)
    }

    fn request(
        &self,
        node: &str,
        url: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, String) {
        const REQUEST: &str = r#"
import sys, urllib.request, urllib.error
url, method, body, token = sys.argv[1], sys.argv[2], sys.argv[3].encode(), sys.argv[4]
request = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers={"Content-Type": "application/json"})
if token:
    request.add_header("Authorization", "Bearer " + token)
try:
    with urllib.request.urlopen(request, timeout=5) as answer:
        print(answer.status); print(answer.read().decode())
except urllib.error.HTTPError as error:
    print(error.code); print(error.read().decode())
"#;
        let method = if body.is_some() { "POST" } else { "GET" };
        let output = self
            .command(node, "python3")
            .args([
                "-c",
                REQUEST,
                url,
                method,
                body.unwrap_or(""),
                token.unwrap_or(""),
            ])
            .output()
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (status, rest) = text.split_once('\n').unwrap_or((&text, ""));
        (
            status.trim().parse().unwrap_or(0),
            rest.to_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    }

    /// Cuts `node` off the fabric (packets to and from it dropped
    /// silently), or puts it back.
    pub fn attach(&self, node: &str, attached: bool) {
        let port = format!("{}p{}", self.tag, self.index(node));
        let fab = self.ns("fab");
        if attached {
            ip(&["-n", &fab, "link", "set", &port, "master", "br0"]);
        } else {
            ip(&["-n", &fab, "link", "set", &port, "nomaster"]);
        }
    }

    /// From `node`, `to` cannot be reached, or can again: `to`'s address
    /// is taken by `node`'s own loopback, where nothing listens, so every
    /// connection is refused there, as by a firewall that rejects.
    pub fn block(&self, node: &str, to: &str, blocked: bool) {
        let ns = self.ns(node);
        let host = format!("{}/32", self.addr(to));
        let verb = if blocked { "add" } else { "del" };
        ip(&["-n", &ns, "addr", verb, &host, "dev", "lo"]);
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for node in self.nodes.iter().map(String::as_str).chain(["fab"]) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(node)])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A child killed (and reaped) when dropped.
pub struct Owned(pub Child);

impl Owned {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real etcd cluster, one member per node given.
pub struct Etcd {
    pub nodes: Vec<String>,
    members: Vec<Option<Owned>>,
    dir: PathBuf,
}

impl Etcd {
    /// Starts a member on each of `nodes` (fast elections: heartbeat 50
    /// ms, election timeout 500 ms, so a lease of 2 s is granted as is)
    /// and waits until the cluster answers.
    pub fn start(fabric: &Fabric, nodes: &[&str], dir: &Path) -> Etcd {
        let cluster: Vec<String> = nodes
            .iter()
            .map(|n| format!("{n}=http://{}:2380", fabric.addr(n)))
            .collect();
        let mut etcd = Etcd {
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            members: Vec::new(),
            dir: dir.to_owned(),
        };
        for node in nodes {
            let child = etcd.member(fabric, node, &cluster.join(","));
            etcd.members.push(Some(child));
        }
        etcd.wait_healthy(fabric);
        etcd
    }

    fn member(&self, fabric: &Fabric, node: &str, cluster: &str) -> Owned {
        let addr = fabric.addr(node);
        let data = self.dir.join(format!("etcd-{node}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("etcd-{node}.log")))
            .expect("etcd's log opens");
        let child = fabric
            .command(node, "etcd")
            .args(["--name", node, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &format!("http://{addr}:2379")])
            .args(["--advertise-client-urls", &format!("http://{addr}:2379")])
            .args(["--listen-peer-urls", &format!("http://{addr}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{addr}:2380"),
            ])
            .args([
                "--initial-cluster",
                cluster,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server) starts");
        Owned(child)
    }

    /// The client URLs, as `[fleet] etcd` writes them.
    pub fn urls(&self, fabric: &Fabric) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}:2379", fabric.addr(n)))
            .collect()
    }

    /// `etcdctl` run from `node` against the whole cluster.
    pub fn ctl(&self, fabric: &Fabric, from: &str, args: &[&str]) -> (bool, String) {
        let output = fabric
            .command(from, "etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.urls(fabric).join(","))
            .args(["--command-timeout", "2s", "--dial-timeout", "1s"])
            .args(args)
            .output()
            .expect("etcdctl (Debian's etcd-client) runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    }

    fn wait_healthy(&self, fabric: &Fabric) {
        let from = self.nodes[0].clone();
        wait_until("the etcd cluster answers", Duration::from_secs(30), || {
            let (ok, _) = self.ctl(fabric, &from, &["put", "/healer-test/ready", "1"]);
            ok.then_some(())
        });
    }

    /// The node of the current leader, asked from a live member.
    pub fn leader(&self, fabric: &Fabric) -> String {
        let from = self.live().next().expect("a live etcd member").to_owned();
        wait_until("etcd names a leader", Duration::from_secs(20), || {
            let (ok, out) = self.ctl(fabric, &from, &["endpoint", "status", "-w", "json"]);
            if !ok {
                return None;
            }
            let statuses: serde_json::Value = serde_json::from_str(out.lines().next()?).ok()?;
            statuses.as_array()?.iter().find_map(|s| {
                let (leader, id) = (&s["Status"]["leader"], &s["Status"]["header"]["member_id"]);
                if leader.as_u64().is_some() && leader == id {
                    let endpoint = s["Endpoint"].as_str()?;
                    let host = endpoint.strip_prefix("http://")?.split(':').next()?;
                    fabric.node_of(host).map(str::to_owned)
                } else {
                    None
                }
            })
        })
    }

    fn live(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .zip(&self.members)
            .filter(|(_, m)| m.is_some())
            .map(|(n, _)| n.as_str())
    }

    /// Kills the member on `node` (SIGKILL).
    pub fn kill(&mut self, node: &str) {
        let at = self
            .nodes
            .iter()
            .position(|n| n == node)
            .expect("an etcd node");
        self.members[at] = None;
    }

    /// Starts the member on `node` again, from its data.
    pub fn restart(&mut self, fabric: &Fabric, node: &str) {
        let at = self
            .nodes
            .iter()
            .position(|n| n == node)
            .expect("an etcd node");
        let cluster: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{n}=http://{}:2380", fabric.addr(n)))
            .collect();
        self.members[at] = Some(self.member(fabric, node, &cluster.join(",")));
    }

    /// Kills every member.
    pub fn stop_all(&mut self) {
        for member in &mut self.members {
            *member = None;
        }
    }

    /// Starts every member again and waits until the cluster answers.
    pub fn start_all(&mut self, fabric: &Fabric) {
        let nodes = self.nodes.clone();
        for node in &nodes {
            self.restart(fabric, node);
        }
        self.wait_healthy(fabric);
    }
}

/// The `fleet-service` process and what it recorded.
pub struct Services {
    pub dir: PathBuf,
    pub url: String,
    _child: Owned,
}

impl Services {
    /// Starts `binary` (the test's `CARGO_BIN_EXE_fleet-service`) on
    /// `node`, port 8080, recording in `dir`.
    pub fn start(fabric: &Fabric, node: &str, dir: &Path, binary: &str) -> Services {
        std::fs::create_dir_all(dir.join("down")).expect("the services' dir");
        let addr = format!("{}:8080", fabric.addr(node));
        let child = fabric
            .command(node, binary)
            .args(["--listen", &addr, "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("fleet-service starts");
        let services = Services {
            dir: dir.to_owned(),
            url: format!("http://{addr}"),
            _child: Owned(child),
        };
        wait_until("fleet-service listens", Duration::from_secs(10), || {
            dir.join("checks.log").exists().then_some(())
        });
        services
    }

    /// Target `name` fails its checks from now on, in episode `episode`,
    /// until a recovery reaches the service.
    pub fn take_down(&self, name: &str, episode: &str) {
        std::fs::write(self.dir.join("down").join(name), episode).expect("down file");
    }

    /// Whether `name` is down.
    pub fn is_down(&self, name: &str) -> bool {
        self.dir.join("down").join(name).exists()
    }

    /// Every check so far: (monotonic ns, checker address, target).
    pub fn checks(&self) -> Vec<(u128, String, String)> {
        let text = std::fs::read_to_string(self.dir.join("checks.log")).unwrap_or_default();
        whole_lines(&text)
            .filter_map(|fields| match fields.as_slice() {
                [ns, "check", peer, name] => {
                    Some((ns.parse().ok()?, (*peer).to_owned(), (*name).to_owned()))
                }
                _ => None,
            })
            .collect()
    }

    /// The alert sinks' deliveries so far: (monotonic ns, body).
    pub fn alerts(&self) -> Vec<(u128, String)> {
        let text = std::fs::read_to_string(self.dir.join("alerts.log")).unwrap_or_default();
        whole_lines(&text)
            .filter_map(|fields| match fields.as_slice() {
                [ns, "alert", _peer, body @ ..] => Some((ns.parse().ok()?, body.join(" "))),
                _ => None,
            })
            .collect()
    }

    /// Recoveries take `ms` each from now on (none: at once).
    pub fn slow_recoveries(&self, ms: Option<u64>) {
        let file = self.dir.join("slow");
        match ms {
            Some(ms) => std::fs::write(file, ms.to_string()).expect("slow file"),
            None => {
                let _ = std::fs::remove_file(file);
            }
        }
    }

    /// The recoveries that began so far (slow ones say so when they
    /// arrive): (monotonic ns, peer, target).
    pub fn begun(&self) -> Vec<(u128, String, String)> {
        let text = std::fs::read_to_string(self.dir.join("recoveries.log")).unwrap_or_default();
        whole_lines(&text)
            .filter_map(|fields| match fields.as_slice() {
                [ns, "begin", peer, name, ..] => {
                    Some((ns.parse().ok()?, (*peer).to_owned(), (*name).to_owned()))
                }
                _ => None,
            })
            .collect()
    }

    /// Two recoveries of one target that ran at the same time, if any.
    pub fn overlapping_recoveries(&self) -> Vec<(Recovered, Recovered)> {
        let all = self.recoveries();
        let mut overlapping = Vec::new();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.target == b.target && a.began < b.ns && b.began < a.ns {
                    overlapping.push((a.clone(), b.clone()));
                }
            }
        }
        overlapping
    }

    /// Every recovery that reached the service.
    pub fn recoveries(&self) -> Vec<Recovered> {
        let text = std::fs::read_to_string(self.dir.join("recoveries.log")).unwrap_or_default();
        whole_lines(&text)
            .filter_map(|fields| match fields.as_slice() {
                [ns, verdict @ ("recover" | "refused"), peer, name, episode, attempt, fence, began] => Some(Recovered {
                    ns: ns.parse().ok()?,
                    began: began.parse().ok()?,
                    accepted: *verdict == "recover",
                    peer: (*peer).to_owned(),
                    target: (*name).to_owned(),
                    episode: (*episode).to_owned(),
                    attempt: attempt.parse().ok()?,
                    fence: fence.parse().ok()?,
                }),
                _ => None,
            })
            .collect()
    }
}

/// One recovery as the service saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovered {
    /// When it ended.
    pub ns: u128,
    /// When it arrived.
    pub began: u128,
    /// Not refused for a stale fence.
    pub accepted: bool,
    pub peer: String,
    pub target: String,
    pub episode: String,
    pub attempt: u64,
    pub fence: u64,
}

/// The finished lines of `text` (a line being written has no newline
/// yet), split at spaces.
fn whole_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole.lines().map(|line| line.split(' ').collect())
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock `fleet-service` writes).
pub fn monotonic_ns() -> u128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128
}

/// A healer of the fleet, in its own namespace.
pub struct Member {
    pub node: String,
    pub config: PathBuf,
    pub daemon: Option<crate::Daemon>,
}

impl Member {
    /// Writes `dir/healer.toml` (`[healer]` from `healer`, the fleet's
    /// `[fleet]` naming this member, `body`) and starts healer on `node`.
    pub fn start(fabric: &Fabric, node: &str, dir: &Path, config: String) -> Member {
        std::fs::create_dir_all(dir).expect("the member's dir");
        let path = dir.join("healer.toml");
        std::fs::write(&path, config).expect("the member's config");
        let mut member = Member {
            node: node.to_owned(),
            config: path,
            daemon: None,
        };
        member.restart(fabric);
        member
    }

    /// Starts it (again), on the same config and state.
    pub fn restart(&mut self, fabric: &Fabric) {
        self.daemon = None;
        let wrapper = format!("--net=/run/netns/{}", fabric.ns(&self.node));
        self.daemon = Some(crate::Daemon::start_under(
            &self.config,
            &["nsenter", &wrapper, "--"],
        ));
    }

    /// Stops it with SIGTERM, as an operator would (it leaves the fleet:
    /// its shards are free at once); whether it exited in time.
    pub fn stop(&mut self) -> bool {
        self.daemon.take().is_none_or(|mut daemon| daemon.stop())
    }

    /// Its pid (`None` while it is not running).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(crate::Daemon::pid)
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill();
        }
    }

    /// Its events so far.
    pub fn records(&self) -> Vec<crate::Record> {
        crate::read_records(&self.config.with_file_name("events.jsonl"))
    }

    /// `healer fleet --json` asked from its node: what it says of the
    /// fleet (it must answer, and be in touch).
    pub fn fleet(&self, fabric: &Fabric) -> serde_json::Value {
        let (ok, out) = self.ask(fabric, &["fleet", "--json"]);
        assert!(ok, "healer fleet on {}: {out}", self.node);
        serde_json::from_str(&out).unwrap_or_else(|err| panic!("fleet JSON ({err}): {out}"))
    }

    /// `healer status --json` (or another command) asked from its node.
    pub fn ask(&self, fabric: &Fabric, args: &[&str]) -> (bool, String) {
        let output = fabric
            .command(&self.node, healer_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("healer runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    }
}

/// The times (monotonic ns) each member checked `target`, grouped into
/// the spans it was checking it: a gap longer than three intervals ends
/// a span.
pub fn spans(
    checks: &[(u128, String, String)],
    target: &str,
    interval: Duration,
) -> Vec<(String, u128, u128)> {
    let gap = interval * 3;
    let mut by_member: std::collections::BTreeMap<&str, Vec<u128>> = Default::default();
    for (ns, peer, name) in checks {
        if name == target {
            by_member.entry(peer).or_default().push(*ns);
        }
    }
    let mut spans = Vec::new();
    for (member, times) in by_member {
        let mut start = times[0];
        let mut last = times[0];
        for &at in &times[1..] {
            if at - last > gap.as_nanos() {
                spans.push((member.to_owned(), start, last));
                start = at;
            }
            last = at;
        }
        spans.push((member.to_owned(), start, last));
    }
    spans.sort_by_key(|span| span.1);
    spans
}

/// How long two members' spans of checking the same target overlap, in
/// all: the double-owned time, on the one monotonic clock. A member's
/// check inside another's span (a lone stale check is a span of one
/// point) counts at least a nanosecond, so it is never zero.
pub fn overlap(spans: &[(String, u128, u128)]) -> Duration {
    let mut total = 0u128;
    for (i, (a, a0, a1)) in spans.iter().enumerate() {
        for (b, b0, b1) in &spans[i + 1..] {
            let (from, to) = ((*a0).max(*b0), (*a1).min(*b1));
            if a != b && from <= to {
                total += (to - from).max(1);
            }
        }
    }
    Duration::from_nanos(total as u64)
}

/// Waits, at most `limit`, until `probe` says yes.
pub fn within(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    wait_until(what, limit, || probe().then_some(()));
    started.elapsed()
}
