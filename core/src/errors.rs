//! How an error and its causes are written in one line, for every place
//! that reports an error as text (the Lambda's log, the HTTP and S3 stores'
//! messages, the wasm reader's exceptions, a replica's recorded failure).

use std::error::Error;

/// The error and its causes, `: `-separated as anyhow's `{:#}` prints them,
/// except that a cause whose text a message before it already includes is
/// not repeated (errors that print their source, such as `"{op}: {source}"`,
/// would otherwise show it twice).
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !includes(&text, &message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// Whether `text` includes `part`. A plain scan rather than `str::contains`:
/// error texts are short, and the two-way searcher behind `contains` costs
/// the .wasm reader a kilobyte it has no room for.
fn includes(text: &str, part: &str) -> bool {
    part.is_empty() || text.as_bytes().windows(part.len()).any(|window| window == part.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Link(&'static str, #[source] Option<Box<Link>>);

    fn link(text: &'static str, cause: Option<Link>) -> Link {
        Link(text, cause.map(Box::new))
    }

    #[test]
    fn joins_causes_in_order() {
        let error = link("sync replica", Some(link("get l0/1", Some(link("connection refused", None)))));
        assert_eq!(error_chain(&error), "sync replica: get l0/1: connection refused");
    }

    /// The HTTP and S3 stores' and the wasm reader's copies repeated a
    /// cause the message already printed; the Lambda's did not.
    #[test]
    fn does_not_repeat_a_cause_the_message_includes() {
        let error = link("get l0/1: timed out", Some(link("timed out", None)));
        assert_eq!(error_chain(&error), "get l0/1: timed out");
    }
}
