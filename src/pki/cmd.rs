//! `certshift pki init` and `certshift pki inspect`: options and runners.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::inspect::{inspect_file, render_text};
use super::{init, layout, IssuedBy, KeyType, OwnCaFiles, PkiOptions, Role};

/// `certshift pki init` options.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Directory to write the PKI into (created; must be empty unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Key algorithm of every CA and leaf.
    #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
    pub key_type: KeyType,
    /// SPIFFE trust domain of the identities.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Kubernetes namespace in the SPIFFE IDs.
    #[arg(long, default_value = "production")]
    pub namespace: String,
    /// Service (account) to issue a client identity for; repeatable. The
    /// first one is also the identity of the bad variants.
    #[arg(long = "service", value_name = "NAME", default_values_t = PkiOptions::default().services)]
    pub services: Vec<String>,
    /// DNS name or IP address of the server certificate; repeatable.
    #[arg(long = "server-name", value_name = "NAME", default_values_t = PkiOptions::default().server_names)]
    pub server_names: Vec<String>,
    /// Issue leaves from an intermediate CA; tls.crt then carries the chain.
    /// With --ca-cert, certshift makes that intermediate under your CA.
    #[arg(long)]
    pub intermediate: bool,
    /// Issue everything under your own CA (root or intermediate) instead of
    /// a fresh throwaway root. The file may hold your CA followed by its
    /// chain up to the root: ca/ca.crt is then that root (what a service
    /// must trust) and every tls.crt carries leaf + your intermediate(s).
    /// Given an intermediate alone, ca/ca.crt is the intermediate itself:
    /// verifiers that want a self-signed anchor (OpenSSL, nginx) then need
    /// your root too, so prefer passing the chain. `untrusted-ca` and
    /// `self-signed` still come from fresh keys; ca/crl.pem is signed by your
    /// CA. Checked first: key matches, CA:TRUE, keyCertSign/cRLSign, valid
    /// for --validity, pathlen allows --intermediate.
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// Private key of --ca-cert (PEM: PKCS#8, PKCS#1 or SEC1; unencrypted).
    /// Read only: never copied into --out or logged; the manifest records
    /// its path.
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Validity of the leaves (e.g. 30d, 12h).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub validity: Duration,
    /// Overwrite a non-empty directory.
    #[arg(long)]
    pub force: bool,
}

impl InitArgs {
    pub fn options(&self) -> PkiOptions {
        PkiOptions {
            key_type: self.key_type,
            trust_domain: self.trust_domain.clone(),
            namespace: self.namespace.clone(),
            services: self.services.clone(),
            server_names: self.server_names.clone(),
            intermediate: self.intermediate,
            validity: self.validity,
            own_ca: match (&self.ca_cert, &self.ca_key) {
                (Some(cert), Some(key)) => Some(OwnCaFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
        }
    }
}

/// Generate, write, and say what was written.
pub fn run_init(args: &InitArgs) -> anyhow::Result<()> {
    let manifest = init(&args.out, &args.options(), args.force)
        .with_context(|| format!("writing a test PKI to {}", args.out.display()))?;
    let out = args.out.display();
    println!(
        "wrote a test PKI to {out} ({}, trust domain {}, leaves valid for {}{})",
        manifest.key_type,
        manifest.trust_domain,
        manifest.validity,
        if manifest.intermediate {
            ", issued by an intermediate"
        } else {
            ""
        }
    );
    if let Some(ca) = &manifest.user_ca {
        println!(
            "issued under your {} CA {} (SHA-256 {})\n  from {}; its key stays at {} and was not copied",
            ca.kind, ca.subject, ca.sha256, ca.cert, ca.key
        );
    }
    for e in &manifest.credentials {
        let yours = e.issuer == Some(IssuedBy::External);
        let what = match e.role {
            Role::Ca if yours => "trust anchor: install it in the service (your CA)".to_string(),
            Role::Ca => "trusted root CA".to_string(),
            Role::IntermediateCa if yours => "your CA, sent in every tls.crt".to_string(),
            Role::IntermediateCa => "intermediate CA (issues the leaves)".to_string(),
            Role::UntrustedCa => "untrusted root CA".to_string(),
            Role::Server => format!("server  {}", e.spiffe_id.as_deref().unwrap_or("")),
            Role::Client => format!("client  {}", e.spiffe_id.as_deref().unwrap_or("")),
            Role::Variant => format!(
                "variant, expect {}: {}",
                e.expect.map(|x| x.to_string()).unwrap_or_default(),
                e.why.as_deref().unwrap_or("")
            ),
        };
        let shown = match e.role {
            Role::Ca | Role::IntermediateCa | Role::UntrustedCa => &e.cert,
            _ => &e.path,
        };
        println!("  {shown:<34} {what}");
    }
    // One line for the lot: each one's change and rule are in the manifest
    // and in `pki inspect mutations/<name>/tls.crt`.
    if let Some(first) = manifest.mutations.first() {
        let dir = format!("{}/", layout::MUTATIONS_DIR);
        println!(
            "  {dir:<34} {} mutated certificates of {} (manifest.toml [[mutations]]: what each changes, the verdict it must get)",
            manifest.mutations.len(),
            first.identity
        );
    }
    let crl = format!("{}/{}", layout::CA_DIR, layout::CRL_FILE);
    let signer = match &manifest.user_ca {
        Some(_) => ", signed by your CA: install it where the service reads CRLs",
        None => "",
    };
    println!("  {crl:<34} CRL revoking the `revoked` variant{signer}");
    println!("  {:<34} index of all of the above", super::MANIFEST_FILE);
    Ok(())
}

/// `certshift pki inspect` options.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// Certificate files (PEM chains or DER).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print JSON (an array, one object per file) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Inspect every file; the good ones are shown even when others fail, and
/// any failure makes the command fail (exit 2) after naming each bad file.
pub fn run_inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for file in &args.files {
        match inspect_file(file) {
            Ok(r) => reports.push(r),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        let text: Vec<String> = reports.iter().map(render_text).collect();
        print!("{}", text.join("\n"));
    }
    match failed.len() {
        0 => Ok(()),
        1 => anyhow::bail!("{}", failed[0]),
        n => anyhow::bail!(
            "{n} files could not be inspected:\n  {}",
            failed.join("\n  ")
        ),
    }
}
