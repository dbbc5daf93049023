//! Live credentials: loading and checking credential files, the published
//! value that TLS configs read once per handshake, and the sources that
//! trigger a reload (directory watch, SIGHUP).
//!
//! Never: decides what to do with a credential (that is `tls`) or mutates a
//! published value in place.

mod live;
mod load;
mod server;
mod watch;

pub use live::{Live, ReloadStatus};
pub use load::{
    add_roots, certified_key, leaf_serial, load_certified_key, load_chain, load_client_pair,
    load_crls, load_key, load_roots, parse_chain, parse_crls, parse_key, provider, read, serial_of,
    CredError,
};
pub use server::{ServerFiles, ServerTlsMaterial};
pub use watch::{spawn_reloader, ReloaderHandle};
