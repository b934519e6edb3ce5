//! What a read-only HTTP origin's answers mean, whatever server sends them:
//! shared by the native HTTP store and the wasm reader's `fetch` store.
//!
//! Readers never write, so they need no compare-and-swap, only a way to ask
//! "has this object changed since I read it?". A store publishes a version
//! token ([`ETag`]) with every read; here it is, by what the server sends:
//!
//! | the server sends | the token | the conditional read |
//! |---|---|---|
//! | `ETag` (strong or weak, `W/"…"`) | the ETag | `If-None-Match` |
//! | only `Last-Modified`, older than the response's `Date` | `last-modified:<date>` | `If-Modified-Since` |
//! | neither (or a `Last-Modified` in the current second) | `content:<hash of the body>` | a full read, compared here |
//!
//! `Last-Modified` has one-second resolution: two writes within the second
//! of a read carry the same date, so a poll asking "modified since?" would
//! miss the second one for good. It is trusted only when the response's
//! `Date` is later than it by at least [`LAST_MODIFIED_SETTLED`]: any change
//! after that read gets a later date. Synthetic tokens cannot be confused
//! with ETags, which are always quoted.

use std::time::Duration;

use super::types::ETag;

const LAST_MODIFIED: &str = "last-modified:";
const CONTENT: &str = "content:";

/// How much older than the response's `Date` a `Last-Modified` must be
/// before it can stand in for an ETag (a margin over its one-second
/// resolution).
pub const LAST_MODIFIED_SETTLED: Duration = Duration::from_secs(2);

/// Objects without an ETag or a settled `Last-Modified` up to this size
/// get a content token (their body is hashed as it is read); larger ones
/// (segments, snapshots) get none, and nobody polls them.
pub const CONTENT_TOKEN_MAX_BYTES: u64 = 1 << 20;

/// The version token a response's headers give, if any (see the module).
pub fn token_from_headers(etag: Option<&str>, last_modified: Option<&str>, date: Option<&str>) -> Option<ETag> {
    if let Some(etag) = etag.filter(|e| !e.is_empty()) {
        return Some(ETag(etag.to_string()));
    }
    let modified = httpdate::parse_http_date(last_modified?).ok()?;
    let date = httpdate::parse_http_date(date?).ok()?;
    let settled = date.duration_since(modified).is_ok_and(|age| age >= LAST_MODIFIED_SETTLED);
    settled.then(|| ETag(format!("{LAST_MODIFIED}{}", httpdate::fmt_http_date(modified))))
}

/// The token of a body read whole, for servers that send no validator.
pub fn content_token(body: &[u8]) -> ETag {
    ETag(format!("{CONTENT}{:032x}", xxhash_rust::xxh3::xxh3_128(body)))
}

/// How to ask the server whether an object still has `token`.
#[derive(Debug, PartialEq, Eq)]
pub enum Conditional<'a> {
    /// Send `If-None-Match: <etag>`.
    IfNoneMatch(&'a str),
    /// Send `If-Modified-Since: <date>`.
    IfModifiedSince(&'a str),
    /// Read it whole and compare [`content_token`] with this token.
    CompareContent,
}

/// The conditional read for a token this module made.
pub fn conditional(token: &ETag) -> Conditional<'_> {
    if let Some(date) = token.0.strip_prefix(LAST_MODIFIED) {
        Conditional::IfModifiedSince(date)
    } else if token.0.starts_with(CONTENT) {
        Conditional::CompareContent
    } else {
        Conditional::IfNoneMatch(&token.0)
    }
}

/// Whether a read answered with `token` found the object as the caller
/// had it (`asked`): also for servers and caches that ignore conditional
/// requests and answer 200 with the same validator.
pub fn unchanged(asked: Option<&ETag>, token: Option<&ETag>) -> bool {
    token.is_some() && asked == token
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODIFIED: &str = "Sun, 06 Dec 2026 13:00:00 GMT";

    #[test]
    fn an_etag_strong_or_weak_is_the_token_and_is_sent_as_if_none_match() {
        for etag in ["\"abc\"", "W/\"6523-5f1\""] {
            let token = token_from_headers(Some(etag), Some(MODIFIED), None).unwrap();
            assert_eq!(token.0, etag);
            assert_eq!(conditional(&token), Conditional::IfNoneMatch(etag));
        }
    }

    #[test]
    fn a_last_modified_stands_in_only_once_settled_before_the_date() {
        let settled = token_from_headers(None, Some(MODIFIED), Some("Sun, 06 Dec 2026 13:00:02 GMT")).unwrap();
        assert_eq!(conditional(&settled), Conditional::IfModifiedSince(MODIFIED));
        // Written in the second of the read: a second write in that second
        // would carry the same date.
        assert_eq!(token_from_headers(None, Some(MODIFIED), Some("Sun, 06 Dec 2026 13:00:01 GMT")), None);
        assert_eq!(token_from_headers(None, Some(MODIFIED), None), None);
        assert_eq!(token_from_headers(None, Some("yesterday"), Some(MODIFIED)), None);
    }

    #[test]
    fn a_content_token_compares_bodies() {
        let token = content_token(b"{\"a\":1}");
        assert_eq!(conditional(&token), Conditional::CompareContent);
        assert_eq!(token, content_token(b"{\"a\":1}"));
        assert_ne!(token, content_token(b"{\"a\":2}"));
    }
}
