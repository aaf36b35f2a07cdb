//! HTTP plugins: the `http` monitor requests a URL and reports status code,
//! latency and body size (a new connection per check, async: many checks in
//! flight need no extra threads); the `http` diagnoser names what went
//! wrong: `http.status_5xx`, `.status_4xx`, `.timeout`, `.refused`,
//! `.certificate`, `.slow`, `.body_mismatch`, `.error`.

#![forbid(unsafe_code)]

mod diagnoser;
mod monitor;
mod plain;

pub use diagnoser::HttpDiagnoser;
pub use monitor::HttpMonitor;

/// Installs rustls' `ring` provider for this package (each package has its
/// own rustls, so this does not touch the host or other packages).
fn init() -> Result<(), healer_plugin_sdk::Error> {
    // Already installed is fine: init runs once per load.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(())
}

healer_plugin_sdk::export_plugins! {
    init: init,
    monitors: [HttpMonitor],
    diagnosers: [HttpDiagnoser],
}
