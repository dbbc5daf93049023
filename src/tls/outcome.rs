//! What happened to one connection attempt, in one vocabulary shared by the
//! proxy, the load generator, the audit and the demo.
//!
//! A connection is `ok` only on positive evidence (an HTTP response, data
//! received); a TLS 1.3 server rejects a client certificate *after* the
//! client's handshake has completed, so a finished handshake proves nothing.

use std::fmt;
use std::io;

use rustls::AlertDescription;

/// The observed result of a connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Accepted, with evidence but no HTTP status (e.g. raw data received).
    Ok,
    /// Accepted at the TLS layer; the first HTTP response had this status.
    Http(u16),
    /// The peer sent this TLS alert (RFC 8446 name, e.g. `unknown_ca`).
    Alert(String),
    /// Our own verification of the peer's certificate failed.
    Verify(String),
    ConnectRefused,
    ConnectTimeout,
    HandshakeTimeout,
    /// No answer within the operation's timeout after the handshake.
    Timeout,
    Reset,
    /// The peer closed the connection without an alert or a response.
    ClosedEarly,
    /// A TLS failure that is neither an alert nor a verification failure.
    Tls(String),
    /// Any other I/O error.
    Io(String),
    /// The downstream client left before anything came back; the service
    /// was never asked to decide.
    ClientClosed,
    /// We ended the connection ourselves (rotation policy, shutdown).
    Cancelled,
    /// Our own side could not try: e.g. `fd_exhausted`, this process (or
    /// the system) out of file descriptors. Says nothing about the service.
    Local(String),
}

/// What an outcome says about the service's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The service let the request through.
    Accepted,
    /// The service refused: a TLS alert, an authorization status, or a reset
    /// or close once the connection was up.
    Refused,
    /// Nothing was learned about the service's decision: it could not be
    /// reached, timed out, or our own side failed. Never counts as a refusal.
    Inconclusive,
}

impl Outcome {
    /// Did the service let the request through? 401/403 are authorization
    /// refusals (a service that says "RBAC: access denied" did reject the
    /// peer); 400/495/496 are what nginx answers for a bad client certificate.
    pub fn accepted(&self) -> bool {
        self.verdict() == Verdict::Accepted
    }

    /// Outcomes that say nothing about the service: not counted as a wrong
    /// verdict either way.
    pub fn not_judged(&self) -> bool {
        matches!(self, Outcome::ClientClosed | Outcome::Cancelled)
    }

    pub fn verdict(&self) -> Verdict {
        match self {
            Outcome::Ok => Verdict::Accepted,
            Outcome::Http(400 | 401 | 403 | 495 | 496) => Verdict::Refused,
            Outcome::Http(_) => Verdict::Accepted,
            Outcome::Alert(_) | Outcome::Reset | Outcome::ClosedEarly => Verdict::Refused,
            Outcome::Verify(_)
            | Outcome::ConnectRefused
            | Outcome::ConnectTimeout
            | Outcome::HandshakeTimeout
            | Outcome::Timeout
            | Outcome::Tls(_)
            | Outcome::Io(_)
            | Outcome::ClientClosed
            | Outcome::Cancelled
            | Outcome::Local(_) => Verdict::Inconclusive,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Http(s) => write!(f, "http:{s}"),
            Outcome::Alert(a) => write!(f, "alert:{a}"),
            Outcome::Verify(r) => write!(f, "verify:{r}"),
            Outcome::ConnectRefused => f.write_str("connect_refused"),
            Outcome::ConnectTimeout => f.write_str("connect_timeout"),
            Outcome::HandshakeTimeout => f.write_str("handshake_timeout"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Reset => f.write_str("reset"),
            Outcome::ClosedEarly => f.write_str("closed_early"),
            Outcome::Tls(e) => write!(f, "tls:{e}"),
            Outcome::Io(e) => write!(f, "io:{e}"),
            Outcome::ClientClosed => f.write_str("client_closed"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::Local(why) => write!(f, "local:{why}"),
        }
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Classify an I/O error, looking through to a rustls error inside it.
pub fn classify_io(e: &io::Error) -> Outcome {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return classify_rustls(tls);
    }
    if fd_exhausted(e) {
        return Outcome::Local("fd_exhausted".into());
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::ConnectRefused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Outcome::Reset,
        io::ErrorKind::UnexpectedEof => Outcome::ClosedEarly,
        io::ErrorKind::TimedOut => Outcome::Timeout,
        _ => Outcome::Io(snake(&e.kind().to_string())),
    }
}

/// Is this error the process (EMFILE) or the system (ENFILE) out of file
/// descriptors? Then nothing was asked of the peer.
pub fn fd_exhausted(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::MFILE.raw_os_error())
        || code == Some(rustix::io::Errno::NFILE.raw_os_error())
}

pub fn classify_rustls(e: &rustls::Error) -> Outcome {
    match e {
        rustls::Error::AlertReceived(a) => Outcome::Alert(alert_name(*a)),
        // Our own verifiers use this for "chain fine, identity wrong".
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ) => Outcome::Verify("identity_mismatch".into()),
        rustls::Error::InvalidCertificate(c) => Outcome::Verify(snake(&format!("{c:?}"))),
        other => Outcome::Tls(snake(&format!("{other:?}"))),
    }
}

/// The RFC name of a TLS alert (`unknown_ca`, `certificate_required`, ...).
pub fn alert_name(a: AlertDescription) -> String {
    use AlertDescription as A;
    let name = match a {
        A::CloseNotify => "close_notify",
        A::UnexpectedMessage => "unexpected_message",
        A::BadRecordMac => "bad_record_mac",
        A::DecryptionFailed => "decryption_failed",
        A::RecordOverflow => "record_overflow",
        A::DecompressionFailure => "decompression_failure",
        A::HandshakeFailure => "handshake_failure",
        A::NoCertificate => "no_certificate",
        A::BadCertificate => "bad_certificate",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::CertificateRevoked => "certificate_revoked",
        A::CertificateExpired => "certificate_expired",
        A::CertificateUnknown => "certificate_unknown",
        A::IllegalParameter => "illegal_parameter",
        A::UnknownCA => "unknown_ca",
        A::AccessDenied => "access_denied",
        A::DecodeError => "decode_error",
        A::DecryptError => "decrypt_error",
        A::ExportRestriction => "export_restriction",
        A::ProtocolVersion => "protocol_version",
        A::InsufficientSecurity => "insufficient_security",
        A::InternalError => "internal_error",
        A::InappropriateFallback => "inappropriate_fallback",
        A::UserCanceled => "user_canceled",
        A::NoRenegotiation => "no_renegotiation",
        A::MissingExtension => "missing_extension",
        A::UnsupportedExtension => "unsupported_extension",
        A::CertificateUnobtainable => "certificate_unobtainable",
        A::UnrecognisedName => "unrecognized_name",
        A::BadCertificateStatusResponse => "bad_certificate_status_response",
        A::BadCertificateHashValue => "bad_certificate_hash_value",
        A::UnknownPSKIdentity => "unknown_psk_identity",
        A::CertificateRequired => "certificate_required",
        A::NoApplicationProtocol => "no_application_protocol",
        A::EncryptedClientHelloRequired => "ech_required",
        other => return format!("alert_{}", u8::from(other)),
    };
    name.to_string()
}

/// `UnknownIssuer` → `unknown_issuer`; `entity not found` → `entity_not_found`.
/// Only the leading identifier is kept, so payloads never leak into labels.
fn snake(s: &str) -> String {
    let head: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == ' ' || *c == '_')
        .collect();
    let mut out = String::new();
    for (i, c) in head.trim().chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else if c == ' ' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_inside_io_errors_are_named() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        assert_eq!(classify_io(&e).to_string(), "alert:unknown_ca");
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(classify_io(&e).to_string(), "verify:unknown_issuer");
        assert_eq!(
            classify_io(&io::ErrorKind::ConnectionReset.into()),
            Outcome::Reset
        );
        assert_eq!(
            classify_io(&io::ErrorKind::UnexpectedEof.into()),
            Outcome::ClosedEarly
        );
    }

    #[test]
    fn only_evidence_of_service_counts_as_accepted() {
        assert!(
            Outcome::Http(200).accepted()
                && Outcome::Http(404).accepted()
                && Outcome::Ok.accepted()
        );
        assert!(!Outcome::Http(403).accepted());
        assert!(
            !Outcome::ClosedEarly.accepted() && !Outcome::Alert("unknown_ca".into()).accepted()
        );
    }
}
