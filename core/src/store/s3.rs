//! Amazon S3 and S3-compatible servers (`s3://bucket/prefix`).
//!
//! Credentials come from the SDK's standard chain (environment, profile,
//! SSO, web identity, container and instance roles). The SDK's standard
//! retry mode retries throttling, 5xx and transport errors with capped
//! exponential backoff and jitter; what is still failing after that comes
//! back as a retryable [`StoreError::Backend`] for the caller's own loop.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::types::{ETag, GetOptions, GetResult, ObjectMeta, Payload, PutMode, StoreError};
use super::{Store, validate_key, validate_prefix};

/// Attempts per request, including the first (the SDK's standard mode).
const MAX_ATTEMPTS: u32 = 6;
/// S3's limit on keys per DeleteObjects request.
const DELETE_BATCH: usize = 1000;

/// A bucket and key prefix on S3 or an S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    url: String,
}

impl S3Store {
    /// Connects with the SDK's standard configuration chain, overridden by
    /// the URL's `endpoint`, `region` and `path-style` when given. Path-style
    /// addressing defaults to on for custom endpoints (most S3-compatible
    /// servers need it) and off for AWS.
    pub async fn connect(
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
        path_style: Option<bool>,
    ) -> Result<S3Store, StoreError> {
        S3Store::connect_with(bucket, prefix, endpoint, region, path_style, None).await
    }

    /// Like [`S3Store::connect`], with explicit static credentials instead of
    /// the standard chain when `credentials` is `(access_key_id,
    /// secret_access_key)` (tests and tools that hold keys themselves).
    pub async fn connect_with(
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
        path_style: Option<bool>,
        credentials: Option<(String, String)>,
    ) -> Result<S3Store, StoreError> {
        let url = match &endpoint {
            Some(endpoint) => format!("s3://{bucket}/{prefix} (endpoint {endpoint})"),
            None => format!("s3://{bucket}/{prefix}"),
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some((access_key_id, secret_access_key)) = credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "distributary-static",
            ));
        }
        let shared = loader.load().await;
        let custom_endpoint = endpoint.is_some() || shared.endpoint_url().is_some();
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(60))
                    .build(),
            )
            // Segments carry their own checksums; the SDK's optional
            // flexible checksums trip up several S3-compatible servers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .force_path_style(path_style.unwrap_or(custom_endpoint));
        if let Some(endpoint) = &endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if shared.region().is_none() {
            if !custom_endpoint {
                return Err(StoreError::InvalidUrl {
                    url,
                    reason: "no AWS region configured: add ?region= to the URL or set AWS_REGION".into(),
                    example: "s3://my-bucket/app-db?region=us-east-1",
                });
            }
            // S3-compatible servers mostly ignore the region; sign for the usual default.
            builder = builder.region(Region::new("us-east-1"));
        }
        Ok(S3Store { client: Client::from_conf(builder.build()), bucket, prefix, url })
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) })
    }

    /// The same client (configuration, credentials, connection pool) on
    /// another bucket and prefix: a process serving many prefixes (the
    /// compactor Lambda) connects once. `prefix` is normalised like a URL's
    /// (no leading or trailing `/`).
    pub fn with_location(&self, bucket: String, prefix: String) -> S3Store {
        let prefix = prefix.trim_matches('/').to_string();
        let url = format!("s3://{bucket}/{prefix}");
        S3Store { client: self.client.clone(), bucket, prefix, url }
    }

    fn relative_key<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix).and_then(|k| k.strip_prefix('/')).unwrap_or(full)
        }
    }
}

/// What an S3 failure means, from its HTTP status and error code.
fn classify<E, R>(op: &'static str, key: &str, err: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let status = err.raw_response().map(HasStatus::status);
    let code = err.code().unwrap_or_default().to_string();
    let key = key.to_string();
    let permanent = |message: String| StoreError::Backend { op, key: key.clone(), message, retryable: false };
    match (status, code.as_str()) {
        // Before the 404 arm: a missing bucket is not a missing object.
        (_, "NoSuchBucket") => permanent("the bucket does not exist: create it or fix the URL's bucket name".into()),
        (_, "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException") => {
            permanent(format!(
                "the bucket is in another region than the one configured ({code}: {}): set ?region= in the URL or AWS_REGION",
                err.message().unwrap_or("no message")
            ))
        }
        (Some(501), _) | (_, "NotImplemented") => permanent(format!(
            "the store does not implement this request ({code}): Distributary needs conditional writes \
             (If-None-Match / If-Match); use S3 or a compatible server that supports them"
        )),
        (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken") => permanent(format!(
            "the credentials were refused ({code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile or the role"
        )),
        (Some(404), _) | (_, "NoSuchKey") | (_, "NotFound") => StoreError::NotFound { op, key },
        (Some(304), _) => StoreError::NotModified { key },
        (Some(412), _) | (_, "PreconditionFailed") => StoreError::PreconditionFailed { key },
        (Some(416), _) | (_, "InvalidRange") => StoreError::InvalidRange { key, range: "requested".into(), size: 0 },
        (None, _) if is_missing_credentials(err) => permanent(format!(
            "no AWS credentials found ({}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with \
             the shared config and credentials files, or use SSO or an instance or task role (the SDK's default chain)",
            error_chain(err)
        )),
        _ => {
            let retryable = match status {
                None => true, // never reached the server: timeout, refused, DNS
                Some(s) => s >= 500 || s == 429 || s == 409 || code.contains("Throttl") || code == "SlowDown",
            };
            let detail = match (status, err) {
                (_, SdkError::DispatchFailure(_)) | (_, SdkError::TimeoutError(_)) => {
                    format!("store unreachable: {}", error_chain(err))
                }
                (Some(403), _) => format!(
                    "access denied ({code}): check the credentials and that their IAM policy allows this on the bucket"
                ),
                (Some(status), _) => format!("HTTP {status} {code}: {}", err.message().unwrap_or("no message")),
                (None, _) => error_chain(err),
            };
            StoreError::Backend { op, key, message: detail, retryable }
        }
    }
}

/// Whether the request never left because no credentials could be found
/// (no retry brings them).
fn is_missing_credentials(err: &dyn std::error::Error) -> bool {
    let text = error_chain(err).to_ascii_lowercase();
    text.contains("no providers in chain provided credentials")
        || text.contains("credentials provider was not enabled")
        || text.contains("credential provider was not enabled")
        || text.contains("no credentials")
}

fn error_chain(err: &dyn std::error::Error) -> String {
    crate::errors::error_chain(err)
}

/// The HTTP status of a raw response, whichever response type the SDK uses.
trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn etag(value: Option<&str>) -> Option<ETag> {
    value.map(|v| ETag(v.to_string()))
}

/// Total object size from `Content-Range: bytes a-b/total`, falling back to
/// the body length for whole-object reads.
fn total_size(content_range: Option<&str>, content_length: Option<i64>) -> u64 {
    content_range
        .and_then(|r| r.rsplit('/').next())
        .and_then(|total| total.parse().ok())
        .unwrap_or_else(|| content_length.unwrap_or(0).max(0) as u64)
}

#[async_trait::async_trait]
impl Store for S3Store {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        let full = self.full_key(key)?;
        let mut request = self.client.get_object().bucket(&self.bucket).key(&full);
        if let Some(range) = options.range {
            request = request.range(range.to_http_header());
        }
        if let Some(etag) = &options.if_none_match {
            request = request.if_none_match(&etag.0);
        }
        let output = request.send().await.map_err(|e| match classify("get", key, &e) {
            StoreError::InvalidRange { key, .. } => StoreError::InvalidRange {
                key,
                range: options.range.map(|r| r.to_http_header()).unwrap_or_default(),
                size: 0,
            },
            other => other,
        })?;
        let length = output.content_length().unwrap_or(0).max(0) as u64;
        let size = total_size(output.content_range(), output.content_length());
        let start = output
            .content_range()
            .and_then(|r| r.strip_prefix("bytes "))
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let meta = ObjectMeta { key: key.to_string(), size, etag: etag(output.e_tag()) };
        let key = key.to_string();
        let body = futures::stream::try_unfold((output.body, key), |(mut body, key)| async move {
            match body.next().await {
                None => Ok(None),
                Some(Ok(chunk)) => Ok(Some((chunk, (body, key)))),
                Some(Err(e)) => Err(StoreError::Backend {
                    op: "get",
                    key,
                    message: format!("body interrupted: {}", error_chain(&e)),
                    retryable: true,
                }),
            }
        });
        Ok(GetResult { meta, range: start..start + length, body: Box::pin(body) })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let full = self.full_key(key)?;
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| classify("head", key, &e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: output.content_length().unwrap_or(0).max(0) as u64,
            etag: etag(output.e_tag()),
        })
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        let full = self.full_key(key)?;
        // S3 answers 409 ConditionalRequestConflict when two conditional
        // writes race; it asks the client to try again, which then gets the
        // definite answer (success, 412).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (body, size) = match &payload {
                Payload::Bytes(bytes) => (ByteStream::from(bytes.clone()), bytes.len() as u64),
                Payload::File(path) => {
                    let stream = ByteStream::from_path(path).await.map_err(|e| StoreError::Io {
                        op: "put",
                        key: path.display().to_string(),
                        source: std::io::Error::other(e),
                    })?;
                    let size = std::fs::metadata(path)
                        .map_err(|source| StoreError::Io { op: "put", key: path.display().to_string(), source })?
                        .len();
                    (stream, size)
                }
            };
            let mut request = self.client.put_object().bucket(&self.bucket).key(&full).body(body);
            request = match &mode {
                PutMode::Create => request.if_none_match("*"),
                PutMode::Update(etag) => request.if_match(&etag.0),
            };
            match request.send().await {
                Ok(output) => {
                    return Ok(ObjectMeta { key: key.to_string(), size, etag: etag(output.e_tag()) });
                }
                Err(e) => {
                    let status = e.raw_response().map(HasStatus::status);
                    if status == Some(409) && attempt < MAX_ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                        continue;
                    }
                    return Err(match (classify("put", key, &e), &mode) {
                        (StoreError::PreconditionFailed { key }, PutMode::Create) => StoreError::AlreadyExists { key },
                        (StoreError::NotFound { key, .. }, PutMode::Update(_)) => {
                            StoreError::PreconditionFailed { key }
                        }
                        (other, _) => other,
                    });
                }
            }
        }
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for batch in keys.chunks(DELETE_BATCH) {
            let mut objects = Vec::with_capacity(batch.len());
            for key in batch {
                let full = self.full_key(key)?;
                objects.push(ObjectIdentifier::builder().key(full).build().map_err(|e| StoreError::Backend {
                    op: "delete",
                    key: key.clone(),
                    message: e.to_string(),
                    retryable: false,
                })?);
            }
            let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(|e| {
                StoreError::Backend { op: "delete", key: batch[0].clone(), message: e.to_string(), retryable: false }
            })?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| classify("delete", &batch[0], &e))?;
            if let Some(error) = output.errors().first() {
                return Err(StoreError::Backend {
                    op: "delete",
                    key: self.relative_key(error.key().unwrap_or_default()).to_string(),
                    message: format!(
                        "{}: {}",
                        error.code().unwrap_or("error"),
                        error.message().unwrap_or("no message")
                    ),
                    retryable: true,
                });
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        let full_prefix = if self.prefix.is_empty() { prefix.to_string() } else { format!("{}/{prefix}", self.prefix) };
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let output = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| classify("list", prefix, &e))?;
            for object in output.contents() {
                let Some(full) = object.key() else { continue };
                out.push(ObjectMeta {
                    key: self.relative_key(full).to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: etag(object.e_tag()),
                });
            }
            match output.next_continuation_token() {
                Some(next) if output.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn url(&self) -> &str {
        &self.url
    }
}
