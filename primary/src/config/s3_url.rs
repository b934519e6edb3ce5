//! The store URL of an S3 replica, from Litestream's ways of naming one: a
//! `url` in our form or in Litestream's (provider hosts that carry the
//! endpoint and region, its query parameters), and the `bucket`, `path`,
//! `region`, `endpoint` and `force-path-style` fields, which win over the
//! URL's parts as they do in Litestream.

use anyhow::{Context, Result, bail};

use super::litestream::{BEHAVIOUR_KEYS, SKIP_VERIFY_REFUSAL, non_empty};
use super::schema::{FileReplica, ReplicaSettings};

/// The parts of an S3 store URL.
#[derive(Default)]
struct S3Parts {
    bucket: String,
    prefix: String,
    region: Option<String>,
    endpoint: Option<String>,
    path_style: Option<bool>,
    /// Query parameters passed on as written, for `StoreUrl::parse` to judge.
    other: Vec<String>,
}

/// The store URL of an S3 replica, from its `url` and its fields. A field
/// wins over the same part of the URL; the replica's own `bucket` or `path`
/// beside a `url` is an error, as in Litestream.
pub(super) fn s3_url(
    replica: &FileReplica,
    own: &ReplicaSettings,
    settings: &ReplicaSettings,
    label: &str,
    notices: &mut Vec<String>,
) -> Result<String> {
    let overrides = non_empty(&settings.region).is_some()
        || non_empty(&settings.endpoint).is_some()
        || settings.force_path_style.is_some();
    let mut parts = match &replica.url {
        Some(url) => {
            if non_empty(&own.bucket).is_some() || replica.path.as_deref().is_some_and(|p| !p.is_empty()) {
                bail!("give either `url` or `bucket`/`path`, not both");
            }
            let (parts, litestream_only) = parse_s3_url(url, label, notices)?;
            if !(litestream_only || overrides) {
                // Our own URL, nothing to add: kept as written.
                return Ok(url.clone());
            }
            parts
        }
        None => {
            let bucket = non_empty(&settings.bucket).context("`type: s3` needs `bucket`")?;
            S3Parts {
                bucket: bucket.to_string(),
                prefix: replica.path.clone().unwrap_or_default(),
                ..Default::default()
            }
        }
    };
    if let Some(region) = non_empty(&settings.region) {
        parts.region = Some(region.to_string());
    }
    if let Some(endpoint) = non_empty(&settings.endpoint) {
        parts.endpoint = Some(with_scheme(endpoint));
    }
    if let Some(path_style) = settings.force_path_style {
        parts.path_style = Some(path_style);
    }
    let mut query = Vec::new();
    if let Some(region) = parts.region {
        query.push(format!("region={region}"));
    }
    if let Some(endpoint) = parts.endpoint {
        query.push(format!("endpoint={endpoint}"));
    }
    if let Some(path_style) = parts.path_style {
        query.push(format!("path-style={path_style}"));
    }
    query.extend(parts.other);
    let mut url = format!("s3://{}/{}", parts.bucket, parts.prefix.trim_matches('/'));
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    Ok(url)
}

/// Splits an `s3://` URL, reading Litestream's forms as Litestream does:
/// provider hosts that carry the bucket, region and endpoint
/// (`bucket.localhost:9000`, `bucket.s3.us-east-1.amazonaws.com`,
/// `bucket.nyc3.digitaloceanspaces.com`, Backblaze, Filebase, Scaleway) and
/// its query parameters. Also says whether any of that was found (if not,
/// the URL is one of ours).
fn parse_s3_url(url: &str, label: &str, notices: &mut Vec<String>) -> Result<(S3Parts, bool)> {
    let rest = &url["s3://".len()..];
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, prefix) = location.split_once('/').unwrap_or((location, ""));
    let mut parts = s3_host(host);
    let mut litestream_only = parts.bucket != host;
    parts.prefix = prefix.to_string();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "region" => parts.region = Some(value.to_string()),
            "endpoint" => {
                let endpoint =
                    if value.contains("://") || value.contains("%3A") { value.into() } else { with_scheme(value) };
                litestream_only |= endpoint != value;
                parts.endpoint = Some(endpoint);
                // Litestream turns path style on for a custom endpoint; so does our store.
            }
            "path-style" | "force-path-style" => parts.path_style = Some(value != "false"),
            "forcePathStyle" => {
                parts.path_style = Some(value == "true");
                litestream_only = true;
            }
            "skipVerify" | "skip-verify" if value == "true" => bail!(SKIP_VERIFY_REFUSAL),
            "skipVerify" | "skip-verify" => litestream_only = true,
            "signPayload" | "sign-payload" | "requireContentMD5" | "require-content-md5" => {
                let key = if name.starts_with("sign") { "sign-payload" } else { "require-content-md5" };
                let (_, answer) = BEHAVIOUR_KEYS.iter().find(|(k, _)| *k == key).expect("listed");
                notices.push(format!("{label}: {name} in the url: {answer}"));
                litestream_only = true;
            }
            _ => parts.other.push(pair.to_string()),
        }
    }
    Ok((parts, litestream_only))
}

/// Litestream's `s3.ParseHost`: the bucket, and what a provider's host says.
fn s3_host(host: &str) -> S3Parts {
    let bucket_and = |bucket: &str, region: Option<&str>, endpoint: Option<String>, path_style: Option<bool>| S3Parts {
        bucket: bucket.to_string(),
        region: region.map(str::to_string),
        endpoint,
        path_style,
        ..Default::default()
    };
    // MinIO and other local servers: bucket.host:port, over plain HTTP.
    if host.contains(':') && !host.contains(".com") {
        if let Some((bucket, server)) = host.split_once('.') {
            return bucket_and(bucket, Some("us-east-1"), Some(format!("http://{server}")), Some(true));
        }
        return S3Parts::default();
    }
    let labels: Vec<&str> = host.split('.').collect();
    let n = labels.len();
    let tail = |k: usize| if n >= k { labels[n - k..].join(".") } else { String::new() };
    let head = |k: usize| labels[..n.saturating_sub(k)].join(".");
    // bucket.s3.amazonaws.com, bucket.s3.us-east-1.amazonaws.com
    if n >= 4 && tail(2) == "amazonaws.com" {
        if labels[n - 3] == "s3" {
            return bucket_and(&head(3), None, None, None);
        }
        if n >= 5 && labels[n - 4] == "s3" {
            return bucket_and(&head(4), Some(labels[n - 3]), None, None);
        }
    }
    // bucket.nyc3.digitaloceanspaces.com
    if n >= 4 && tail(2) == "digitaloceanspaces.com" {
        let region = labels[n - 3];
        return bucket_and(&head(3), Some(region), Some(format!("https://{region}.digitaloceanspaces.com")), None);
    }
    // bucket.s3.us-west-000.backblazeb2.com
    if n >= 5 && tail(2) == "backblazeb2.com" && labels[n - 4] == "s3" {
        let region = labels[n - 3];
        return bucket_and(&head(4), Some(region), Some(format!("https://s3.{region}.backblazeb2.com")), Some(true));
    }
    // bucket.s3.filebase.com
    if n >= 4 && tail(3) == "s3.filebase.com" {
        return bucket_and(&head(3), None, Some("https://s3.filebase.com".into()), Some(true));
    }
    // bucket.s3.fr-par.scw.cloud
    if n >= 5 && tail(2) == "scw.cloud" && labels[n - 4] == "s3" {
        let region = labels[n - 3];
        return bucket_and(&head(4), Some(region), Some(format!("https://s3.{region}.scw.cloud")), None);
    }
    bucket_and(host, None, None, None)
}

/// An endpoint with its scheme: Litestream takes `fly.storage.tigris.dev`;
/// our store URLs need `https://` (`http://` for this machine).
fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        return endpoint.to_string();
    }
    let host = endpoint.split(['/', ':']).next().unwrap_or_default();
    let local = matches!(host, "localhost" | "0.0.0.0" | "") || host.starts_with("127.");
    format!("{}://{endpoint}", if local { "http" } else { "https" })
}
