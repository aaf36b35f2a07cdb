//! What one monitor check costs across the plugin ABI, against the same
//! check as a direct Rust trait call.
//!
//! Run with `cargo bench -p healer-e2e --bench abi_boundary`. It builds the
//! `healer-fixture-typical` package in release mode, whose check returns a
//! typical observation (status, summary, three metrics) without I/O, and
//! measures, in ns per check:
//!
//! - `direct, inline`: `Monitor::check` polled on the calling thread;
//! - `direct, scheduled`: the same check run the way the SDK runs plugin
//!   code (spawned on a separate one-worker runtime behind an async lock,
//!   awaited from the host runtime), but with no FFI in between;
//! - `ABI`: the real call through the loaded `.so`, including the extern
//!   calls, the FFI future, and converting the observation to FFI types in
//!   the plugin and back to host types in the host;
//! - `marshal only`: Observation -> ObservationFfi -> Observation.
//!
//! The boundary overhead is `ABI - direct, scheduled`. Each figure is the
//! median of several rounds; the machine is shared, so expect noise.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use healer::plugins::load;
use healer_e2e::package_file;
use healer_fixture_typical::Typical;
use healer_plugin_sdk::ffi::ObservationFfi;
use healer_plugin_sdk::{Monitor, Observation};
use serde::de::IgnoredAny;
use tokio::sync::Mutex;

const ROUNDS: usize = 7;
const CALLS: u32 = 20_000;
const IN_FLIGHT: usize = 64;

fn main() {
    let host = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let package_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let package = load(&package_file("healer-fixture-typical")).expect("the fixture loads");
    let monitor = host.block_on(package.new_monitor("typical", &serde_json::json!({}))).unwrap();
    let monitor = Arc::new(monitor);
    let direct = Arc::new(Mutex::new(Typical::new(IgnoredAny).unwrap()));
    let sample = host.block_on(monitor.check()).unwrap();
    assert_eq!(sample.metrics.len(), 3);

    println!("ns per check, median of {ROUNDS} rounds of {CALLS} checks\n");
    println!("{:<44} {:>10}", "one check at a time", "ns/check");

    let mut inline = Typical::new(IgnoredAny).unwrap();
    let inline_ns = median(|| {
        let started = Instant::now();
        for _ in 0..CALLS {
            black_box(poll_ready(inline.check()).unwrap());
        }
        per_call(started)
    });
    row("direct, inline", inline_ns);

    let marshal_ns = median(|| {
        let started = Instant::now();
        for _ in 0..CALLS {
            let seen = black_box(sample.clone());
            black_box(Observation::from(ObservationFfi::from(seen)));
        }
        per_call(started)
    });
    let clone_ns = median(|| {
        let started = Instant::now();
        for _ in 0..CALLS {
            black_box(black_box(&sample).clone());
        }
        per_call(started)
    });
    row("marshal only (minus building the input)", marshal_ns - clone_ns);

    let scheduled_ns = median(|| {
        host.block_on(async {
            let started = Instant::now();
            for _ in 0..CALLS {
                let direct = Arc::clone(&direct);
                let seen = package_runtime.spawn(async move { direct.lock().await.check().await }).await;
                black_box(seen.unwrap().unwrap());
            }
            per_call(started)
        })
    });
    row("direct, scheduled like the SDK", scheduled_ns);

    let abi_ns = median(|| {
        host.block_on(async {
            let started = Instant::now();
            for _ in 0..CALLS {
                black_box(monitor.check().await.unwrap());
            }
            per_call(started)
        })
    });
    row("ABI", abi_ns);
    row("boundary overhead (ABI - direct, scheduled)", abi_ns - scheduled_ns);

    println!("\n{:<44} {:>10}", format!("{IN_FLIGHT} checks in flight (64 instances)"), "ns/check");
    let directs: Vec<_> = (0..IN_FLIGHT).map(|_| Arc::new(Mutex::new(Typical::new(IgnoredAny).unwrap()))).collect();
    let monitors: Vec<_> = (0..IN_FLIGHT)
        .map(|_| Arc::new(host.block_on(package.new_monitor("typical", &serde_json::json!({}))).unwrap()))
        .collect();
    let per_instance = CALLS / IN_FLIGHT as u32;

    let scheduled_many = median(|| {
        host.block_on(async {
            let started = Instant::now();
            let tasks: Vec<_> = directs
                .iter()
                .map(|direct| {
                    let direct = Arc::clone(direct);
                    let runtime = package_runtime.handle().clone();
                    tokio::spawn(async move {
                        for _ in 0..per_instance {
                            let direct = Arc::clone(&direct);
                            let seen = runtime.spawn(async move { direct.lock().await.check().await }).await;
                            black_box(seen.unwrap().unwrap());
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            started.elapsed().as_nanos() as f64 / (per_instance as f64 * IN_FLIGHT as f64)
        })
    });
    row("direct, scheduled like the SDK", scheduled_many);

    let abi_many = median(|| {
        host.block_on(async {
            let started = Instant::now();
            let tasks: Vec<_> = monitors
                .iter()
                .map(|monitor| {
                    let monitor = Arc::clone(monitor);
                    tokio::spawn(async move {
                        for _ in 0..per_instance {
                            black_box(monitor.check().await.unwrap());
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            started.elapsed().as_nanos() as f64 / (per_instance as f64 * IN_FLIGHT as f64)
        })
    });
    row("ABI", abi_many);
    row("boundary overhead (ABI - direct, scheduled)", abi_many - scheduled_many);
}

fn poll_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the typical check does no I/O and is ready at once"),
    }
}

fn per_call(started: Instant) -> f64 {
    started.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

fn median(mut round: impl FnMut() -> f64) -> f64 {
    round(); // warm-up
    let mut results: Vec<f64> = (0..ROUNDS).map(|_| round()).collect();
    results.sort_by(f64::total_cmp);
    results[ROUNDS / 2]
}

fn row(label: &str, ns: f64) {
    println!("{label:<44} {ns:>10.0}");
}
