//! What a PEM file says it holds, read from its `-----BEGIN X-----` lines.

/// The labels of all `-----BEGIN X-----` lines, in order and without
/// repeats, including ones the PEM parser skips (e.g. "ENCRYPTED PRIVATE
/// KEY"), so an error can say what a wrong file is.
pub fn pem_labels(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut labels: Vec<String> = Vec::new();
    for line in text.lines() {
        let label = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"));
        match label {
            Some(l) if !labels.iter().any(|seen| seen == l) => labels.push(l.to_string()),
            _ => {}
        }
    }
    labels
}

/// Whether the bytes contain a PEM `BEGIN` line at all (PEM, as opposed to DER).
pub fn looks_like_pem(bytes: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN ";
    bytes.windows(BEGIN.len()).any(|w| w == BEGIN)
}

/// A PEM parsing error for people. pki-types prints its byte vectors with
/// `{:?}` (`missing section end marker: [67, 69, 82, …]`); this names the
/// marker as text and says what most likely happened. The caller names the
/// file.
pub fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "the PEM block has no \"-----END {}-----\" line: the file is truncated (cut off, or still being written)",
            String::from_utf8_lossy(end_marker).trim()
        ),
        Error::IllegalSectionStart { line } => format!(
            "bad PEM BEGIN line {:?}",
            String::from_utf8_lossy(line).trim()
        ),
        Error::Base64Decode(detail) => {
            format!("the base64 inside a PEM block is corrupt ({detail}); the file may be damaged")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_block_is_named_as_text() {
        use rustls_pki_types::pem::PemObject;
        let cut = "-----BEGIN CERTIFICATE-----\nMIIB\n";
        let e = rustls_pki_types::CertificateDer::from_pem_slice(cut.as_bytes()).unwrap_err();
        let text = pem_problem(&e);
        assert!(
            text.contains("\"-----END CERTIFICATE-----\"") && text.contains("truncated"),
            "{text}"
        );
        assert!(!text.contains("[67"), "{text}");
    }

    #[test]
    fn labels_in_order_without_repeats() {
        let text = "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN ENCRYPTED PRIVATE KEY-----\nAA\n-----END ENCRYPTED PRIVATE KEY-----\n\
                    -----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            pem_labels(text.as_bytes()),
            ["CERTIFICATE", "ENCRYPTED PRIVATE KEY"]
        );
        assert!(pem_labels(b"\x30\x82 der").is_empty());
        assert!(looks_like_pem(text.as_bytes()));
        assert!(!looks_like_pem(b"\x30\x82 der"));
    }
}
