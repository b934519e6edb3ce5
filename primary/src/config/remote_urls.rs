//! The store URLs and secrets of SFTP and Azure Blob Storage replicas, from
//! Litestream's ways of naming them: a `url` (ours, or Litestream's
//! `sftp://USER:PASSWORD@HOST/PATH` and `abs://ACCOUNT@CONTAINER/PATH`) or
//! the fields. Secrets (a password, an account key, a SAS token) never go in
//! the URL, which is logged: they travel beside it as [`Credentials`].

use super::litestream::{Env, home, non_empty};
use super::schema::{FileReplica, ReplicaSettings};
use super::{AbsCredential, Credentials};
use anyhow::{Context, Result, bail};

/// A store URL and the secret that opens it, if the file gives one.
pub(super) type Located = (String, Option<Credentials>);

/// An SFTP replica: `url`, or `host` (`HOST[:PORT]`), `user` and `path`;
/// `key-path` or `password` (from the URL's `USER:PASSWORD@` too).
pub(super) fn sftp_url(replica: &FileReplica, settings: &ReplicaSettings, env: Env) -> Result<Located> {
    let fields = non_empty(&settings.host).is_some() || non_empty(&replica.path).is_some();
    let (user, host, path, url_password, query) = match &replica.url {
        Some(_) if fields => bail!("give either `url` or `host`/`path` for an sftp replica, not both"),
        Some(url) => split_sftp_url(url)?,
        None => (
            non_empty(&settings.user).context("`type: sftp` needs `user`")?.to_string(),
            non_empty(&settings.host).context("`type: sftp` needs `host` (HOST or HOST:PORT)")?.to_string(),
            replica.path.clone().unwrap_or_default(),
            None,
            String::new(),
        ),
    };
    let user = non_empty(&settings.user).map_or(user, str::to_string);
    // Litestream's paths are relative to the login folder unless absolute;
    // our URLs spell the login folder `/~/`.
    let folder = match path.strip_prefix('/') {
        Some(absolute) => format!("/{}", absolute.trim_end_matches('/')),
        None => format!("/~/{}", path.trim_end_matches('/')),
    };
    let mut params = params_of(&query);
    if let Some(key_path) = non_empty(&settings.key_path) {
        set_param(&mut params, "key-path", &home(key_path, env)?.display().to_string());
    }
    if let Some(host_key) = non_empty(&settings.host_key) {
        set_param(&mut params, "host-key", host_key);
    }
    let query = query_string(&params);
    let password = non_empty(&settings.password).map(str::to_string).or(url_password);
    Ok((format!("sftp://{user}@{host}{folder}{query}"), password.map(Credentials::SftpPassword)))
}

/// `sftp://USER[:PASSWORD]@HOST[:PORT]/PATH[?QUERY]` as its parts, the
/// password decoded.
fn split_sftp_url(url: &str) -> Result<(String, String, String, Option<String>, String)> {
    let rest = url.strip_prefix("sftp://").context("an sftp replica's url starts with sftp://")?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = location.find('/').map_or((location, ""), |slash| location.split_at(slash));
    let (userinfo, host) = authority.rsplit_once('@').context("the url names no user (sftp://USER@HOST/PATH)")?;
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(decode(password))),
        None => (userinfo, None),
    };
    Ok((user.to_string(), host.to_string(), path.to_string(), password, query.to_string()))
}

/// An Azure replica: `url` (ours, `abs://CONTAINER/PATH?account=`, or
/// Litestream's `abs://ACCOUNT@CONTAINER/PATH`), or `account-name`,
/// `bucket` (the container), `path` and `endpoint`; `account-key` or
/// `sas-token`, else `LITESTREAM_AZURE_ACCOUNT_KEY` as in Litestream, else
/// the store's own `AZURE_STORAGE_*` variables when it opens.
pub(super) fn abs_url(
    replica: &FileReplica,
    settings: &ReplicaSettings,
    env: Env,
    label: &str,
    notices: &mut Vec<String>,
) -> Result<Located> {
    let fields = non_empty(&settings.bucket).is_some() || non_empty(&replica.path).is_some();
    let (mut account, container, prefix, mut params) = match &replica.url {
        Some(_) if fields => bail!("give either `url` or `bucket`/`path` for an abs replica, not both"),
        Some(url) => split_abs_url(url)?,
        None => (
            None,
            non_empty(&settings.bucket).context("`type: abs` needs `bucket` (the container)")?.to_string(),
            replica.path.clone().unwrap_or_default(),
            Vec::new(),
        ),
    };
    if let Some(name) = non_empty(&settings.account_name) {
        account = Some(name.to_string());
    }
    if let Some(name) = account {
        set_param(&mut params, "account", &name);
    }
    if let Some(endpoint) = non_empty(&settings.endpoint) {
        set_param(&mut params, "endpoint", endpoint);
    }
    let query = query_string(&params);
    let prefix = prefix.trim_matches('/');
    let url = if prefix.is_empty() {
        format!("abs://{container}{query}")
    } else {
        format!("abs://{container}/{prefix}{query}")
    };
    let credential = match (non_empty(&settings.account_key), non_empty(&settings.sas_token)) {
        (Some(key), token) => {
            if token.is_some() {
                notices.push(format!("{label}sas-token: not used: the account-key signs this replica's requests"));
            }
            Some(AbsCredential::AccountKey(key.to_string()))
        }
        (None, Some(token)) => Some(AbsCredential::SasToken(token.to_string())),
        (None, None) => env("LITESTREAM_AZURE_ACCOUNT_KEY").filter(|k| !k.is_empty()).map(AbsCredential::AccountKey),
    };
    Ok((url, credential.map(Credentials::Abs)))
}

/// `abs://[ACCOUNT@]CONTAINER[/PATH][?QUERY]`, or Litestream 0.3's
/// `abs://ACCOUNT@HOST/CONTAINER/PATH` (a blob endpoint's host), as the
/// account, container, prefix and query parameters.
fn split_abs_url(url: &str) -> Result<(Option<String>, String, String, Vec<String>)> {
    let rest = url.strip_prefix("abs://").context("an abs replica's url starts with abs://")?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = location.split_once('/').unwrap_or((location, ""));
    let (account, host) = match authority.split_once('@') {
        Some((account, host)) => (Some(account.to_string()), host),
        None => (None, authority),
    };
    let mut params = params_of(query);
    // Container names have no dots; a host does.
    if host.contains('.') {
        let (container, prefix) = path.split_once('/').unwrap_or((path, ""));
        let account = account.or_else(|| host.split('.').next().map(str::to_string));
        if !host.ends_with(".blob.core.windows.net") {
            set_param(&mut params, "endpoint", &format!("https://{host}"));
        }
        return Ok((account, container.to_string(), prefix.to_string(), params));
    }
    Ok((account, host.to_string(), path.to_string(), params))
}

/// A query string's `name=value` pairs, as written.
fn params_of(query: &str) -> Vec<String> {
    query.split('&').filter(|p| !p.is_empty()).map(str::to_string).collect()
}

/// `?` and the pairs, or nothing when there are none.
fn query_string(params: &[String]) -> String {
    if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) }
}

/// Sets query parameter `name` to `value` (escaped), over the URL's own.
fn set_param(params: &mut Vec<String>, name: &str, value: &str) {
    params.retain(|p| p.split('=').next() != Some(name));
    params.push(format!("{name}={}", encode(value)));
}

/// Escapes a query value (paths and endpoints may hold `&`, `=` or `%`).
fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string()
}

fn decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()
}

/// What a query value must escape: controls, space, and the characters that
/// delimit or escape in a query string.
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'&').add(b'=').add(b'%').add(b'#').add(b'+').add(b'?');
