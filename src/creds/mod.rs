//! Live credentials: loading and checking credential files, the published
//! value that TLS configs read once per handshake, the one publication path
//! every rotation takes ([`Publisher`]), and the sources that trigger a
//! reload (directory watch, fingerprint poll, SIGHUP).
//!
//! Never: decides what to do with a credential (that is `tls`) or mutates a
//! published value in place.

mod live;
mod load;
mod publish;
mod server;
mod watch;

pub use live::{Live, ReloadStatus};
pub use load::{
    add_roots, certified_key, check_client_chain, check_validity, leaf_serial, load_certified_key,
    load_chain, load_crls, load_key, load_roots, parse_chain, parse_crls, parse_key, provider,
    read, read_client_pair, serial_of, CredError,
};
pub use publish::{Fingerprint, Loaded, Publisher, RotationKind, RotationLog, Sources};
pub use server::{Revocation, ServerFiles, ServerTlsMaterial};
pub use watch::{
    poll_period, spawn_reloader, spawn_reloader_with, ReloaderHandle, Triggers, DEFAULT_POLL,
};
