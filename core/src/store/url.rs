//! Store URLs: parsed here and nowhere else.

use std::sync::Arc;

use super::{Store, StoreError};

mod abs;
mod sftp;

#[cfg(feature = "abs")]
pub(super) use self::abs::container_name_problem;
use self::abs::{parse_abs, redact_secrets};
pub(super) use self::sftp::SFTP_PASSWORD_ENV;
use self::sftp::{hide_password, parse_sftp};

const FILE_EXAMPLE: &str = "file:///var/lib/distributary/store";
const S3_EXAMPLE: &str = "s3://my-bucket/app-db?region=us-east-1 or s3://bucket/prefix?endpoint=http://127.0.0.1:9000";
pub(super) const ABS_EXAMPLE: &str =
    "abs://my-container/app-db?account=mystorageaccount (key in AZURE_STORAGE_ACCOUNT_KEY)";
const HTTP_EXAMPLE: &str = "https://cdn.example.com/app-db";
const SFTP_EXAMPLE: &str =
    "sftp://backup@files.example.com:2222/srv/distributary/app-db?key-path=/etc/distributary/id_ed25519";

/// A parsed store URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local folder.
    File {
        /// Absolute path of the folder holding the objects.
        root: std::path::PathBuf,
    },
    /// An S3 bucket (or an S3-compatible server).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing `/`
        /// (empty for the bucket's root).
        prefix: String,
        /// Custom endpoint (`?endpoint=`); otherwise the SDK's usual
        /// resolution, including `AWS_ENDPOINT_URL`.
        endpoint: Option<String>,
        /// Region (`?region=`); otherwise the SDK's chain (`AWS_REGION`, profile).
        region: Option<String>,
        /// Path-style addressing (`?path-style=`); defaults to on with a
        /// custom endpoint, off otherwise.
        path_style: Option<bool>,
    },
    /// An Azure Blob Storage container (or Azurite).
    Abs {
        /// Container name.
        container: String,
        /// Key prefix inside the container, without leading or trailing
        /// `/` (empty for the container's root).
        prefix: String,
        /// Storage account (`?account=`); otherwise
        /// `AZURE_STORAGE_ACCOUNT_NAME` or `AZURE_STORAGE_ACCOUNT`.
        account: Option<String>,
        /// Blob service endpoint (`?endpoint=`); otherwise
        /// `https://<account>.blob.core.windows.net`.
        endpoint: Option<String>,
    },
    /// A read-only HTTP(S) origin: `base/<key>` plus the URL's query string
    /// (for a shared token) on every request.
    Http {
        /// Scheme, host and path, without a trailing `/`.
        base: String,
        /// The query string without `?`, appended to every object URL.
        query: Option<String>,
    },
    /// A folder on an SFTP server. The password, if any, comes from the
    /// environment (`DISTRIBUTARY_SFTP_PASSWORD`), never from the URL.
    Sftp {
        /// The user to log in as.
        user: String,
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// Port (22 if the URL names none).
        port: u16,
        /// The folder: absolute (`/srv/db`), or relative to the login
        /// folder when the URL's path starts with `/~/` (`db`).
        root: String,
        /// Private key file (`?key-path=`).
        key_path: Option<std::path::PathBuf>,
        /// known_hosts file (`?known-hosts=`); `~/.ssh/known_hosts` otherwise.
        known_hosts: Option<std::path::PathBuf>,
        /// The server's public key in OpenSSH's form (`?host-key=ssh-ed25519
        /// AAAA…`, Litestream's `host-key`), checked instead of known_hosts.
        host_key: Option<String>,
        /// `?insecure-skip-host-key=true`: accept any host key. For tests
        /// against throwaway servers only.
        insecure_skip_host_key: bool,
    },
}

impl StoreUrl {
    /// Parses a store URL; the error says what is wrong and shows a valid
    /// example of the intended kind.
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        let invalid =
            |reason: String, example: &'static str| StoreError::InvalidUrl { url: url.to_string(), reason, example };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid(
                "missing scheme (expected file://, s3://, sftp://, abs://, http:// or https://)".into(),
                FILE_EXAMPLE,
            ));
        };
        match scheme {
            "file" => {
                if rest.contains('?') || rest.contains('#') {
                    return Err(invalid("file URLs take no query or fragment".into(), FILE_EXAMPLE));
                }
                if !rest.starts_with('/') {
                    return Err(invalid(
                        "the path must be absolute (three slashes: file:///path)".into(),
                        FILE_EXAMPLE,
                    ));
                }
                let root = rest.trim_end_matches('/');
                if root.is_empty() {
                    return Err(invalid(
                        "the filesystem root cannot be a store: name a folder for its objects".into(),
                        FILE_EXAMPLE,
                    ));
                }
                Ok(StoreUrl::File { root: root.into() })
            }
            "s3" => parse_s3(rest).map_err(|reason| invalid(reason, S3_EXAMPLE)),
            "abs" => parse_abs(rest).map_err(|reason| StoreError::InvalidUrl {
                url: redact_secrets(url),
                reason,
                example: ABS_EXAMPLE,
            }),
            // A password wrongly put in the URL stays out of the error.
            "sftp" => parse_sftp(rest).map_err(|reason| StoreError::InvalidUrl {
                url: hide_password(url),
                reason,
                example: SFTP_EXAMPLE,
            }),
            "http" | "https" => {
                let (base, query) = parse_http(scheme, rest).map_err(|reason| invalid(reason.into(), HTTP_EXAMPLE))?;
                Ok(StoreUrl::Http { base, query })
            }
            // An in-process store lives as long as the program: data written
            // to it goes nowhere, so no command takes one (tests build a
            // `MemoryStore` directly).
            "memory" => Err(invalid(
                "memory:// is an in-process store for tests whose data is lost at exit; use a folder".into(),
                FILE_EXAMPLE,
            )),
            other => Err(invalid(
                format!("unknown scheme {other:?} (expected file, s3, sftp, abs, http or https)"),
                FILE_EXAMPLE,
            )),
        }
    }

    /// Parses an `http(s)://` store URL into its base and query string, and
    /// refuses every other kind: for readers that can only fetch (the wasm
    /// reader), without the other kinds' parsers.
    pub fn parse_http(url: &str) -> Result<(String, Option<String>), StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
            example: HTTP_EXAMPLE,
        };
        // Prefixes, not a split at "://": a substring search would bring
        // its searcher into the wasm reader.
        let parsed = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => parse_http("http", rest),
            (_, Some(rest)) => parse_http("https", rest),
            _ => Err(
                "only http:// and https:// stores can be read here (put a CDN, a public bucket or a presigning proxy in front of S3)",
            ),
        };
        parsed.map_err(invalid)
    }
}

/// `rest` of `http(s)://rest` as a base without a trailing `/` and the
/// query string without `?`.
fn parse_http(scheme: &str, rest: &str) -> Result<(String, Option<String>), &'static str> {
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, (!query.is_empty()).then(|| query.to_string())),
        None => (rest, None),
    };
    let host = location.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("missing host");
    }
    if location.contains('#') {
        return Err("fragments are not allowed");
    }
    Ok((format!("{scheme}://{}", location.trim_end_matches('/')), query))
}

fn parse_s3(rest: &str) -> Result<StoreUrl, String> {
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if !bucket_ok {
        return Err(format!("bucket name {bucket:?} is not valid (3 to 63 lowercase letters, digits, '-' or '.')"));
    }
    let prefix = parse_prefix(prefix)?;
    let (mut endpoint, mut region, mut path_style) = (None, None, None);
    for (name, value) in query_pairs(query) {
        match name {
            "endpoint" => endpoint = Some(parse_endpoint(value)?),
            "region" if !value.is_empty() => region = Some(value),
            "path-style" | "force-path-style" => path_style = Some(parse_bool("path-style", &value)?),
            other => {
                return Err(format!("unknown query parameter {other:?} (known: endpoint, region, path-style)"));
            }
        }
    }
    Ok(StoreUrl::S3 { bucket: bucket.to_string(), prefix, endpoint, region, path_style })
}

/// Decodes `%XX` escapes (for endpoints passed inside a query string); a
/// `%` not followed by two hex digits stays as it is.
fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()
}

/// A query string's `name=value` pairs, the values decoded.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, String)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name, percent_decode(value))
    })
}

/// A key prefix from a URL's path: without leading or trailing `/`, and a
/// valid key when not empty.
fn parse_prefix(path: &str) -> Result<String, String> {
    let prefix = path.trim_matches('/').to_string();
    if !prefix.is_empty() {
        super::validate_key(&prefix).map_err(|e| format!("prefix: {e}"))?;
    }
    Ok(prefix)
}

/// An `?endpoint=` value: an http(s) URL.
fn parse_endpoint(value: String) -> Result<String, String> {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(format!("endpoint {value:?} must start with http:// or https://"));
    }
    Ok(value)
}

/// A flag parameter (`?name`, `?name=true`, `?name=0`).
fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("{name} must be true or false, not {other:?}")),
    }
}

/// Opens the store a URL names. S3 stores load credentials and settings
/// from the SDK's standard chain (environment, profile, instance role).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let parsed = StoreUrl::parse(url)?;
    let unavailable = |kind: &str| StoreError::InvalidUrl {
        url: url.to_string(),
        reason: format!("this build has no {kind} support"),
        example: FILE_EXAMPLE,
    };
    match parsed {
        #[cfg(feature = "file")]
        StoreUrl::File { root } => {
            // The folder may not exist yet (the first write creates it), but
            // whatever part of its path exists must be folders.
            if let Some(file) = root.ancestors().find(|p| p.exists()).filter(|p| !p.is_dir()) {
                return Err(StoreError::InvalidUrl {
                    url: url.to_string(),
                    reason: format!(
                        "{} is a file, not a folder: a file:// store is a folder of objects",
                        file.display()
                    ),
                    example: FILE_EXAMPLE,
                });
            }
            Ok(Arc::new(super::FileStore::new(root)))
        }
        #[cfg(feature = "s3")]
        StoreUrl::S3 { bucket, prefix, endpoint, region, path_style } => {
            Ok(Arc::new(super::S3Store::connect(bucket, prefix, endpoint, region, path_style).await?))
        }
        #[cfg(feature = "abs")]
        parsed @ StoreUrl::Abs { .. } => {
            Ok(Arc::new(super::AbsStore::connect(super::abs::options_from_url(url, parsed, None)?)?))
        }
        #[cfg(feature = "sftp")]
        parsed @ StoreUrl::Sftp { .. } => {
            Ok(Arc::new(super::SftpStore::new(super::sftp::options_from_url(url, parsed, None)?)?))
        }
        #[cfg(any(feature = "http", feature = "http-ring"))]
        StoreUrl::Http { base, query } => Ok(Arc::new(super::HttpStore::new(base, query)?)),
        #[allow(unreachable_patterns)]
        StoreUrl::File { .. } => Err(unavailable("file://")),
        #[allow(unreachable_patterns)]
        StoreUrl::S3 { .. } => Err(unavailable("s3://")),
        #[allow(unreachable_patterns)]
        StoreUrl::Abs { .. } => Err(unavailable("abs://")),
        #[allow(unreachable_patterns)]
        StoreUrl::Sftp { .. } => Err(unavailable("sftp://")),
        #[allow(unreachable_patterns)]
        StoreUrl::Http { .. } => Err(unavailable("http(s)://")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(StoreUrl::parse("file:///tmp/x/").unwrap(), StoreUrl::File { root: "/tmp/x".into() });
        assert_eq!(
            StoreUrl::parse("s3://bucket/a/b/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=us-east-1").unwrap(),
            StoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("us-east-1".into()),
                path_style: None,
            }
        );
        assert_eq!(
            StoreUrl::parse("https://cdn.example.com/db/?token=abc").unwrap(),
            StoreUrl::Http { base: "https://cdn.example.com/db".into(), query: Some("token=abc".into()) }
        );
    }

    #[test]
    fn parses_azure_urls() {
        assert_eq!(
            StoreUrl::parse(
                "abs://my-container/a/b/?account=acct&endpoint=http%3A%2F%2F127.0.0.1%3A10000%2Fdevstoreaccount1"
            )
            .unwrap(),
            StoreUrl::Abs {
                container: "my-container".into(),
                prefix: "a/b".into(),
                account: Some("acct".into()),
                endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into()),
            }
        );
        // The account may come from the environment instead, and the
        // container's root is a store too.
        assert_eq!(
            StoreUrl::parse("abs://c0n").unwrap(),
            StoreUrl::Abs { container: "c0n".into(), prefix: String::new(), account: None, endpoint: None }
        );
    }

    #[test]
    fn azure_urls_refuse_bad_containers_and_secrets() {
        for (url, needle) in [
            ("abs://My_Container/x", "container name"),
            ("abs://ab/x", "container name"),
            ("abs://a--b/x", "container name"),
            ("abs://-abc/x", "container name"),
            ("abs:///x", "container name"),
            ("abs://box/x?account=a&key=c2VjcmV0", "AZURE_STORAGE_ACCOUNT_KEY"),
            ("abs://box/x?sv=2022&sig=abc", "credentials do not go in the URL"),
            ("abs://box/x?region=west", "unknown query parameter \"region\""),
            ("abs://box/x?endpoint=localhost:10000", "must start with http"),
            ("abs://box/../x", "prefix"),
        ] {
            let err = StoreUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(err.contains("for example: abs://"), "{url}: {err}");
            // The refused secret is not repeated back.
            assert!(!err.contains("c2VjcmV0"), "{url}: {err}");
        }
    }

    /// A `%` before a multi-byte character, or before too few hex digits,
    /// is kept as text (the hand-written decoder this replaced panicked on
    /// the first: it sliced the string inside the character).
    #[test]
    fn a_malformed_escape_is_kept_not_a_panic() {
        let parsed = StoreUrl::parse("s3://bucket/p?endpoint=http%3A%2F%2Fh%aé%4&region=r").unwrap();
        let StoreUrl::S3 { endpoint, .. } = parsed else { panic!("{parsed:?}") };
        assert_eq!(endpoint.as_deref(), Some("http://h%aé%4"));
    }

    #[test]
    fn readers_that_only_fetch_parse_http_urls_alone() {
        assert_eq!(
            StoreUrl::parse_http("https://cdn.example.com/db/?token=abc").unwrap(),
            ("https://cdn.example.com/db".to_string(), Some("token=abc".to_string()))
        );
        for (url, needle) in
            [("s3://bucket/x", "only http:// and https://"), ("https:///x", "missing host"), ("cdn/x", "only http")]
        {
            let err = StoreUrl::parse_http(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn parses_sftp_urls() {
        assert_eq!(
            StoreUrl::parse("sftp://backup@files.example.com:2222/backup/db/?key-path=%2Fetc%2Fkey").unwrap(),
            StoreUrl::Sftp {
                user: "backup".into(),
                host: "files.example.com".into(),
                port: 2222,
                root: "/backup/db".into(),
                key_path: Some("/etc/key".into()),
                known_hosts: None,
                host_key: None,
                insecure_skip_host_key: false,
            }
        );
        let parsed = StoreUrl::parse("sftp://u@[::1]/~/db?known-hosts=/k&insecure-skip-host-key=true").unwrap();
        let StoreUrl::Sftp { host, port, root, known_hosts, insecure_skip_host_key, .. } = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!((host.as_str(), port, root.as_str()), ("::1", 22, "db"));
        assert_eq!((known_hosts, insecure_skip_host_key), (Some("/k".into()), true));
        let StoreUrl::Sftp { root, .. } = StoreUrl::parse("sftp://u@h/~").unwrap() else { panic!() };
        assert_eq!(root, "", "the login folder itself");
    }

    #[test]
    fn sftp_errors_say_what_is_wrong() {
        for (url, needle) in [
            ("sftp://files.example.com/db", "missing user"),
            ("sftp://@files.example.com/db", "missing user"),
            ("sftp://u:secret@files.example.com/db", "DISTRIBUTARY_SFTP_PASSWORD"),
            ("sftp://u@h/db?password=x", "DISTRIBUTARY_SFTP_PASSWORD"),
            ("sftp://u@h:99999/db", "port \"99999\""),
            ("sftp://u@h:ssh/db", "port \"ssh\""),
            ("sftp://u@h:0/db", "from 1 to 65535"),
            ("sftp://u@/db", "missing host"),
            ("sftp://u@h/", "filesystem root"),
            ("sftp://u@h/db/../etc", "path"),
            ("sftp://u@h/db?insecure-skip-host-key=maybe", "true or false"),
            ("sftp://u@h/db?keypath=/k", "unknown query parameter \"keypath\""),
        ] {
            let err = StoreUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(err.contains("for example: sftp://"), "{url}: {err}");
            assert!(!err.contains("secret"), "the password leaked: {err}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong_and_show_an_example() {
        for (url, needle) in [
            ("/tmp/x", "missing scheme"),
            ("file://relative", "absolute"),
            ("s3://B/x", "bucket name"),
            ("s3://bucket/x?foo=1", "unknown query parameter \"foo\""),
            ("s3://bucket/x?endpoint=localhost:9000", "must start with http"),
            ("ftp://host/x", "unknown scheme"),
            ("https:///x", "missing host"),
            // Regressions: the filesystem root was accepted (and written
            // into), and so was memory:// (data went nowhere).
            ("file:///", "filesystem root"),
            ("file:////", "filesystem root"),
            ("memory://", "in-process store for tests"),
        ] {
            let err = StoreUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(err.contains("for example"), "{url}: {err}");
        }
    }
}
