//! Variable expansion in configuration text, before it is parsed as YAML:
//! `${VAR}` and `$VAR` from the environment, `$PID` as this process's id
//! (Litestream 0.5.8 sets it, for per-process replica paths).
//!
//! One deliberate difference from Litestream: an unset variable is an error
//! naming it and its line, not an empty string, because an empty bucket,
//! path or key silently changes where backups go. `$$`, and a `$` followed by
//! anything but a name or `{`, are left as they are. Comments are not
//! expanded: a variable in a comment is not a setting, and an unset one there
//! must not fail.

use anyhow::{Result, bail};

/// Expands variables in `text`, reading them through `env`.
pub fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let (setting, comment) = line.split_at(yaml_comment_start(line).unwrap_or(line.len()));
        let mut rest = setting;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
                let Some(end) = braced.find('}') else {
                    bail!("line {number}: unterminated ${{ in {:?}", line.trim_end());
                };
                (&braced[..end], end + 2)
            } else if let Some(protected) = after.strip_prefix('$') {
                // `$$` stays as written (both characters), so that a `$` it
                // protects never starts a name.
                out.push_str("$$");
                rest = protected;
                continue;
            } else {
                let len = name_len(after);
                if len == 0 {
                    out.push('$');
                    rest = after;
                    continue;
                }
                (&after[..len], len)
            };
            out.push_str(&lookup(name, number, env)?);
            rest = &after[consumed..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// The length of the variable name at the start of `text`:
/// `[A-Za-z_][A-Za-z0-9_]*`, or 0.
fn name_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars.find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_')).map_or(text.len(), |(index, _)| index)
}

fn lookup(name: &str, line: usize, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    if name == "PID" {
        return Ok(std::process::id().to_string());
    }
    match env(name) {
        Some(value) => Ok(value),
        None => bail!(
            "line {line}: environment variable {name} is not set (Litestream would put an empty string here; \
             set it, or write a literal `$` followed by letters through a variable)"
        ),
    }
}

/// Where a YAML comment starts on `line`: a `#` at the start of the line or
/// after whitespace, outside quoted scalars.
fn yaml_comment_start(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (index, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return Some(index),
            None => {}
        }
        previous = c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "BUCKET" => Some("my-bucket".into()),
            "B" => Some("b".into()),
            "PID" => Some("not the pid".into()),
            _ => None,
        }
    }

    #[test]
    fn braced_bare_and_pid() {
        let pid = std::process::id();
        for (text, expanded) in [
            ("url: s3://${BUCKET}/db", "url: s3://my-bucket/db".to_string()),
            ("url: s3://$BUCKET/db", "url: s3://my-bucket/db".into()),
            ("path: /tmp/$PID/db", format!("path: /tmp/{pid}/db")),
            ("path: /tmp/${PID}/db", format!("path: /tmp/{pid}/db")),
            // A name ends at the first character that cannot be in one.
            ("x: $B-$B.$B/", "x: b-b.b/".into()),
        ] {
            assert_eq!(expand(text, &env).unwrap(), expanded, "{text}");
        }
        // ... and `_` can: `$B_` is another variable.
        let err = expand("x: $B_", &env).unwrap_err().to_string();
        assert!(err.contains("B_ is not set") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn dollars_that_start_no_name_stay() {
        for text in ["price: $5", "a: $$BUCKET", "a: $", "a: $ b", "a: 100$", "a: $-x", "a: $$"] {
            assert_eq!(expand(text, &env).unwrap(), text);
        }
    }

    #[test]
    fn unset_and_unterminated_name_the_line() {
        let err = expand("a: 1\nb: $NOPE\n", &env).unwrap_err().to_string();
        assert!(err.contains("NOPE is not set") && err.contains("line 2"), "{err}");
        let err = expand("a: ${BUCKET\n", &env).unwrap_err().to_string();
        assert!(err.contains("unterminated") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn comments_are_left_alone() {
        assert_eq!(expand("a: $B # $NOPE ${NOPE}\n# $NOPE\n", &env).unwrap(), "a: b # $NOPE ${NOPE}\n# $NOPE\n");
        // A quoted `#` does not start a comment.
        let err = expand("a: \"x#$NOPE\"\n", &env).unwrap_err().to_string();
        assert!(err.contains("NOPE"), "{err}");
    }
}
