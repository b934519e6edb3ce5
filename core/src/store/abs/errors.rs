//! What an Azure failure means for the caller: the [`StoreError`] variant,
//! and for backend failures whether trying again may help.
//!
//! object_store keeps the HTTP status and Azure's error code only in the
//! text of its errors (its retry error type is private), so this reads
//! them from the error chain: `... status code: 404 Not Found: <?xml ...
//! <Code>ContainerNotFound</Code>`.

use object_store::client::{HttpError, HttpErrorKind};

use crate::errors::error_chain;
use crate::store::StoreError;

/// Why a request failed, as far as the caller's choice goes.
#[derive(Debug)]
pub(super) struct Failure {
    /// The HTTP status, if the request reached the server.
    pub status: Option<u16>,
    /// Azure's error code (`ContainerNotFound`, `AuthenticationFailed`).
    pub code: Option<String>,
    /// object_store's error, for the message.
    pub chain: String,
    /// The request never got an answer (refused, reset, timed out).
    pub transport: bool,
}

impl Failure {
    pub fn of(error: &object_store::Error) -> Failure {
        let chain = error_chain(error);
        let status = status_in(&chain);
        let code = code_in(&chain);
        let transport = status.is_none() && transport_error(error);
        Failure { status, code, chain, transport }
    }

    /// A non-2xx answer to a request sent outside object_store's client
    /// (the block uploads).
    pub fn from_response(status: u16, body: &str) -> Failure {
        Failure { status: Some(status), code: code_in(body), chain: format!("HTTP {status}: {body}"), transport: false }
    }

    /// Whether Azure said the container does not exist.
    pub fn container_missing(&self) -> bool {
        self.code.as_deref() == Some("ContainerNotFound")
    }
}

/// The backend error for `failure` of `op` on `key` in `container`; the
/// caller has already handled the outcomes its operation expects (not found,
/// already exists, not modified).
pub(super) fn backend(op: &'static str, key: &str, container: &str, failure: &Failure) -> StoreError {
    let key = key.to_string();
    let code = failure.code.as_deref().unwrap_or("no error code");
    let permanent = |message: String| StoreError::Backend { op, key: key.clone(), message, retryable: false };
    if failure.container_missing() {
        return permanent(container_missing(container));
    }
    match failure.status {
        Some(401 | 403) => permanent(format!(
            "the credentials were refused (HTTP {} {code}): check the account name and \
             AZURE_STORAGE_ACCOUNT_KEY, or that the SAS token in AZURE_STORAGE_SAS_TOKEN is unexpired \
             and allows read, write, delete and list on container {container:?}",
            failure.status.unwrap_or_default()
        )),
        Some(501) => permanent(format!(
            "the store does not implement this request ({code}): Distributary needs conditional writes \
             (If-None-Match / If-Match); use Azure Blob Storage or Azurite"
        )),
        Some(416) => StoreError::InvalidRange { key, range: "requested".into(), size: 0 },
        Some(status) => StoreError::Backend {
            op,
            key,
            message: format!("HTTP {status} {code}: {}", failure.chain),
            retryable: status >= 500 || status == 429 || status == 408,
        },
        None => StoreError::Backend {
            op,
            message: if failure.transport {
                format!("store unreachable: {}", failure.chain)
            } else {
                failure.chain.clone()
            },
            key,
            // An answer-less failure is the network's (retryable); anything
            // else without a status is local: a bad key or credential.
            retryable: failure.transport,
        },
    }
}

/// The message for a container that does not exist.
pub(super) fn container_missing(container: &str) -> String {
    format!(
        "container {container:?} does not exist: create the container (az storage container create \
         --name {container}) or fix the URL's container name"
    )
}

/// The HTTP status in object_store's "status code: 404 Not Found" text.
fn status_in(chain: &str) -> Option<u16> {
    let (_, rest) = chain.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}

/// Azure's error code in the response body's `<Code>...</Code>`.
fn code_in(chain: &str) -> Option<String> {
    let (_, rest) = chain.split_once("<Code>")?;
    rest.split_once("</Code>").map(|(code, _)| code.to_string())
}

/// Whether an [`HttpError`] of a transport kind is in the error's sources.
fn transport_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(http) = error.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Timeout | HttpErrorKind::Interrupted
            );
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_code_from_object_stores_text() {
        let chain = "Generic MicrosoftAzure error: Error performing PUT http://h/c/k in 2ms - Server returned \
                     non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>ContainerNotFound</Code>";
        assert_eq!(status_in(chain), Some(404));
        assert_eq!(code_in(chain).as_deref(), Some("ContainerNotFound"));
        assert_eq!(status_in("connection refused"), None);
    }
}
