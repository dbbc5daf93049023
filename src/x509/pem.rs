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

#[cfg(test)]
mod tests {
    use super::*;

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
