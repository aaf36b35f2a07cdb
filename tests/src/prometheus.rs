//! Real Prometheus and Alertmanager (Debian's packages) on 127.0.0.1,
//! for the tests of healer's metrics and alert intake; each is killed when
//! dropped, and a test panics (never skips) when one is not installed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, get, post, url_encode, wait_until};

/// A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on
/// 127.0.0.1, routing every alert to one webhook, with short group and
/// repeat intervals so re-sends come within seconds. Killed when dropped.
pub struct Alertmanager {
    /// Its API port on 127.0.0.1.
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// Where Debian installs Alertmanager.
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

impl Alertmanager {
    /// Starts it, sending webhooks to `webhook_url`; panics (never skips)
    /// when it is not installed.
    pub fn start(webhook_url: &str) -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: install Debian's prometheus-alertmanager (apt-get install -y prometheus-alertmanager; .ci/run does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: healer\n  group_by: ['alertname']\n  group_wait: 100ms\n  group_interval: 1s\n  repeat_interval: 2s\n\
                 receivers:\n  - name: healer\n    webhook_configs:\n      - url: {webhook_url}\n        send_resolved: true\n"
            ),
        )
        .expect("the Alertmanager config is written");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log file");
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("Alertmanager starts");
        wait_until("Alertmanager is ready", Duration::from_secs(20), || {
            let (status, _) = get(port, "/-/ready");
            (status == 200).then_some(())
        });
        Alertmanager {
            port,
            child,
            _dir: dir,
        }
    }

    /// Posts alerts to its API (`POST /api/v2/alerts`), as Prometheus does.
    pub fn fire(&self, alerts: &serde_json::Value) {
        let (status, body) = post(
            self.port,
            "/api/v2/alerts",
            "application/json",
            &[],
            alerts.to_string().as_bytes(),
        );
        assert_eq!(status, 200, "Alertmanager refused the alerts: {body}");
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Debian installs Prometheus.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A real Prometheus (Debian's `prometheus`) on 127.0.0.1, scraping one
/// healer's `/metrics` every second as job `healer`. Killed when dropped.
pub struct Prometheus {
    /// Its web port on 127.0.0.1.
    pub port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts it scraping `http://127.0.0.1:<healer_port>/metrics` and waits
    /// until it is ready; panics (never skips) when it is not installed.
    pub fn start(healer_port: u16) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install Debian's prometheus (apt-get install -y prometheus; .ci/run does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: healer\n    static_configs:\n      - targets: ['127.0.0.1:{healer_port}']\n"
            ),
        )
        .expect("the Prometheus config is written");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let mut child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("Prometheus starts");
        let started = Instant::now();
        loop {
            if get(port, "/-/ready").0 == 200 {
                break;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "Prometheus was not ready within 30 s ({exited:?}); its log:\n{}",
                    std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Prometheus { port, child, dir }
    }

    /// The `healer` job's scrape target as `GET /api/v1/targets` shows it
    /// (`health`, `lastError`, ...), once Prometheus has one.
    pub fn healer_target(&self) -> Option<serde_json::Value> {
        let (status, body) = get(self.port, "/api/v1/targets?state=active");
        if status != 200 {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["activeTargets"]
            .as_array()?
            .iter()
            .find(|target| target["labels"]["job"] == "healer")
            .cloned()
    }

    /// The value of an instant query that gives at most one series; `None`
    /// when it gives none. Panics when Prometheus refuses the query.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = get(self.port, &path);
        assert_eq!(status, 200, "Prometheus refused {promql:?}: {body}");
        let answer: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|err| panic!("{err}: {body}"));
        let series = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(series.len() <= 1, "{promql:?} gave several series: {body}");
        series.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Its log so far, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
