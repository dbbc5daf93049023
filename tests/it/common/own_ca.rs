//! A user's own CA, made here the way a user makes one elsewhere: with the
//! `openssl` binary (a root, a CA from a request, a root + intermediate
//! chain), and `certshift pki init --ca-cert --ca-key` under it.
//!
//! openssl is required, not optional (as in tests/it/pki_openssl.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use certshift::pki::Manifest;

use super::certshift;

/// Run openssl in `dir`; panics if it cannot start.
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `openssl` ({e}): install it and put it on PATH"))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn must(dir: &Path, args: &[&str]) -> String {
    let out = openssl(dir, args);
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub const P256: &[&str] = &["-pkeyopt", "ec_paramgen_curve:P-256"];
pub const P384: &[&str] = &["-pkeyopt", "ec_paramgen_curve:P-384"];

pub const CA_EXT: [&str; 4] = [
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
];

/// A self-signed root `NAME.crt`/`NAME.key` in `dir`; `newkey` as openssl's
/// `-newkey` (e.g. `rsa:2048`, `ec`), `opts` any `-pkeyopt`s.
pub fn root(dir: &Path, name: &str, newkey: &str, opts: &[&str], ext: &[&str]) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    let subj = format!("/O=Example Corp/CN={name}");
    let mut args = vec!["req", "-x509", "-newkey", newkey];
    args.extend_from_slice(opts);
    args.extend([
        "-nodes", "-keyout", &key, "-out", &crt, "-days", "365", "-subj", &subj,
    ]);
    args.extend_from_slice(ext);
    must(dir, &args);
}

/// `NAME.crt`/`NAME.key`: an EC P-256 CA made from a request, signed by
/// `issuer`'s key (`None`: its own) for `days` (negative: already expired).
pub fn csr_ca(dir: &Path, name: &str, issuer: Option<&str>, days: &str) {
    let (crt, key, csr) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
    );
    let subj = format!("/O=Example Corp/CN={name}");
    let newkey = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut args = vec!["req", "-new", "-keyout", &key, "-out", &csr, "-subj", &subj];
    args.extend(newkey);
    must(dir, &args);
    let mut ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
                   subjectKeyIdentifier=hash\n"
        .to_string();
    let (issuer_crt, issuer_key) = issuer.map_or((String::new(), key.clone()), |i| {
        (format!("{i}.crt"), format!("{i}.key"))
    });
    let mut args = vec!["x509", "-req", "-in", &csr, "-days", days, "-out", &crt];
    match issuer {
        Some(_) => {
            ext += "authorityKeyIdentifier=keyid\n";
            args.extend(["-CA", &issuer_crt, "-CAkey", &issuer_key, "-CAcreateserial"]);
        }
        None => args.extend(["-signkey", &issuer_key]),
    }
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    let extfile = format!("{name}.ext");
    args.extend(["-extfile", &extfile]);
    must(dir, &args);
}

/// An openssl-made root `corp-root` and intermediate `team-ca` under it,
/// and `team-chain.crt`: the intermediate followed by its root.
pub fn team_chain(dir: &Path) {
    root(dir, "corp-root", "ec", P256, &CA_EXT);
    csr_ca(dir, "team-ca", Some("corp-root"), "365");
    let bundle = std::fs::read_to_string(dir.join("team-ca.crt")).unwrap()
        + &std::fs::read_to_string(dir.join("corp-root.crt")).unwrap();
    std::fs::write(dir.join("team-chain.crt"), bundle).unwrap();
}

/// `certshift pki init --out DIR/pki --ca-cert CERT --ca-key KEY EXTRA...`
pub fn init(dir: &Path, cert: &str, key: &str, extra: &[&str]) -> Output {
    certshift()
        .current_dir(dir)
        .args([
            "pki",
            "init",
            "--out",
            "pki",
            "--ca-cert",
            cert,
            "--ca-key",
            key,
        ])
        .args(extra)
        .output()
        .expect("run certshift")
}

pub fn init_ok(dir: &Path, cert: &str, key: &str, extra: &[&str]) -> (PathBuf, Manifest) {
    let out = init(dir, cert, key, extra);
    assert!(out.status.success(), "pki init: {}", text(&out));
    let pki = dir.join("pki");
    let m = Manifest::load(&pki).expect("manifest");
    (pki, m)
}
