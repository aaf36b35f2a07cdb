//! The package's own Tokio runtime and the one way plugin code is run: on
//! that runtime, behind a panic guard, as an [`FfiFuture`] the host can time
//! out and drop.
//!
//! Each `.so` links its own copy of Tokio, so no runtime, reactor or timer
//! may cross the boundary: plugin work runs here and only wakers cross.
//! Dropping the returned future aborts the task (otherwise a timed-out check
//! would keep its sockets open forever), and a panic anywhere in plugin code
//! comes back as an error naming where it happened.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, Once, OnceLock};
use std::task::Poll;

use abi_stable::std_types::{RErr, ROk, RResult, RString};
use async_ffi::{FfiFuture, FutureExt};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Threads the package may use for blocking work (diagnosers, constructors,
/// DNS look-ups, starting programs); more callers queue instead of spawning
/// more threads. On two cores, 32 threads start a burst of 100 programs no
/// faster than 8 (fork is bound by the CPU and the address space's lock).
const MAX_BLOCKING_THREADS: usize = 8;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static RUNTIME_INIT: Mutex<()> = Mutex::new(());

/// The package's runtime, started on first use so that merely listing a
/// package (`healer plugins`) starts no threads.
fn runtime() -> Result<&'static Runtime, String> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let _only_one_builder = RUNTIME_INIT
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    install_panic_hook();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_name("healer-plugin")
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the plugin package's runtime: {err}"))?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Runs blocking `work` on the package's blocking pool without waiting.
pub(crate) fn detach_blocking(work: impl FnOnce() + Send + 'static) -> Result<(), String> {
    runtime()?.spawn_blocking(work);
    Ok(())
}

/// Runs `work` on the package runtime; the host awaits the returned future.
pub(crate) fn spawn<T, F>(work: F) -> FfiFuture<RResult<T, RString>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, String>> + Send + 'static,
{
    match runtime() {
        Ok(runtime) => joined(runtime.spawn(catch_panic_async(work))),
        Err(err) => ready_err(err),
    }
}

/// Runs blocking `work` on the package's blocking pool.
pub(crate) fn spawn_blocking<T, F>(work: F) -> FfiFuture<RResult<T, RString>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    match runtime() {
        Ok(runtime) => joined(runtime.spawn_blocking(move || catch_panic(work).and_then(|r| r))),
        Err(err) => ready_err(err),
    }
}

fn ready_err<T: Send + 'static>(err: String) -> FfiFuture<RResult<T, RString>> {
    async move { RErr(RString::from(err)) }.into_ffi()
}

/// Wraps a task's handle so that dropping the future aborts the task.
fn joined<T: Send + 'static>(
    handle: JoinHandle<Result<T, String>>,
) -> FfiFuture<RResult<T, RString>> {
    let mut guard = AbortOnDrop(handle);
    async move {
        match (&mut guard.0).await {
            Ok(Ok(value)) => ROk(value),
            Ok(Err(err)) => RErr(RString::from(err)),
            Err(join_err) if join_err.is_panic() => {
                RErr(RString::from(describe_panic(join_err.into_panic())))
            }
            Err(_) => RErr(RString::from("plugin task was cancelled")),
        }
    }
    .into_ffi()
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `work` under `catch_unwind`, so a panic is reported on the thread
/// it happened on, where its location is still known. Pinned in place: no
/// allocation per call.
async fn catch_panic_async<T, F>(work: F) -> Result<T, String>
where
    F: Future<Output = Result<T, String>>,
{
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(move |cx| {
        match panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(describe_panic(payload))),
        }
    })
    .await
}

/// Runs `f`, turning a panic into an error that says where and why.
pub(crate) fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_panic_hook();
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(describe_panic)
}

thread_local! {
    static LAST_PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces this package's panic hook (the package has its own copy of std;
/// the host's hook is untouched) with one that only remembers the location:
/// the host reports the panic as one log line instead of a stderr dump.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            LAST_PANIC_AT.with(|last| *last.borrow_mut() = at);
        }));
    });
}

fn describe_panic(payload: Box<dyn Any + Send>) -> String {
    let message = if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-string panic payload".to_owned()
    };
    match LAST_PANIC_AT.with(|last| last.borrow_mut().take()) {
        Some(at) => format!("panicked at {at}: {message}"),
        None => format!("panicked: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(future: FfiFuture<T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_panicking_task_becomes_an_error_naming_the_location() {
        let result = block_on(spawn(async { panic!("boom") as Result<(), String> }));
        let err = result.into_result().unwrap_err();
        assert!(err.starts_with("panicked at "), "{err}");
        assert!(
            err.contains("runtime.rs") && err.ends_with(": boom"),
            "{err}"
        );
    }

    #[test]
    fn a_panicking_blocking_call_becomes_an_error() {
        let result = block_on(spawn_blocking(|| -> Result<(), String> {
            panic!("bad {}", 1)
        }));
        assert!(result.into_result().unwrap_err().ends_with(": bad 1"));
    }

    #[test]
    fn dropping_the_future_aborts_the_task() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let future = spawn(async move {
            let _tx = tx; // dropped when the task is aborted
            std::future::pending::<()>().await;
            Ok(())
        });
        drop(future);
        let disconnected = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(
            disconnected,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
