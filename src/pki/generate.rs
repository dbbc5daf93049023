//! What a test PKI contains: a trusted root (optionally an intermediate), an
//! untrusted root, the server identity, one valid client per service, and
//! the catalogue of bad client variants. Everything is built in memory first
//! so that a failure half-way writes nothing.

use std::path::PathBuf;
use std::time::Duration;

use rcgen::ExtendedKeyUsagePurpose;
use rustls_pki_types::CertificateDer;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::hierarchy::{CaCert, CaKey, Hierarchy};
use super::issue::{key_pem, pem_cert, self_signed_leaf, Issued, LeafSpec, Usage};
use super::layout::{
    CA_DIR, CA_FILE, CERT_FILE, CLIENTS_DIR, CRL_FILE, KEY_FILE, MUTATIONS_DIR, SERVER_DIR,
    VARIANTS_DIR,
};
use super::manifest::{
    Entry, EntryFacts, IssuedBy, Manifest, MutationEntry, Role, FORMAT_VERSION, MANIFEST_FILE,
};
use super::mutate::MUTATIONS;
use super::own_ca::OwnCaFiles;
use super::write::PkiFile;
use super::{KeyType, PkiError, Variant};
use crate::spiffe::{is_trust_domain, SpiffeId};
use crate::x509::fingerprint;

/// Longest leaf validity: keeps date arithmetic in range and test
/// credentials short-lived.
pub const MAX_VALIDITY: Duration = Duration::from_secs(3650 * 86400);

/// The service account name in the reference server's own SPIFFE ID.
pub const SERVER_ACCOUNT: &str = "certshift-serve";

/// Settings of `pki init`, validated by [`PkiOptions::validate`].
#[derive(Debug, Clone)]
pub struct PkiOptions {
    pub key_type: KeyType,
    pub trust_domain: String,
    pub namespace: String,
    pub services: Vec<String>,
    pub server_names: Vec<String>,
    pub intermediate: bool,
    pub validity: Duration,
    /// Issue under the user's CA instead of a fresh root.
    pub own_ca: Option<OwnCaFiles>,
}

impl Default for PkiOptions {
    fn default() -> Self {
        PkiOptions {
            key_type: KeyType::EcdsaP256,
            trust_domain: "cluster.local".into(),
            namespace: "production".into(),
            services: [
                "order-service",
                "checkout-service",
                "inventory-service",
                "payment-service",
            ]
            .map(String::from)
            .to_vec(),
            server_names: ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec(),
            intermediate: false,
            validity: Duration::from_secs(30 * 86400),
            own_ca: None,
        }
    }
}

impl PkiOptions {
    /// Names end up in SPIFFE IDs, directory names and SANs: check them before
    /// any key is generated.
    pub fn validate(&self) -> Result<(), PkiError> {
        let bad = |field: &str, value: &str, fix: &str| {
            Err(PkiError::Option {
                field: field.into(),
                value: value.into(),
                fix: fix.into(),
            })
        };
        if !is_trust_domain(&self.trust_domain) {
            return bad(
                "--trust-domain",
                &self.trust_domain,
                "use lowercase letters, digits, '.', '-' and '_' (e.g. cluster.local)",
            );
        }
        if !is_dns_label(&self.namespace) {
            return bad(
                "--namespace",
                &self.namespace,
                "use a Kubernetes name: lowercase letters, digits and '-', at most 63",
            );
        }
        if self.services.is_empty() {
            return bad("--service", "", "give at least one service");
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.services {
            if !is_dns_label(s) {
                return bad("--service", s, "use a Kubernetes service account name: lowercase letters, digits and '-', at most 63");
            }
            if !seen.insert(s) {
                return bad("--service", s, "each service may be given once");
            }
        }
        if self.server_names.is_empty() {
            return bad(
                "--server-name",
                "",
                "give at least one DNS name or IP address",
            );
        }
        for n in &self.server_names {
            if n.is_empty() || n.contains(['/', ' ', ':']) && n.parse::<std::net::IpAddr>().is_err()
            {
                return bad("--server-name", n, "give a DNS name or an IP address");
            }
        }
        if self.validity < Duration::from_secs(60) || self.validity > MAX_VALIDITY {
            return bad(
                "--validity",
                &humantime::format_duration(self.validity).to_string(),
                "give 1m to 3650d (e.g. 30d)",
            );
        }
        Ok(())
    }
}

/// A whole test PKI in memory, ready to be written.
pub struct GeneratedPki {
    pub manifest: Manifest,
    pub files: Vec<PkiFile>,
}

/// Build a test PKI as of `now`.
pub fn generate(opts: &PkiOptions, now: OffsetDateTime) -> Result<GeneratedPki, PkiError> {
    opts.validate()?;
    let kt = opts.key_type;
    let mut out = Builder {
        files: Vec::new(),
        entries: Vec::new(),
    };

    let cas = Hierarchy::build(opts, now)?;
    let issuing = cas.issuing();
    // Leaves carry their chain up to (not including) the trust anchor.
    let chain_of = |leaf: &Issued| -> Vec<CertificateDer<'static>> {
        let mut chain = vec![leaf.cert.clone()];
        chain.extend(cas.chain.iter().cloned());
        chain
    };
    let root_pem = pem_cert(&cas.anchor);
    for ca in &cas.cas {
        out.ca(ca)?;
    }

    let mut server = LeafSpec::new("certshift-serve", Usage::Server, now, opts.validity);
    server.names = opts.server_names.clone();
    server.spiffe_id = Some(istio_id(
        &opts.trust_domain,
        &opts.namespace,
        SERVER_ACCOUNT,
    )?);
    let issued = issuing.issue(&server, kt)?;
    let entry = Meta::new("server", Role::Server, SERVER_DIR.into());
    out.leaf(
        entry.spiffe(server.spiffe_id.clone()),
        &chain_of(&issued),
        &issued,
        Some(&root_pem),
        cas.leaf_issuer,
    )?;

    let mut first_identity = None;
    for service in &opts.services {
        let spec = client_spec(opts, service, now)?;
        let issued = issuing.issue(&spec, kt)?;
        let meta = Meta::new(service, Role::Client, format!("{CLIENTS_DIR}/{service}"))
            .client(Variant::Valid, service);
        out.leaf(
            meta.spiffe(spec.spiffe_id.clone()),
            &chain_of(&issued),
            &issued,
            Some(&root_pem),
            cas.leaf_issuer,
        )?;
        first_identity.get_or_insert(issued);
    }

    // The bad variants all speak for the first service, so the only thing
    // wrong with each is the one property its name says.
    let first = &opts.services[0];
    let mut revoked = Vec::new();
    for variant in Variant::ALL {
        if variant == Variant::Valid || (variant.needs_intermediate() && cas.chain.is_empty()) {
            continue;
        }
        let mut spec = client_spec(opts, first, now)?;
        let day = time::Duration::days(1);
        // What differs from a valid credential: the spec, who signs, and
        // whether the chain travels with the leaf.
        let (signer, send_chain) = match variant {
            Variant::Valid => continue,
            Variant::Expired => {
                spec.not_after = now - day;
                spec.not_before = spec.not_after - opts.validity;
                (Signer::Issuing, true)
            }
            Variant::NotYetValid => {
                spec.not_before = now + day * 30;
                spec.not_after = spec.not_before + opts.validity;
                (Signer::Issuing, true)
            }
            Variant::UntrustedCa => (Signer::Untrusted, false),
            Variant::SelfSigned => (Signer::Itself, false),
            Variant::MissingIntermediate => (Signer::Issuing, false),
            Variant::Revoked => (Signer::Issuing, true),
            Variant::WrongEku => {
                spec.eku_override = Some(vec![ExtendedKeyUsagePurpose::ServerAuth]);
                (Signer::Issuing, true)
            }
            Variant::WrongTrustDomain => {
                spec.spiffe_id = Some(istio_id("evil.example", &opts.namespace, first)?);
                (Signer::Issuing, true)
            }
            Variant::NoSpiffeId => {
                spec.spiffe_id = None;
                (Signer::Issuing, true)
            }
            Variant::CaAsLeaf => {
                spec.ca_flag = true;
                (Signer::Issuing, true)
            }
        };
        let (issued, issuer) = match signer {
            Signer::Issuing => (issuing.issue(&spec, kt)?, cas.leaf_issuer),
            Signer::Untrusted => (cas.untrusted.issue(&spec, kt)?, IssuedBy::UntrustedCa),
            Signer::Itself => (self_signed_leaf(&spec, kt)?, IssuedBy::Itself),
        };
        let chain = match send_chain {
            true => chain_of(&issued),
            false => vec![issued.cert.clone()],
        };
        if variant == Variant::Revoked {
            revoked.push(issued.serial.clone());
        }
        let meta = Meta::new(
            variant.name(),
            Role::Variant,
            format!("{VARIANTS_DIR}/{variant}"),
        )
        .client(variant, first);
        out.leaf(
            meta.spiffe(spec.spiffe_id.clone()),
            &chain,
            &issued,
            None,
            issuer,
        )?;
    }

    // The mutations of the first service's own certificate: its key, so the
    // handshake completes and only the mutated property is judged.
    let mut mutations = Vec::new();
    if let Some(identity) = &first_identity {
        for m in MUTATIONS {
            let chain = match m.derive(&identity.cert, issuing, &cas.chain) {
                Ok(chain) => chain,
                // An Ed25519 CA has no SHA-1 signature: nothing to write.
                Err(PkiError::NoSha1Signature { .. }) => continue,
                Err(e) => return Err(e),
            };
            let dir = format!("{MUTATIONS_DIR}/{}", m.name);
            let (cert, key) = (format!("{dir}/{CERT_FILE}"), format!("{dir}/{KEY_FILE}"));
            let chain_pem: String = chain.iter().map(pem_cert).collect();
            out.file(&cert, chain_pem.into_bytes(), false);
            out.file(&key, key_pem(&identity.key).into_bytes(), true);
            mutations.push(MutationEntry {
                name: m.name.into(),
                path: dir,
                cert,
                key,
                identity: first.clone(),
                expect: m.expect,
                mandate: m.mandate,
                changes: m.changes.into(),
                rule: m.rule.into(),
                sha256: chain.first().map(|c| fingerprint(c)).unwrap_or_default(),
            });
        }
    }

    // One CRL per CA certshift holds the key of, concatenated: verifiers
    // that check the whole chain (rustls does by default) need a CRL from
    // every CA on the path. The first, the issuing CA's, revokes.
    let crl_lifetime = opts.validity.max(Duration::from_secs(7 * 86400));
    let mut crl = String::new();
    for (i, ca) in cas.signers.iter().enumerate() {
        let listed = if i == 0 { revoked.as_slice() } else { &[] };
        crl += &ca.crl(listed, now, crl_lifetime)?;
    }
    if !crl.ends_with('\n') {
        crl.push('\n');
    }
    out.file(&format!("{CA_DIR}/{CRL_FILE}"), crl.into_bytes(), false);

    let manifest = Manifest {
        format: FORMAT_VERSION,
        generator: format!("certshift {}", env!("CARGO_PKG_VERSION")),
        generated_at: now.format(&Rfc3339).unwrap_or_default(),
        key_type: kt,
        trust_domain: opts.trust_domain.clone(),
        namespace: opts.namespace.clone(),
        services: opts.services.clone(),
        server_names: opts.server_names.clone(),
        intermediate: opts.intermediate,
        validity: short_duration(opts.validity),
        user_ca: cas.user_ca.clone(),
        credentials: out.entries,
        mutations,
    };
    out.files.push(PkiFile {
        path: MANIFEST_FILE.into(),
        contents: manifest.to_toml()?.into_bytes(),
        secret: false,
    });
    Ok(GeneratedPki {
        manifest,
        files: out.files,
    })
}

/// Who signs a variant's leaf.
enum Signer {
    Issuing,
    Untrusted,
    Itself,
}

fn client_spec(
    opts: &PkiOptions,
    service: &str,
    now: OffsetDateTime,
) -> Result<LeafSpec, PkiError> {
    let mut spec = LeafSpec::new(service, Usage::Client, now, opts.validity);
    spec.spiffe_id = Some(istio_id(&opts.trust_domain, &opts.namespace, service)?);
    Ok(spec)
}

/// The Istio-form SPIFFE ID of a workload, as the certificate carries it.
fn istio_id(trust_domain: &str, namespace: &str, account: &str) -> Result<String, PkiError> {
    Ok(SpiffeId::istio(trust_domain, namespace, account)?.to_string())
}

struct Meta<'a> {
    name: &'a str,
    role: Role,
    path: String,
    variant: Option<Variant>,
    identity: Option<String>,
    spiffe_id: Option<String>,
}

impl<'a> Meta<'a> {
    fn new(name: &'a str, role: Role, path: String) -> Self {
        Meta {
            name,
            role,
            path,
            variant: None,
            identity: None,
            spiffe_id: None,
        }
    }

    fn client(mut self, variant: Variant, identity: &str) -> Self {
        self.variant = Some(variant);
        self.identity = Some(identity.to_string());
        self
    }

    fn spiffe(mut self, id: Option<String>) -> Self {
        self.spiffe_id = id;
        self
    }
}

struct Builder {
    files: Vec<PkiFile>,
    entries: Vec<Entry>,
}

impl Builder {
    fn file(&mut self, path: &str, contents: Vec<u8>, secret: bool) {
        self.files.push(PkiFile {
            path: PathBuf::from(path),
            contents,
            secret,
        });
    }

    /// A CA certificate, and its key when certshift made it.
    fn ca(&mut self, ca: &CaCert) -> Result<(), PkiError> {
        let cert_path = format!("{}/{}", ca.dir, ca.file);
        self.file(&cert_path, pem_cert(&ca.cert).into_bytes(), false);
        let key_path = match &ca.key {
            CaKey::Write { file, pem } => {
                let path = format!("{}/{file}", ca.dir);
                self.file(&path, pem.clone().into_bytes(), true);
                path
            }
            CaKey::Elsewhere(path) => path.clone(),
            CaKey::Unknown => String::new(),
        };
        let meta = Meta::new(ca.name, ca.role, ca.dir.into());
        self.entry(meta, cert_path, key_path, &ca.cert, ca.issuer)
    }

    /// A leaf credential directory: `tls.crt` (leaf then chain), `tls.key`,
    /// and `ca.crt` (the root, to verify the peer) where given.
    fn leaf(
        &mut self,
        meta: Meta<'_>,
        chain: &[CertificateDer<'static>],
        issued: &Issued,
        ca_pem: Option<&str>,
        issuer: IssuedBy,
    ) -> Result<(), PkiError> {
        let dir = meta.path.clone();
        let (cert_path, key_path) = (format!("{dir}/{CERT_FILE}"), format!("{dir}/{KEY_FILE}"));
        let chain_pem: String = chain.iter().map(pem_cert).collect();
        self.file(&cert_path, chain_pem.into_bytes(), false);
        self.file(&key_path, key_pem(&issued.key).into_bytes(), true);
        if let Some(ca) = ca_pem {
            self.file(&format!("{dir}/{CA_FILE}"), ca.as_bytes().to_vec(), false);
        }
        self.entry(meta, cert_path, key_path, &issued.cert, issuer)
    }

    fn entry(
        &mut self,
        meta: Meta<'_>,
        cert: String,
        key: String,
        der: &CertificateDer<'_>,
        issuer: IssuedBy,
    ) -> Result<(), PkiError> {
        let facts = EntryFacts::of(der)?;
        self.entries.push(Entry {
            name: meta.name.into(),
            role: meta.role,
            path: meta.path,
            cert,
            key,
            issuer: Some(issuer),
            variant: meta.variant,
            identity: meta.identity,
            spiffe_id: meta.spiffe_id,
            serial: facts.serial,
            not_before: facts.not_before,
            not_after: facts.not_after,
            sha256: facts.sha256,
            expect: meta.variant.map(Variant::expected),
            why: meta.variant.map(|v| v.why().to_string()),
        });
        Ok(())
    }
}

/// `30d`, `12h`, `90m`, `45s`: the form `--validity` takes back.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
