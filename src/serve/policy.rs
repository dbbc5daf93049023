//! Authorization policy of certshift's reference mTLS service.
//!
//! This module owns the policy file format (TOML, modelled on Istio's
//! `AuthorizationPolicy` with `action: ALLOW`), its validation at load time,
//! and the per-request decision [`Policy::allows`]. It never does I/O other
//! than reading the policy file in [`Policy::load`], never inspects
//! certificates (callers hand it an already-verified principal, see
//! [`SpiffeId::principal`]), and never reloads itself: a [`Policy`] is
//! immutable, so hot reload means building a new one and swapping it in.
//!
//! ```toml
//! [[rules]]
//! paths = ["/api/payment/*"]
//! methods = ["POST", "GET"]
//! principals = ["cluster.local/ns/production/sa/order-service"]
//! ```
//!
//! Semantics follow Istio:
//! - a request is allowed if ANY rule matches; a rule matches when every field
//!   it sets matches (absent or empty list = any value) and none of its
//!   `not_*` lists match;
//! - patterns are exact, prefix (`/api/*`), suffix (`*.html`) or presence
//!   (`*`, "any non-empty value"); `*` anywhere else is rejected because Istio
//!   has no such match and a silent glob reinterpretation would widen access;
//! - a policy with zero rules denies everything, as an Istio ALLOW policy
//!   with no rules does. Parsing such a file is valid on purpose: "deny all"
//!   is a legitimate configuration for negative tests. But an empty file is
//!   far more often a half-written or truncated one, so the service takes
//!   it only when asked explicitly ([`Policy::require_rules`]).
//!
//! Over 600 lines on purpose: more than half is the tests of the policy
//! contract (file format, error messages, Istio semantics), kept beside the
//! ~300 lines they pin down.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::spiffe::SpiffeId;

/// Why a policy could not be loaded. Every variant names the source so the
/// message is actionable on its own in a log line.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {}: cannot read file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax error, unknown field or wrong type; `message` is toml's
    /// own text, which carries the line/column and a snippet.
    #[error("policy {source_name}: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    /// A well-formed file with a value that cannot be a valid pattern.
    /// `location` is e.g. `rules[2].paths[0]`: the rule number is 1-based (the
    /// Nth `[[rules]]` table in the file), the entry index is 0-based.
    /// `message` starts with the offending value and ends with the fix.
    #[error("policy {source_name}: {location} {message}")]
    Invalid {
        source_name: String,
        location: String,
        message: String,
    },
    /// A file without any rule: it would deny every request.
    #[error("policy {}: no [[rules]], so every request would be denied (403); add a rule, or pass --allow-empty-policy if deny-all is meant", path.display())]
    NoRules { path: PathBuf },
}

/// Raw file shape. `deny_unknown_fields` turns typos such as `[[rule]]`,
/// `path =` or `principal =` into load errors instead of rules that silently
/// match everything because the intended field was ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rules: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    not_paths: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    not_methods: Vec<String>,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    not_principals: Vec<String>,
}

/// A precompiled Istio string match. Matching only borrows, so `allows`
/// never allocates.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// `*`: any non-empty value (Istio "presence" match).
    Any,
    Exact(Box<str>),
    /// `abc*`: value starts with `abc`.
    Prefix(Box<str>),
    /// `*abc`: value ends with `abc`.
    Suffix(Box<str>),
}

impl Pattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => !value.is_empty(),
            Pattern::Exact(s) => value == &**s,
            Pattern::Prefix(s) => value.starts_with(&**s),
            Pattern::Suffix(s) => value.ends_with(&**s),
        }
    }
}

fn any_matches(patterns: &[Pattern], value: &str) -> bool {
    patterns.iter().any(|p| p.matches(value))
}

/// Field kinds differ only in validation; matching is shared.
#[derive(Clone, Copy)]
enum Kind {
    Path,
    Method,
    Principal,
}

/// Parse one raw entry. `Err` is the message tail after the quoted value.
fn compile(kind: Kind, raw: &str) -> Result<Pattern, String> {
    if raw.is_empty() {
        return Err("an empty string matches nothing; remove it, or use \"*\" for any".into());
    }
    if raw.chars().any(char::is_whitespace) {
        return Err("contains whitespace; remove it (patterns are compared byte for byte)".into());
    }
    // Checked before wildcard parsing so `spiffe://td/*` gets this hint too.
    if let Kind::Principal = kind {
        if SpiffeId::has_scheme(raw) {
            return Err("write principals in Istio form without spiffe://, \
                        e.g. cluster.local/ns/production/sa/order-service"
                .into());
        }
    }
    let pattern = if raw == "*" {
        Pattern::Any
    } else if let Some(rest) = raw.strip_suffix('*') {
        no_inner_star(rest)?;
        Pattern::Prefix(rest.into())
    } else if let Some(rest) = raw.strip_prefix('*') {
        no_inner_star(rest)?;
        Pattern::Suffix(rest.into())
    } else {
        no_inner_star(raw)?;
        Pattern::Exact(raw.into())
    };
    match kind {
        Kind::Path => check_path(raw, &pattern)?,
        Kind::Method => check_method(raw, &pattern)?,
        Kind::Principal => {}
    }
    Ok(pattern)
}

fn no_inner_star(rest: &str) -> Result<(), String> {
    if rest.contains('*') {
        return Err(
            "\"*\" is only allowed alone, at the start (suffix match) or at the \
                    end (prefix match), as in Istio; use one prefix or suffix pattern, \
                    or list the exact values"
                .into(),
        );
    }
    Ok(())
}

fn check_path(raw: &str, pattern: &Pattern) -> Result<(), String> {
    // Requests are matched without their query string, so a `?` in a pattern
    // could never match; say so rather than deny silently.
    if raw.contains('?') {
        return Err("paths are matched without the query string; remove the \"?...\" part".into());
    }
    match pattern {
        Pattern::Exact(s) | Pattern::Prefix(s) if !s.starts_with('/') => {
            Err("a path must start with \"/\" or be \"*\" (or \"*suffix\")".into())
        }
        _ => Ok(()),
    }
}

fn check_method(raw: &str, pattern: &Pattern) -> Result<(), String> {
    match pattern {
        Pattern::Any => Ok(()),
        Pattern::Prefix(_) | Pattern::Suffix(_) => {
            Err("methods are exact names such as \"GET\", or \"*\" for any".into())
        }
        // Methods are case-sensitive (RFC 9110) and real clients send them
        // uppercase, so a lowercase entry would be a rule that never matches.
        Pattern::Exact(_) if raw.bytes().any(|b| b.is_ascii_lowercase()) => Err(format!(
            "HTTP methods are case-sensitive; write {:?}",
            raw.to_ascii_uppercase()
        )),
        Pattern::Exact(_) if !raw.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') => {
            Err("is not an HTTP method name; use e.g. \"GET\", \"POST\" or \"*\"".into())
        }
        Pattern::Exact(_) => Ok(()),
    }
}

#[derive(Clone, Debug)]
struct Rule {
    paths: Vec<Pattern>,
    not_paths: Vec<Pattern>,
    methods: Vec<Pattern>,
    not_methods: Vec<Pattern>,
    principals: Vec<Pattern>,
    not_principals: Vec<Pattern>,
}

impl Rule {
    fn matches(&self, method: &str, path: &str, principal: Option<&str>) -> bool {
        let positive = |set: &[Pattern], value: &str| set.is_empty() || any_matches(set, value);
        // No principal: a rule that sets `principals` (even `*`) requires an
        // authenticated peer, and `not_principals` cannot exclude what is
        // absent; exactly Istio's behaviour.
        let principal_ok = match principal {
            Some(p) => positive(&self.principals, p) && !any_matches(&self.not_principals, p),
            None => self.principals.is_empty(),
        };
        principal_ok
            && positive(&self.methods, method)
            && !any_matches(&self.not_methods, method)
            && positive(&self.paths, path)
            && !any_matches(&self.not_paths, path)
    }
}

/// A loaded, validated, immutable authorization policy.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Parse and validate policy text. `source_name` (usually the file path)
    /// only labels error messages.
    ///
    /// A file without any `[[rules]]` is valid and yields a deny-all policy.
    pub fn from_toml_str(source_name: &str, text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            source_name: source_name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let rules = file
            .rules
            .iter()
            .enumerate()
            .map(|(i, raw)| compile_rule(source_name, i + 1, raw))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { rules })
    }

    /// Read and parse a policy file; errors are labelled with `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::from_toml_str(&path.display().to_string(), &text)
    }

    /// Per-request decision; allocation-free.
    ///
    /// `path` may carry a query string, which is ignored. `principal` is the
    /// authenticated peer in Istio form (see [`SpiffeId::principal`]);
    /// pass `None` for plaintext or a peer without a client certificate.
    /// `Some("")` is treated like `None` because there is no identity in it.
    pub fn allows(&self, method: &str, path: &str, principal: Option<&str>) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        // Patterns are never empty and `*` needs a non-empty value, so this
        // only states the intent; it keeps `Some("")` from ever matching.
        let principal = principal.filter(|p| !p.is_empty());
        self.rules
            .iter()
            .any(|r| r.matches(method, path, principal))
    }

    /// This policy, unless it has no rule and `allow_empty` is false: a
    /// deny-all policy must be asked for, since an empty or truncated file
    /// would otherwise turn a service into a wall of 403s.
    pub fn require_rules(self, path: &Path, allow_empty: bool) -> Result<Policy, PolicyError> {
        if self.rules.is_empty() && !allow_empty {
            return Err(PolicyError::NoRules {
                path: path.to_path_buf(),
            });
        }
        Ok(self)
    }

    /// Number of rules; zero means the policy denies every request.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

fn compile_rule(source_name: &str, number: usize, raw: &RuleFile) -> Result<Rule, PolicyError> {
    let field = |name: &str, kind: Kind, entries: &[String]| {
        entries
            .iter()
            .enumerate()
            .map(|(j, entry)| {
                compile(kind, entry).map_err(|why| PolicyError::Invalid {
                    source_name: source_name.to_owned(),
                    location: format!("rules[{number}].{name}[{j}]"),
                    message: format!("{entry:?}: {why}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Rule {
        paths: field("paths", Kind::Path, &raw.paths)?,
        not_paths: field("not_paths", Kind::Path, &raw.not_paths)?,
        methods: field("methods", Kind::Method, &raw.methods)?,
        not_methods: field("not_methods", Kind::Method, &raw.not_methods)?,
        principals: field("principals", Kind::Principal, &raw.principals)?,
        not_principals: field("not_principals", Kind::Principal, &raw.not_principals)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = "cluster.local/ns/production/sa/order-service";
    const INVENTORY: &str = "cluster.local/ns/production/sa/inventory-service";

    const CONTRACT: &str = r#"
[[rules]]
paths = ["/api/payment/*"]
methods = ["POST", "GET"]
principals = ["cluster.local/ns/production/sa/order-service"]
"#;

    fn policy(text: &str) -> Policy {
        match Policy::from_toml_str("test.toml", text) {
            Ok(p) => p,
            Err(e) => panic!("policy should load: {e}"),
        }
    }

    /// Loads `text`, expects `Invalid`, checks the location and that the
    /// message mentions `needle`; returns the full display string.
    fn invalid(text: &str, want_location: &str, needle: &str) -> String {
        let err = Policy::from_toml_str("./p.toml", text).expect_err("policy should be rejected");
        let display = err.to_string();
        match err {
            PolicyError::Invalid {
                source_name,
                location,
                message,
            } => {
                assert_eq!(source_name, "./p.toml");
                assert_eq!(location, want_location);
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        display
    }

    fn syntax(text: &str, needle: &str) -> String {
        match Policy::from_toml_str("./p.toml", text) {
            Err(e @ PolicyError::Syntax { .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with("policy ./p.toml: "), "{msg}");
                assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
                msg
            }
            other => panic!("expected Syntax, got {other:?}"),
        }
    }

    #[test]
    fn contract_example() {
        let p = policy(CONTRACT);
        assert_eq!(p.rule_count(), 1);
        assert!(p.allows("POST", "/api/payment/process", Some(ORDER)));
        assert!(p.allows("GET", "/api/payment/process", Some(ORDER)));
        assert!(!p.allows("POST", "/api/payment/process", Some(INVENTORY)));
        assert!(!p.allows("DELETE", "/api/payment/process", Some(ORDER)));
        assert!(!p.allows("POST", "/api/paymentX", Some(ORDER)));
        assert!(!p.allows("POST", "/api/payment", Some(ORDER)));
        assert!(!p.allows("POST", "/api/payment/process", None));
    }

    #[test]
    fn prefix_path_includes_trailing_slash_and_ignores_query() {
        let p = policy(CONTRACT);
        assert!(p.allows("GET", "/api/payment/", Some(ORDER)));
        assert!(!p.allows("GET", "/v1/api/payment/x", Some(ORDER)));
        assert!(p.allows("GET", "/api/payment/process?id=7&x=*", Some(ORDER)));
        // The query string must not be able to satisfy a path match.
        assert!(!p.allows("GET", "/api?p=/api/payment/x", Some(ORDER)));
    }

    #[test]
    fn methods_are_case_sensitive_and_star_matches_any() {
        let p = policy(CONTRACT);
        assert!(!p.allows("post", "/api/payment/process", Some(ORDER)));
        let any = policy("[[rules]]\nmethods = [\"*\"]\n");
        assert!(any.allows("PATCH", "/", None));
        assert!(!any.allows("", "/", None));
    }

    #[test]
    fn exact_suffix_and_any_paths() {
        let p = policy("[[rules]]\npaths = [\"/healthz\", \"*.html\"]\n");
        assert!(p.allows("GET", "/healthz", None));
        assert!(!p.allows("GET", "/healthz/", None));
        assert!(!p.allows("GET", "/healthzz", None));
        assert!(p.allows("GET", "/healthz?verbose=1", None));
        assert!(p.allows("GET", "/docs/index.html", None));
        assert!(!p.allows("GET", "/docs/index.htm", None));
        assert!(!p.allows("GET", "/docs/index.html.bak", None));
        let any = policy("[[rules]]\npaths = [\"*\"]\n");
        assert!(any.allows("GET", "/anything/at/all", None));
    }

    #[test]
    fn no_principal_matches_only_rules_without_principals() {
        let open = policy("[[rules]]\npaths = [\"/public/*\"]\n");
        assert!(open.allows("GET", "/public/a", None));
        assert!(open.allows("GET", "/public/a", Some(ORDER)));
        let empty_list = policy("[[rules]]\nprincipals = []\n");
        assert!(empty_list.allows("GET", "/", None));
        assert!(!policy(CONTRACT).allows("GET", "/api/payment/x", None));
    }

    #[test]
    fn star_principal_requires_authenticated_peer() {
        let p = policy("[[rules]]\nprincipals = [\"*\"]\n");
        assert!(p.allows("GET", "/", Some(INVENTORY)));
        assert!(!p.allows("GET", "/", None));
        assert!(!p.allows("GET", "/", Some("")));
    }

    #[test]
    fn prefix_and_suffix_principals() {
        let p = policy("[[rules]]\nprincipals = [\"cluster.local/ns/production/*\"]\n");
        assert!(p.allows("GET", "/", Some(ORDER)));
        assert!(!p.allows(
            "GET",
            "/",
            Some("cluster.local/ns/staging/sa/order-service")
        ));
        let s = policy("[[rules]]\nprincipals = [\"*/sa/order-service\"]\n");
        assert!(s.allows("GET", "/", Some(ORDER)));
        assert!(s.allows("GET", "/", Some("other.domain/ns/dev/sa/order-service")));
        assert!(!s.allows("GET", "/", Some(INVENTORY)));
    }

    #[test]
    fn not_fields_exclude() {
        let p = policy(
            r#"
[[rules]]
paths = ["/api/*"]
not_paths = ["/api/admin/*"]
not_methods = ["DELETE"]
not_principals = ["*/sa/inventory-service"]
"#,
        );
        assert!(p.allows("GET", "/api/orders", Some(ORDER)));
        assert!(!p.allows("GET", "/api/admin/users", Some(ORDER)));
        assert!(!p.allows("DELETE", "/api/orders", Some(ORDER)));
        assert!(!p.allows("GET", "/api/orders", Some(INVENTORY)));
        // An absent principal cannot match not_principals (Istio semantics).
        assert!(p.allows("GET", "/api/orders", None));
    }

    #[test]
    fn not_principals_star_admits_only_unauthenticated() {
        let p = policy("[[rules]]\nnot_principals = [\"*\"]\n");
        assert!(p.allows("GET", "/", None));
        assert!(!p.allows("GET", "/", Some(ORDER)));
    }

    #[test]
    fn multiple_rules_are_ored() {
        let p = policy(
            r#"
[[rules]]
paths = ["/api/payment/*"]
principals = ["cluster.local/ns/production/sa/order-service"]

[[rules]]
paths = ["/api/stock/*"]
methods = ["GET"]
principals = ["cluster.local/ns/production/sa/inventory-service"]
"#,
        );
        assert_eq!(p.rule_count(), 2);
        assert!(p.allows("POST", "/api/payment/x", Some(ORDER)));
        assert!(p.allows("GET", "/api/stock/1", Some(INVENTORY)));
        assert!(!p.allows("GET", "/api/stock/1", Some(ORDER)));
        assert!(!p.allows("POST", "/api/stock/1", Some(INVENTORY)));
        assert!(!p.allows("GET", "/api/payment/x", Some(INVENTORY)));
    }

    #[test]
    fn empty_rule_allows_everything() {
        let p = policy("[[rules]]\n");
        assert!(p.allows("GET", "/", None));
        assert!(p.allows("PUT", "/x", Some(ORDER)));
    }

    #[test]
    fn zero_rules_deny_everything() {
        for text in ["", "# nothing here\n", "rules = []\n"] {
            let p = policy(text);
            assert_eq!(p.rule_count(), 0);
            assert!(!p.allows("GET", "/", None));
            assert!(!p.allows("GET", "/", Some(ORDER)));
        }
    }

    #[test]
    fn error_path_must_start_with_slash() {
        let msg = invalid(
            "[[rules]]\npaths = [\"/ok\"]\n[[rules]]\npaths = [\"api/x\"]\n",
            "rules[2].paths[0]",
            "must start with \"/\"",
        );
        assert!(
            msg.starts_with(r#"policy ./p.toml: rules[2].paths[0] "api/x": a path must start"#),
            "{msg}"
        );
        invalid(
            "[[rules]]\nnot_paths = [\"/a\", \"b*\"]\n",
            "rules[1].not_paths[1]",
            "\"/\"",
        );
    }

    #[test]
    fn error_spiffe_principal_has_hint() {
        let msg = invalid(
            "[[rules]]\nprincipals = [\"spiffe://cluster.local/ns/production/sa/order-service\"]\n",
            "rules[1].principals[0]",
            "without spiffe://",
        );
        assert!(
            msg.contains("e.g. cluster.local/ns/production/sa/order-service"),
            "{msg}"
        );
        invalid(
            "[[rules]]\nnot_principals = [\"SPIFFE://cluster.local/*\"]\n",
            "rules[1].not_principals[0]",
            "without spiffe://",
        );
    }

    #[test]
    fn error_empty_strings() {
        invalid("[[rules]]\npaths = [\"\"]\n", "rules[1].paths[0]", "empty");
        invalid(
            "[[rules]]\nmethods = [\"\"]\n",
            "rules[1].methods[0]",
            "empty",
        );
        invalid(
            "[[rules]]\nprincipals = [\"\"]\n",
            "rules[1].principals[0]",
            "empty",
        );
    }

    #[test]
    fn error_star_in_middle_or_both_ends() {
        invalid(
            "[[rules]]\npaths = [\"/api/*/x\"]\n",
            "rules[1].paths[0]",
            "\"*\" is only allowed",
        );
        invalid(
            "[[rules]]\npaths = [\"**\"]\n",
            "rules[1].paths[0]",
            "\"*\" is only allowed",
        );
        invalid(
            "[[rules]]\nprincipals = [\"*/ns/production/*\"]\n",
            "rules[1].principals[0]",
            "\"*\" is only allowed",
        );
        invalid(
            "[[rules]]\nprincipals = [\"cluster.local/ns/*/sa/x\"]\n",
            "rules[1].principals[0]",
            "\"*\" is only allowed",
        );
    }

    #[test]
    fn error_bad_methods() {
        invalid(
            "[[rules]]\nmethods = [\"post\"]\n",
            "rules[1].methods[0]",
            "write \"POST\"",
        );
        invalid(
            "[[rules]]\nmethods = [\"GE*\"]\n",
            "rules[1].methods[0]",
            "exact names",
        );
        invalid(
            "[[rules]]\nmethods = [\"*ET\"]\n",
            "rules[1].methods[0]",
            "exact names",
        );
        invalid(
            "[[rules]]\nnot_methods = [\"GET/1\"]\n",
            "rules[1].not_methods[0]",
            "HTTP method",
        );
    }

    #[test]
    fn error_query_and_whitespace() {
        invalid(
            "[[rules]]\npaths = [\"/a?b=1\"]\n",
            "rules[1].paths[0]",
            "query string",
        );
        invalid(
            "[[rules]]\npaths = [\"/a \"]\n",
            "rules[1].paths[0]",
            "whitespace",
        );
    }

    #[test]
    fn error_unknown_fields_are_syntax_errors_with_position() {
        let msg = syntax(
            "[[rules]]\nprincipal = [\"x\"]\n",
            "unknown field `principal`",
        );
        assert!(msg.contains("line 2"), "{msg}");
        syntax("[[rules]]\npath = [\"/x\"]\n", "unknown field `path`");
        syntax("[[rule]]\npaths = [\"/x\"]\n", "unknown field `rule`");
    }

    #[test]
    fn error_toml_syntax_and_types() {
        let msg = syntax("[[rules]]\npaths = [\"/x\"\n", "line");
        assert!(msg.contains("column"), "{msg}");
        syntax("[[rules]]\npaths = \"/x\"\n", "invalid type");
    }

    #[test]
    fn load_reads_file_and_reports_read_errors() {
        let dir = std::env::temp_dir().join(format!("certshift-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let good = dir.join("good.toml");
        std::fs::write(&good, CONTRACT).expect("write");
        let p = Policy::load(&good).expect("load");
        assert!(p.allows("GET", "/api/payment/x", Some(ORDER)));

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[rules]]\npaths = [\"x\"]\n").expect("write");
        match Policy::load(&bad) {
            Err(PolicyError::Invalid { source_name, .. }) => {
                assert_eq!(source_name, bad.display().to_string())
            }
            other => panic!("expected Invalid, got {other:?}"),
        }

        let missing = dir.join("missing.toml");
        match Policy::load(&missing) {
            Err(e @ PolicyError::Read { .. }) => {
                assert!(e.to_string().contains("missing.toml"), "{e}");
            }
            other => panic!("expected Read, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn spiffe_id_to_principal() {
        // The principal the policy sees for a peer's SPIFFE ID.
        let principal_from_spiffe_id =
            |id: &str| SpiffeId::parse(id).ok().map(|i| i.principal().to_string());
        assert_eq!(
            principal_from_spiffe_id(&format!("spiffe://{ORDER}")).as_deref(),
            Some(ORDER)
        );
        assert_eq!(
            principal_from_spiffe_id("SPIFFE://td/x").as_deref(),
            Some("td/x")
        );
        assert_eq!(principal_from_spiffe_id("https://cluster.local/ns/a"), None);
        assert_eq!(principal_from_spiffe_id(ORDER), None);
        assert_eq!(principal_from_spiffe_id("spiffe://"), None);
        assert_eq!(principal_from_spiffe_id("spiffe:///ns/a"), None);
        assert_eq!(principal_from_spiffe_id("spiffé"), None);
    }
}
