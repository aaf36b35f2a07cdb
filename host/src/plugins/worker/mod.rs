//! Out-of-process plugins: everything about running a package in a
//! `healer worker` process, healer's side and the worker's.
//!
//! healer's side: [`probe`] loads a package in a short-lived child before
//! anything else does; [`client`] is the package's [`Backend`] when it
//! runs in a worker (the default), calling it over a socketpair ([`wire`],
//! through an [`outbox`]); it starts the worker ([`child`], handing it an
//! [`assignment`]), watches it ([`watch`]: heartbeat, unread outbox),
//! relays what it prints ([`output`]), and asks the [`supervisor`]'s
//! policy when to start it again and when to quarantine the package.
//!
//! The worker's side (the same binary, `healer worker`): [`entry`] answers
//! a probe, [`serve`] serves a package's calls; each first confines itself
//! ([`sandbox`]) and dies with healer ([`parent`]).
//!
//! [`Backend`]: super::package::Backend

mod assignment;
#[allow(unsafe_code)] // the set-up between fork and exec; a pidfd registered
mod child;
mod client;
mod conn;
pub mod entry;
mod outbox;
mod output;
mod parent;
pub mod probe;
#[allow(unsafe_code)] // PR_CAPBSET_DROP
pub mod sandbox;
#[allow(unsafe_code)] // the socket on descriptor 3
pub mod serve;
mod shards;
mod supervisor;
mod watch;
pub mod wire;

pub use client::Remote;
pub use shards::serve as served_by_workers;
