//! Error messages with their causes, in one format for every reader.

/// An error and every cause under it, joined with `": "` as the native CLI
/// prints them (anyhow's `{:#}`), so the native and wasm readers and the
/// stores report a failure in the same words.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_follow_the_error() {
        let inner = std::io::Error::other("connection reset");
        let outer = crate::store::StoreError::Io { op: "get", key: "k".into(), source: inner };
        let text = super::error_chain(&outer);
        assert!(text.ends_with(": connection reset"), "{text}");
    }
}
