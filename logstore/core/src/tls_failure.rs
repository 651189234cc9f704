//! Recognising a failed TLS handshake in a foreign error chain, so etcd and object-storage errors can
//! say "the certificate was refused" instead of "unreachable". Generic over the TLS library's error
//! type (`rustls::Error` for the callers) so this crate stays free of TLS dependencies.

use std::error::Error as StdError;

/// The TLS library's reason when `err` (or anything in its source chain) is a `T` (e.g. `rustls::Error`).
/// `io::Error` hides a wrapped error from `source()`, so its inner error is looked at explicitly.
pub fn tls_cause<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<T>() {
            return Some(tls.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(reason) = tls_cause::<T>(inner) {
                return Some(reason);
            }
            // tokio-rustls reports an alert from the peer (a client certificate the server refused, seen
            // only after a TLS 1.3 handshake completed) as an io::Error carrying rustls' message as text.
            let text = inner.to_string();
            if io.kind() == std::io::ErrorKind::InvalidData && text.starts_with("received fatal alert") {
                return Some(text);
            }
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_cause_sees_through_io_errors() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        assert!(tls_cause::<rustls::Error>(&io).unwrap().contains("UnknownIssuer"));
        assert_eq!(tls_cause::<rustls::Error>(&std::io::Error::other("refused")), None);
        let alert = std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: BadCertificate");
        assert_eq!(tls_cause::<rustls::Error>(&alert).as_deref(), Some("received fatal alert: BadCertificate"));
    }
}
