//! A complete plugin package: a monitor that sees whether a file is there,
//! a diagnoser that names what it saw, and a recoverer that puts it back.
#![forbid(unsafe_code)]
mod file_exists;
mod file_size;
mod restore_file;

pub use file_exists::FileExists;
pub use file_size::FileSize;
pub use restore_file::RestoreFile;

healer_plugin_sdk::export_plugins! {
    monitors: [FileExists],
    diagnosers: [FileSize],
    recoverers: [RestoreFile],
}
