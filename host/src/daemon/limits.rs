//! The process limits healer sets for itself at start: as many open files
//! as the hard limit allows, and a file size limit that fails a write
//! (EFBIG) instead of killing healer (SIGXFSZ).

use tokio::signal::unix::{signal, SignalKind};

/// Raises the soft limit on open files to the hard one: every check,
/// recovery and intake connection takes descriptors, and running out
/// (EMFILE) must not be what stops healer from seeing.
pub(super) fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(
                from = soft,
                to = hard,
                "raised the open files limit (RLIMIT_NOFILE) to the hard limit"
            ),
            Err(err) => {
                tracing::warn!(limit = soft, hard, error = %err, "cannot raise the open files limit (RLIMIT_NOFILE)")
            }
        },
        Ok((soft, _)) => tracing::info!(
            limit = soft,
            "open files limit (RLIMIT_NOFILE), already the hard limit"
        ),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the open files limit (RLIMIT_NOFILE)")
        }
    }
}

/// With a file size limit (RLIMIT_FSIZE) set, a write past it sends
/// SIGXFSZ, which would kill healer; handled, the write fails with EFBIG
/// instead, and the store reports it and retries.
pub(super) fn survive_file_size_limit() {
    match signal(SignalKind::from_raw(nix::libc::SIGXFSZ)) {
        Ok(mut signals) => {
            tokio::spawn(async move { while signals.recv().await.is_some() {} });
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot handle SIGXFSZ; a file size limit would stop healer")
        }
    }
}
