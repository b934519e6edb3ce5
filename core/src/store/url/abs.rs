//! `abs://` URLs: the container, the prefix, the account and the endpoint; never a secret.

use super::{StoreUrl, parse_endpoint, parse_prefix, query_pairs};

pub(super) fn parse_abs(rest: &str) -> Result<StoreUrl, String> {
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (container, prefix) = location.split_once('/').unwrap_or((location, ""));
    if let Some(problem) = container_name_problem(container) {
        return Err(problem);
    }
    let prefix = parse_prefix(prefix)?;
    let (mut account, mut endpoint) = (None, None);
    for (name, value) in query_pairs(query) {
        match name {
            "account" | "account-name" if !value.is_empty() => account = Some(value),
            "endpoint" => endpoint = Some(parse_endpoint(value)?.trim_end_matches('/').to_string()),
            // URLs end up in logs and messages; secrets stay out of them.
            name if SECRET_PARAMETERS.contains(&name) => {
                return Err(format!(
                    "{name:?}: credentials do not go in the URL (it is shown in logs and messages); set \
                     AZURE_STORAGE_ACCOUNT_KEY to the account key or AZURE_STORAGE_SAS_TOKEN to a SAS token"
                ));
            }
            other => return Err(format!("unknown query parameter {other:?} (known: account, endpoint)")),
        }
    }
    Ok(StoreUrl::Abs { container: container.to_string(), prefix, account, endpoint })
}

/// Query parameters that carry (or are part of) an Azure secret.
const SECRET_PARAMETERS: &[&str] = &["key", "account-key", "account_key", "sas", "sas-token", "sig", "sv", "se", "sp"];

/// `url` with the values of [`SECRET_PARAMETERS`] replaced, for messages.
pub(super) fn redact_secrets(url: &str) -> String {
    let Some((location, query)) = url.split_once('?') else { return url.to_string() };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_PARAMETERS.contains(&name) => format!("{name}=<redacted>"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{location}?{}", pairs.join("&"))
}

/// What is wrong with an Azure container name, if anything: Azure allows
/// 3 to 63 lowercase letters, digits and hyphens, starting and ending with
/// a letter or digit, with no two hyphens in a row.
pub(crate) fn container_name_problem(container: &str) -> Option<String> {
    let valid = (3..=63).contains(&container.len())
        && container.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !container.starts_with('-')
        && !container.ends_with('-')
        && !container.contains("--");
    (!valid).then(|| {
        format!(
            "container name {container:?} is not valid (3 to 63 lowercase letters, digits and single hyphens, \
             starting and ending with a letter or digit)"
        )
    })
}
