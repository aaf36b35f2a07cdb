//! What healer tells a new plugin worker before anything else: the file to
//! serve, the identity it was probed as, the name it is shown as, and the
//! sandbox it confines itself to. It is the first frame on the worker's
//! socket (descriptor [`WORKER_FD`]; a 4-byte big-endian length, then
//! JSON), not on its command line, so `ps` shows a worker as `healer
//! worker libfoo.so` rather than a page of JSON; nor in its environment,
//! which holds only the allowlist.
//!
//! The worker reads exactly that frame, never a byte more, and leaves the
//! rest of the socket to the calls.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Sandbox;
use crate::plugins::identity::Identity;

/// The descriptor a worker finds its end of the socketpair on, its
/// assignment waiting there.
pub const WORKER_FD: RawFd = 3;

/// The most a worker reads as its assignment (Landlock paths and all, an
/// assignment is a few KiB).
const MAX_BYTES: usize = 1 << 20;

/// One worker's assignment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The file to load (a symlink's target, as probed).
    pub file: PathBuf,
    /// The file as probed: the worker loads it only if it still is.
    pub identity: Identity,
    /// Its path in the plugins directory, as messages name it.
    pub shown_as: PathBuf,
    /// What the worker confines itself to before it loads the file.
    pub sandbox: Sandbox,
}

impl Assignment {
    /// Writes it as one frame on `socket`.
    pub fn send(&self, socket: &mut impl Write) -> io::Result<()> {
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        let length = u32::try_from(json.len())
            .ok()
            .filter(|&n| n as usize <= MAX_BYTES)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "the worker's assignment is {} bytes, more than {MAX_BYTES}",
                    json.len()
                ))
            })?;
        socket.write_all(&length.to_be_bytes())?;
        socket.write_all(&json)?;
        socket.flush()
    }

    /// Reads the first frame of `socket`, and nothing after it.
    pub fn receive(socket: &mut impl Read) -> Result<Assignment, String> {
        let mut length = [0; 4];
        socket
            .read_exact(&mut length)
            .map_err(|err| format!("healer sent no assignment on the worker's socket: {err}"))?;
        let length = u32::from_be_bytes(length) as usize;
        if length > MAX_BYTES {
            return Err(format!(
                "healer's assignment is {length} bytes, more than {MAX_BYTES}"
            ));
        }
        let mut json = vec![0; length];
        socket
            .read_exact(&mut json)
            .map_err(|err| format!("healer's assignment ended early: {err}"))?;
        serde_json::from_slice(&json)
            .map_err(|err| format!("healer's assignment is not an assignment: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment() -> Assignment {
        Assignment {
            file: "/opt/healer/plugins/libhealer_plugin_http.so".into(),
            identity: Identity {
                dev: 1,
                inode: 2,
                size: 3,
                mtime_ns: 4,
                sha256: "ab".repeat(32),
            },
            shown_as: "plugins/libhealer_plugin_http.so".into(),
            sandbox: Sandbox::default(),
        }
    }

    #[test]
    fn a_worker_reads_its_assignment_and_leaves_what_follows_on_the_socket() {
        let (mut healer, mut worker) = std::os::unix::net::UnixStream::pair().unwrap();
        assignment().send(&mut healer).unwrap();
        healer.write_all(b"the first call").unwrap();
        drop(healer);

        assert_eq!(Assignment::receive(&mut worker).unwrap(), assignment());
        let mut rest = String::new();
        worker.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "the first call");
    }

    #[test]
    fn a_socket_closed_before_the_assignment_is_said_so() {
        let (healer, mut worker) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(healer);

        let err = Assignment::receive(&mut worker).unwrap_err();
        assert!(err.starts_with("healer sent no assignment"), "{err}");
    }

    #[test]
    fn an_assignment_longer_than_the_limit_is_refused_unread() {
        let mut sent: &[u8] = &[0xff, 0xff, 0xff, 0xff, b'{'];

        let err = Assignment::receive(&mut sent).unwrap_err();
        assert!(err.contains("more than 1048576"), "{err}");
        assert_eq!(sent, b"{", "nothing of it was read");
    }
}
