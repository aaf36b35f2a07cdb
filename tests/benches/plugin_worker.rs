//! One monitor check through a `healer worker` process against the same
//! check in-process, and the time to probe a directory of packages.
//!
//! Run with `cargo bench -p healer-e2e --bench plugin_worker`. It builds
//! healer and the packages in release mode and loads
//! `healer-fixture-typical` (a check that does no I/O and returns status,
//! summary and three metrics) twice through the real catalog: once with
//! `isolation = "in-process"`, once with `isolation = "process"` (the
//! default). For each it prints the p50 and p99 wall time of one call, and
//! the CPU time per call of healer plus, for the worker, the worker
//! process, with 1 and with 64 calls in flight (64 instances).

use std::sync::Arc;
use std::time::{Duration, Instant};

use healer::config::{Isolation, PackageSettings, Plugins};
use healer::plugins::{Catalog, MonitorHandle};
use healer_e2e::{healer_bin, own_cpu_ns, plugins_dir_with, workers_of, PLUGIN_PACKAGES};

const CALLS: usize = 40_000;
const IN_FLIGHT: usize = 64;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = plugins_dir_with(&["healer-fixture-typical"]);
    println!(
        "{CALLS} checks of healer-fixture-typical per row; wall per call (p50, p99) and CPU per call (healer + worker)\n"
    );
    println!(
        "{:<34} {:>9} {:>9} {:>12}",
        "", "p50 us", "p99 us", "cpu us/call"
    );
    for isolation in [Isolation::InProcess, Isolation::Process] {
        let mut plugins = Plugins::default();
        plugins.package.insert(
            "libhealer_fixture_typical.so".to_owned(),
            PackageSettings {
                isolation: Some(isolation),
                ..PackageSettings::default()
            },
        );
        let catalog = Catalog::scan_with(dir.path(), &healer_bin(), &plugins).unwrap();
        assert!(catalog.errors.is_empty(), "{:?}", catalog.errors);
        let package = &catalog.packages[0];
        assert_eq!(package.isolation, isolation);
        let monitors: Vec<Arc<MonitorHandle>> = runtime.block_on(async {
            let mut monitors = Vec::new();
            for _ in 0..IN_FLIGHT {
                let monitor = package
                    .new_monitor("typical", &serde_json::json!({}))
                    .await
                    .unwrap();
                monitors.push(Arc::new(monitor));
            }
            monitors
        });
        let worker = worker_pid();
        for in_flight in [1, IN_FLIGHT] {
            // Warm up, then measure.
            run(&runtime, &monitors[..in_flight], CALLS / 4);
            let (cpu_before, worker_before) = (own_cpu_ns(), worker.map_or(0.0, process_cpu_ns));
            let mut latencies = run(&runtime, &monitors[..in_flight], CALLS);
            let cpu =
                own_cpu_ns() - cpu_before + worker.map_or(0.0, process_cpu_ns) - worker_before;
            latencies.sort();
            let at = |share: f64| {
                latencies[((latencies.len() as f64 * share) as usize).min(latencies.len() - 1)]
                    .as_secs_f64()
                    * 1e6
            };
            println!(
                "{:<34} {:>9.1} {:>9.1} {:>12.1}",
                format!("{}, {in_flight} in flight", isolation.as_str()),
                at(0.50),
                at(0.99),
                cpu / CALLS as f64 / 1e3
            );
        }
    }

    // The floor on this machine: a round trip over a socketpair between
    // two threads blocked in read(), 8 bytes each way (two wake-ups).
    let (mut ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut buffer = [0u8; 8];
        while theirs.read_exact(&mut buffer).is_ok() {
            if theirs.write_all(&buffer).is_err() {
                return;
            }
        }
    });
    let mut trips: Vec<Duration> = (0..CALLS)
        .map(|_| {
            use std::io::{Read, Write};
            let started = Instant::now();
            let mut buffer = [1u8; 8];
            ours.write_all(&buffer).unwrap();
            ours.read_exact(&mut buffer).unwrap();
            started.elapsed()
        })
        .collect();
    drop(ours);
    let _ = echo.join();
    trips.sort();
    println!(
        "{:<34} {:>9.1} {:>9.1}",
        "floor: socketpair ping-pong",
        trips[CALLS / 2].as_secs_f64() * 1e6,
        trips[CALLS * 99 / 100].as_secs_f64() * 1e6
    );

    let eight = plugins_dir_with(PLUGIN_PACKAGES);
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let catalog =
                Catalog::scan_with(eight.path(), &healer_bin(), &Plugins::default()).unwrap();
            assert_eq!(catalog.packages.len(), 8, "{:?}", catalog.errors);
            started.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "\nprobing 8 packages (the product's plugins, release): min {:.0} ms, median {:.0} ms, max {:.0} ms (5 scans)",
        times[0].as_secs_f64() * 1e3,
        times[2].as_secs_f64() * 1e3,
        times[4].as_secs_f64() * 1e3
    );
}

/// `calls` checks spread over `monitors`, each monitor one call at a time;
/// the wall time of each call.
fn run(
    runtime: &tokio::runtime::Runtime,
    monitors: &[Arc<MonitorHandle>],
    calls: usize,
) -> Vec<Duration> {
    let each = calls / monitors.len();
    runtime.block_on(async {
        let tasks: Vec<_> = monitors
            .iter()
            .map(|monitor| {
                let monitor = Arc::clone(monitor);
                tokio::spawn(async move {
                    let mut took = Vec::with_capacity(each);
                    for _ in 0..each {
                        let started = Instant::now();
                        std::hint::black_box(monitor.check().await.unwrap());
                        took.push(started.elapsed());
                    }
                    took
                })
            })
            .collect();
        let mut all = Vec::with_capacity(calls);
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    })
}

/// The worker this process started, if any.
fn worker_pid() -> Option<u32> {
    workers_of(std::process::id()).first().map(|(pid, _)| *pid)
}

/// A process's CPU time (user + system), in ns, from /proc (10 ms steps).
fn process_cpu_ns(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    (ticks(11) + ticks(12)) * 1e9 / 100.0
}
