//! `sftp://USER@HOST:PORT/PATH` URLs; never a password.

use super::{StoreUrl, parse_bool, query_pairs};

pub(super) fn parse_sftp(rest: &str) -> Result<StoreUrl, String> {
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    if location.contains('#') {
        return Err("fragments are not allowed".into());
    }
    let (authority, path) = location.find('/').map_or((location, ""), |slash| location.split_at(slash));
    let Some((user, host_port)) = authority.rsplit_once('@') else {
        return Err("missing user: name the account to log in as (sftp://USER@host/path)".into());
    };
    if user.contains(':') {
        return Err(format!(
            "passwords do not go in the URL (it appears in logs and process lists): set the environment variable \
             {SFTP_PASSWORD_ENV}, or use a key file (?key-path=)"
        ));
    }
    if user.is_empty() {
        return Err("missing user: name the account to log in as (sftp://USER@host/path)".into());
    }
    // `[::1]:2222`, `host:2222` or `host`.
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').ok_or("unclosed '[' in the host")?;
            (host, after.strip_prefix(':'))
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    let port = match port {
        None => 22,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {port:?} is not a number from 1 to 65535"))?,
    };
    let (home_relative, folder) = match path.strip_prefix("/~") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => (true, rest.trim_matches('/')),
        _ => (false, path.trim_matches('/')),
    };
    if folder.is_empty() && !home_relative {
        return Err(
            "the server's filesystem root cannot be a store: name a folder (or /~/ for the login folder)".into()
        );
    }
    // Dot-folders are fine on the server (`/home/app/.backups`); only the
    // store's own keys must not start with a dot.
    if folder.contains(['\\', '\0']) || (!folder.is_empty() && folder.split('/').any(|c| matches!(c, "" | "." | "..")))
    {
        return Err(format!("path {path:?} has an empty, '.' or '..' component, a backslash or a NUL byte"));
    }
    let root = if home_relative { folder.to_string() } else { format!("/{folder}") };
    let (mut key_path, mut known_hosts, mut host_key, mut insecure_skip_host_key) = (None, None, None, false);
    for (name, value) in query_pairs(query) {
        match name {
            "key-path" if !value.is_empty() => key_path = Some(value.into()),
            "known-hosts" if !value.is_empty() => known_hosts = Some(value.into()),
            "host-key" if !value.is_empty() => host_key = Some(value),
            "insecure-skip-host-key" => insecure_skip_host_key = parse_bool(name, &value)?,
            "password" => return Err(format!("passwords do not go in the URL: set {SFTP_PASSWORD_ENV}")),
            other => {
                return Err(format!(
                    "unknown query parameter {other:?} (known: key-path, known-hosts, host-key, and \
                     insecure-skip-host-key for tests)"
                ));
            }
        }
    }
    Ok(StoreUrl::Sftp {
        user: user.to_string(),
        host: host.to_string(),
        port,
        root,
        key_path,
        known_hosts,
        host_key,
        insecure_skip_host_key,
    })
}

/// `url` with the password of a `user:password@` replaced by `***`.
pub(super) fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***{}", &rest[userinfo.len()..])
        }
        _ => url.to_string(),
    }
}

/// Where an SFTP password goes (the URL refuses one).
pub(crate) const SFTP_PASSWORD_ENV: &str = "DISTRIBUTARY_SFTP_PASSWORD";
