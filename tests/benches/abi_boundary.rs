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
//! median of several rounds, as wall time and as CPU time of the whole
//! process (all threads) per check; the machine is shared, so wall times
//! are noisy, CPU times less so.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use healer::plugins::load;
use healer_e2e::{own_cpu_ns, package_file};
use healer_fixture_typical::Typical;
use healer_plugin_sdk::ffi::ObservationFfi;
use healer_plugin_sdk::{Monitor, Observation};
use serde::de::IgnoredAny;
use tokio::sync::Mutex;

const ROUNDS: usize = 7;
const CALLS: u32 = 64_000;
const IN_FLIGHT: usize = 64;

fn main() {
    let host = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let package_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let package = load(&package_file("healer-fixture-typical")).expect("the fixture loads");
    let new_monitor = || {
        Arc::new(
            host.block_on(package.new_monitor("typical", &serde_json::json!({})))
                .unwrap(),
        )
    };
    let new_direct = || Arc::new(Mutex::new(Typical::new(IgnoredAny).unwrap()));
    let sample = host.block_on(new_monitor().check()).unwrap();
    assert_eq!(sample.metrics.len(), 3);

    println!("median of {ROUNDS} rounds of {CALLS} checks; ns per check\n");
    println!("{:<44} {:>10} {:>10}", "one check at a time", "wall", "cpu");

    let mut inline = Typical::new(IgnoredAny).unwrap();
    row(
        "direct, inline",
        median(|| {
            measure(CALLS, || {
                (0..CALLS).for_each(|_| drop(black_box(poll_ready(inline.check()))))
            })
        }),
    );
    let marshal = median(|| {
        measure(CALLS, || {
            (0..CALLS).for_each(|_| {
                drop(black_box(Observation::from(ObservationFfi::from(
                    black_box(&sample).clone(),
                ))))
            })
        })
    });
    let clone = median(|| {
        measure(CALLS, || {
            (0..CALLS).for_each(|_| drop(black_box(black_box(&sample).clone())))
        })
    });
    row("marshal only (there and back)", difference(marshal, clone));

    let direct = new_direct();
    let scheduled = median(|| {
        measure(CALLS, || {
            host.block_on(async {
                for _ in 0..CALLS {
                    let direct = Arc::clone(&direct);
                    let seen = package_runtime
                        .spawn(async move { direct.lock().await.check().await })
                        .await;
                    black_box(seen.unwrap().unwrap());
                }
            })
        })
    });
    row("direct, scheduled like the SDK", scheduled);
    let monitor = new_monitor();
    let abi = median(|| {
        measure(CALLS, || {
            host.block_on(async {
                for _ in 0..CALLS {
                    black_box(monitor.check().await.unwrap());
                }
            })
        })
    });
    row("ABI", abi);
    row(
        "boundary overhead (ABI - direct, scheduled)",
        difference(abi, scheduled),
    );

    println!(
        "\n{:<44} {:>10} {:>10}",
        format!("{IN_FLIGHT} checks in flight ({IN_FLIGHT} instances)"),
        "wall",
        "cpu"
    );
    let per_instance = CALLS / IN_FLIGHT as u32;
    let calls = per_instance * IN_FLIGHT as u32;
    let directs: Vec<_> = (0..IN_FLIGHT).map(|_| new_direct()).collect();
    let scheduled_many = median(|| {
        measure(calls, || {
            host.block_on(async {
                let tasks: Vec<_> = directs
                    .iter()
                    .map(|direct| {
                        let direct = Arc::clone(direct);
                        let runtime = package_runtime.handle().clone();
                        tokio::spawn(async move {
                            for _ in 0..per_instance {
                                let direct = Arc::clone(&direct);
                                let seen = runtime
                                    .spawn(async move { direct.lock().await.check().await })
                                    .await;
                                black_box(seen.unwrap().unwrap());
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            })
        })
    });
    row("direct, scheduled like the SDK", scheduled_many);
    let monitors: Vec<_> = (0..IN_FLIGHT).map(|_| new_monitor()).collect();
    let abi_many = median(|| {
        measure(calls, || {
            host.block_on(async {
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
            })
        })
    });
    row("ABI", abi_many);
    row(
        "boundary overhead (ABI - direct, scheduled)",
        difference(abi_many, scheduled_many),
    );
}

fn poll_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the typical check does no I/O and is ready at once"),
    }
}

/// Wall and CPU ns per check of one round of `calls` checks.
#[derive(Clone, Copy)]
struct Cost {
    wall: f64,
    cpu: f64,
}

fn measure(calls: u32, round: impl FnOnce()) -> Cost {
    let (started, cpu_started) = (Instant::now(), own_cpu_ns());
    round();
    Cost {
        wall: started.elapsed().as_nanos() as f64 / f64::from(calls),
        cpu: (own_cpu_ns() - cpu_started) / f64::from(calls),
    }
}

fn median(mut round: impl FnMut() -> Cost) -> Cost {
    round(); // warm-up
    let mut results: Vec<Cost> = (0..ROUNDS).map(|_| round()).collect();
    results.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    let wall = results[ROUNDS / 2].wall;
    results.sort_by(|a, b| a.cpu.total_cmp(&b.cpu));
    Cost {
        wall,
        cpu: results[ROUNDS / 2].cpu,
    }
}

fn row(label: &str, cost: Cost) {
    println!("{label:<44} {:>10.0} {:>10.0}", cost.wall, cost.cpu);
}

fn difference(a: Cost, b: Cost) -> Cost {
    Cost {
        wall: a.wall - b.wall,
        cpu: a.cpu - b.cpu,
    }
}
