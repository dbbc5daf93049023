//! SPIFFE IDs: `spiffe://<trust-domain>/<path>`, parsed by the rules of the
//! SPIFFE ID standard (SPIFFE-ID.md §2), and the Istio forms built on them.
//!
//! Owns: the one rule for "is this a SPIFFE ID", its trust domain and path,
//! the Istio principal (`cluster.local/ns/a/sa/b`), and picking the SPIFFE ID
//! out of a certificate's URI SANs. Everything that asks "which workload is
//! this" goes through [`SpiffeId`] rather than looking at string prefixes.
//! Never: reads certificates (that is `x509`) or decides who is allowed
//! (that is the verifiers and `serve`'s policy).

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";
/// SPIFFE-ID.md §2.3: implementations must accept IDs up to 2048 bytes, and
/// may refuse longer ones; we refuse them.
const MAX_ID_LEN: usize = 2048;
/// SPIFFE-ID.md §2.1: a trust domain name is at most 255 bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A valid SPIFFE ID, kept as written (so it compares and prints exactly as
/// the certificate carries it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    text: String,
    /// Byte offset where the trust domain ends and the path begins.
    path_at: usize,
}

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{id:?} is not a SPIFFE ID: {problem}")]
pub struct SpiffeIdError {
    pub id: String,
    pub problem: Problem,
}

/// The rule of the SPIFFE ID standard that a string breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("it does not start with spiffe://")]
    Scheme,
    #[error("it is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    #[error("the trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    #[error("the trust domain holds {0:?}; use lowercase letters, digits, '.', '-' and '_' (e.g. cluster.local)")]
    TrustDomainChar(char),
    #[error("it is a spiffe:// URI, and a trust domain is the bare name inside one")]
    UriNotName,
    #[error("the path has an empty segment (\"//\" or a trailing \"/\")")]
    EmptySegment,
    #[error("the path has a \".\" or \"..\" segment")]
    DotSegment,
    #[error("the path holds {0:?}; segments may only hold letters, digits, '.', '-' and '_'")]
    PathChar(char),
}

impl SpiffeId {
    /// Parse by SPIFFE-ID.md §2. One leniency, kept on purpose: the scheme is
    /// matched case-insensitively (RFC 3986 §3.1), because certificates in the
    /// field carry `SPIFFE://` and the proxy and `serve` have always read it.
    pub fn parse(id: &str) -> Result<SpiffeId, SpiffeIdError> {
        let fail = |problem| {
            Err(SpiffeIdError {
                id: id.to_string(),
                problem,
            })
        };
        if !Self::has_scheme(id) {
            return fail(Problem::Scheme);
        }
        if id.len() > MAX_ID_LEN {
            return fail(Problem::TooLong);
        }
        let rest = &id[SCHEME.len()..];
        let td_len = rest.find('/').unwrap_or(rest.len());
        if let Err(problem) = check_trust_domain(&rest[..td_len]) {
            return fail(problem);
        }
        if let Err(problem) = check_path(&rest[td_len..]) {
            return fail(problem);
        }
        Ok(SpiffeId {
            text: id.to_string(),
            path_at: SCHEME.len() + td_len,
        })
    }

    /// Istio's workload identity: `spiffe://<td>/ns/<namespace>/sa/<account>`.
    pub fn istio(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::parse(&format!(
            "{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// Whether `s` is written as a SPIFFE URI at all (valid or not): the
    /// scheme test that decides which URI SAN claims to be the identity.
    pub fn has_scheme(s: &str) -> bool {
        s.get(..SCHEME.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(SCHEME))
    }

    /// The SPIFFE ID among a certificate's URI SANs: the one URI with the
    /// `spiffe` scheme. An X.509-SVID has exactly one; two SPIFFE URIs, or one
    /// that breaks the standard, is no identity at all.
    pub fn from_uri_sans<'a>(uris: impl IntoIterator<Item = &'a str>) -> Option<SpiffeId> {
        let mut ids = uris.into_iter().filter(|u| Self::has_scheme(u));
        match (ids.next(), ids.next()) {
            (Some(id), None) => SpiffeId::parse(id).ok(),
            _ => None,
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.text[SCHEME.len()..self.path_at]
    }

    /// `/ns/a/sa/b`, or empty for the trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.text[self.path_at..]
    }

    /// The Istio principal: the ID without its scheme, e.g.
    /// `cluster.local/ns/a/sa/b`, as authorization policies name peers.
    pub fn principal(&self) -> &str {
        &self.text[SCHEME.len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A trust domain name by SPIFFE-ID.md §2.1 (what `pki init --trust-domain`
/// accepts).
pub fn is_trust_domain(name: &str) -> bool {
    check_trust_domain(name).is_ok()
}

/// Why a string is not a trust domain name, with the form to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a trust domain: {problem}; {}", fix(.suggestion.as_deref()))]
pub struct TrustDomainError {
    pub name: String,
    pub problem: Problem,
    /// The name the user most likely meant (`cluster.local` for
    /// `spiffe://cluster.local`), when there is one.
    pub suggestion: Option<String>,
}

fn fix(suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!("write it as {s}"),
        None => "write a bare name such as cluster.local".into(),
    }
}

/// Check a trust domain name as given on a command line or in a file
/// (`--trust-domain`): the name alone, no scheme, no path. A whole SPIFFE
/// URI is the common mistake, so the error names the domain inside it.
pub fn parse_trust_domain(name: &str) -> Result<&str, TrustDomainError> {
    let fail = |problem, suggestion: Option<&str>| TrustDomainError {
        name: name.to_string(),
        problem,
        suggestion: suggestion.map(str::to_string),
    };
    if SpiffeId::has_scheme(name) {
        let inner = SpiffeId::parse(name).ok();
        return Err(fail(
            Problem::UriNotName,
            inner.as_ref().map(SpiffeId::trust_domain),
        ));
    }
    check_trust_domain(name).map_err(|p| {
        // `cluster.local/ns/a`: the part before the path may be the name meant.
        let head = name.split('/').next().filter(|h| *h != name);
        fail(p, head.filter(|h| is_trust_domain(h)))
    })?;
    Ok(name)
}

fn check_trust_domain(td: &str) -> Result<(), Problem> {
    if td.is_empty() {
        return Err(Problem::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(Problem::TrustDomainTooLong);
    }
    // Lowercase only: the standard keeps IDs comparable byte for byte.
    match td
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(*c)))
    {
        Some(c) => Err(Problem::TrustDomainChar(c)),
        None => Ok(()),
    }
}

/// Empty, or `/segment` repeated; SPIFFE-ID.md §2.2.
fn check_path(path: &str) -> Result<(), Problem> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/', so the first split item is the empty prefix.
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err(Problem::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(Problem::DotSegment);
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-._".contains(*c)))
        {
            return Err(Problem::PathChar(c));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = "spiffe://cluster.local/ns/production/sa/order-service";

    fn problem(id: &str) -> Problem {
        SpiffeId::parse(id).unwrap_err().problem
    }

    #[test]
    fn parts_of_an_istio_id() {
        let id = SpiffeId::parse(ORDER).unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.path(), "/ns/production/sa/order-service");
        assert_eq!(
            id.principal(),
            "cluster.local/ns/production/sa/order-service"
        );
        assert_eq!(id.to_string(), ORDER);
        assert_eq!(
            SpiffeId::istio("cluster.local", "production", "order-service").unwrap(),
            id
        );
        assert_eq!(ORDER.parse::<SpiffeId>().unwrap(), id);
        assert_eq!(serde_json::to_value(&id).unwrap(), ORDER);
    }

    #[test]
    fn scheme_is_case_insensitive_and_kept_as_written() {
        let id = SpiffeId::parse("SPIFFE://td/x").unwrap();
        assert_eq!((id.trust_domain(), id.principal()), ("td", "td/x"));
        assert_eq!(id.to_string(), "SPIFFE://td/x");
        let bare = SpiffeId::parse("spiffe://td").unwrap();
        assert_eq!((bare.trust_domain(), bare.path()), ("td", ""));
    }

    #[test]
    fn the_standards_rules_are_enforced() {
        assert_eq!(problem("https://cluster.local/ns/a"), Problem::Scheme);
        assert_eq!(problem("cluster.local/ns/a"), Problem::Scheme);
        assert_eq!(problem("spiffé"), Problem::Scheme);
        assert_eq!(problem("spiffe://"), Problem::EmptyTrustDomain);
        assert_eq!(problem("spiffe:///ns/a"), Problem::EmptyTrustDomain);
        assert_eq!(
            problem("spiffe://Cluster.local/a"),
            Problem::TrustDomainChar('C')
        );
        assert_eq!(problem("spiffe://td:443/a"), Problem::TrustDomainChar(':'));
        assert_eq!(problem("spiffe://u@td/a"), Problem::TrustDomainChar('@'));
        assert_eq!(problem("spiffe://td/a//b"), Problem::EmptySegment);
        assert_eq!(problem("spiffe://td/a/"), Problem::EmptySegment);
        assert_eq!(problem("spiffe://td/a/../b"), Problem::DotSegment);
        assert_eq!(problem("spiffe://td/a?x=1"), Problem::PathChar('?'));
        assert_eq!(problem("spiffe://td/a%20b"), Problem::PathChar('%'));
        let long = format!("spiffe://td/{}", "a".repeat(MAX_ID_LEN));
        assert_eq!(problem(&long), Problem::TooLong);
        let td = format!("spiffe://{}/a", "a".repeat(256));
        assert_eq!(problem(&td), Problem::TrustDomainTooLong);
        let err = SpiffeId::parse("spiffe://td/a/").unwrap_err().to_string();
        assert!(
            err.starts_with("\"spiffe://td/a/\" is not a SPIFFE ID: "),
            "{err}"
        );
    }

    #[test]
    fn exactly_one_spiffe_uri_san_is_an_identity() {
        let one = ["https://example.org/", ORDER];
        assert_eq!(
            SpiffeId::from_uri_sans(one)
                .map(|i| i.to_string())
                .as_deref(),
            Some(ORDER)
        );
        assert_eq!(SpiffeId::from_uri_sans([ORDER, "spiffe://td/other"]), None);
        assert_eq!(SpiffeId::from_uri_sans(["https://example.org/"]), None);
        assert_eq!(SpiffeId::from_uri_sans(["spiffe://td/bad/"]), None);
    }

    #[test]
    fn a_trust_domain_flag_says_which_form_to_write() {
        assert_eq!(parse_trust_domain("cluster.local"), Ok("cluster.local"));
        let e = parse_trust_domain("spiffe://cluster.local").unwrap_err();
        assert_eq!(e.problem, Problem::UriNotName);
        assert!(e.to_string().ends_with("write it as cluster.local"), "{e}");
        let e = parse_trust_domain("").unwrap_err();
        assert_eq!(e.problem, Problem::EmptyTrustDomain);
        assert!(e.to_string().contains("such as cluster.local"), "{e}");
        let e = parse_trust_domain("cluster.local/ns/a").unwrap_err();
        assert_eq!(e.suggestion.as_deref(), Some("cluster.local"));
    }

    #[test]
    fn trust_domain_names() {
        assert!(is_trust_domain("cluster.local"));
        assert!(is_trust_domain("my_td-1.example"));
        assert!(!is_trust_domain(""));
        assert!(!is_trust_domain("Example.org"));
        assert!(!is_trust_domain("td/x"));
    }
}
