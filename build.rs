//! Link-time layout of the shipped binary: the functions a command runs
//! from start-up to its first request, listed in `link/startup-order.txt`
//! (made by `link/startup-order.sh`), are placed together at the front
//! of `.text`.
//!
//! Why: the kernel maps a binary's code 64 KiB around each page a process
//! first runs (fault-around), and the start-up path touches functions
//! spread over most of the 10 MB of code, so an idle proxy had 6.7 MiB of
//! code resident for the 1.9 MiB it ran. Only the order changes; a name the
//! list has and the binary lacks (after `cargo update` or a new rustc,
//! whose symbol hashes differ) is skipped, and the layout degrades to the
//! linker's own order, never to a failed build.
//!
//! Only where the linker is rustc's own lld (`--symbol-ordering-file` is an
//! lld option): x86_64 Linux, rustc 1.90 or later, no linker override in
//! RUSTFLAGS; and only for release-based profiles (the list names the
//! release build's symbols).

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    let list = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("link")
        .join("startup-order.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var("PROFILE").as_deref() != Ok("release")
        || !list.is_file()
        || !rustc_links_with_lld()
    {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// rustc 1.90+ links x86_64 Linux binaries with its bundled lld unless the
/// flags turn that off or name another linker flavour.
fn rustc_links_with_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if [
        "linker-features",
        "link-self-contained",
        "linker-flavor",
        "fuse-ld",
    ]
    .iter()
    .any(|f| flags.contains(f))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    matches!(minor, Some(m) if m >= 90)
}
