//! Logging: tracing to stderr and to the log file (`[healer] log_file`,
//! the seed's `logs/self_healing.log`), as readable lines or JSON lines.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{Healer, LogFormat};

/// Starts logging. `verbose` (-v, -vv) raises the level over the config's;
/// `HEALER_LOG` (a tracing filter) overrides both. A log file that cannot
/// be opened costs a warning, not the daemon: it logs to stderr only.
pub fn init(healer: &Healer, verbose: u8) {
    let level = match verbose {
        0 => healer.log_level.clone(),
        1 => "debug".to_owned(),
        _ => "trace".to_owned(),
    };
    let filter =
        || EnvFilter::try_from_env("HEALER_LOG").unwrap_or_else(|_| EnvFilter::new(&level));
    let json = healer.log_format == LogFormat::Json;
    let layer = |json: bool| -> Box<dyn Layer<_> + Send + Sync> {
        if json {
            Box::new(
                fmt::layer()
                    .json()
                    .with_target(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter()),
            )
        } else {
            Box::new(
                fmt::layer()
                    .with_target(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter()),
            )
        }
    };
    let stderr = layer(json);

    let opened = healer
        .log_file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&healer.log_file)
        });
    let (file, file_error) = match opened {
        Ok(file) => {
            let writer = Mutex::new(file);
            let layer: Box<dyn Layer<_> + Send + Sync> = if json {
                Box::new(
                    fmt::layer()
                        .json()
                        .with_target(false)
                        .with_ansi(false)
                        .with_writer(writer)
                        .with_filter(filter()),
                )
            } else {
                Box::new(
                    fmt::layer()
                        .with_target(false)
                        .with_ansi(false)
                        .with_writer(writer)
                        .with_filter(filter()),
                )
            };
            (Some(layer), None)
        }
        Err(err) => (None, Some(err)),
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
    if let Some(err) = file_error {
        tracing::warn!(file = %healer.log_file.display(), error = %err, "cannot open the log file; logging to stderr only");
    }
}
