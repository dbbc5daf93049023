//! `certshift pki init` and `certshift pki inspect`: options and runners.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::inspect::{inspect_file, render_text};
use super::{init, layout, KeyType, PkiOptions, Role};

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
    #[arg(long)]
    pub intermediate: bool,
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
    for e in &manifest.credentials {
        let what = match e.role {
            Role::Ca => "trusted root CA".to_string(),
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
    let crl = format!("{}/{}", layout::CA_DIR, layout::CRL_FILE);
    println!("  {crl:<34} CRL revoking the `revoked` variant");
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
