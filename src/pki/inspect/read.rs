//! Finding the certificates in a file an operator points `pki inspect` at:
//! a PEM bundle or one DER certificate; anything else is named, not guessed.

use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::x509::{looks_like_pem, pem_labels, pem_problem};

const USE_A_CERT: &str = "pass a certificate file such as tls.crt";

/// Returns the DER of every certificate in the file, in order, or what the file
/// holds instead.
pub(super) fn extract_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty".to_string());
    }
    if !looks_like_pem(bytes) {
        // Not PEM: the only other format we accept is one DER certificate, and
        // parsing it is the only reliable way to tell it apart from a DER key.
        return match X509Certificate::from_der(bytes) {
            Ok(_) => Ok(vec![bytes.to_vec()]),
            // 0x30 (SEQUENCE) starts every DER certificate and key; only then is
            // the parser's complaint worth showing.
            Err(e) if bytes.first() == Some(&0x30) => Err(format!(
                "no certificate found (DER data that is not a certificate: {e}); {USE_A_CERT}"
            )),
            Err(_) => Err(format!(
                "no certificate found (the file is neither PEM nor DER); {USE_A_CERT}"
            )),
        };
    }
    let mut certs = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        match section {
            Ok((SectionKind::Certificate, der)) => certs.push(der),
            Ok(_) => {}
            Err(e) => {
                let place = match certs.len() {
                    0 => String::new(),
                    n => format!(" after certificate {n}"),
                };
                return Err(format!("malformed PEM{place}: {}", pem_problem(&e)));
            }
        }
    }
    if certs.is_empty() {
        let held = match pem_labels(bytes).as_slice() {
            [] => "no recognisable PEM blocks".to_string(),
            [one] if one.starts_with(['A', 'E', 'I', 'O', 'U']) => format!("an {one} PEM block"),
            [one] => format!("a {one} PEM block"),
            many => format!("PEM blocks {}", many.join(", ")),
        };
        return Err(format!(
            "no certificate found (the file holds {held}); {USE_A_CERT}"
        ));
    }
    Ok(certs)
}
