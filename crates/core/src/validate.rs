//! Validation of names people choose.

use crate::error::CoreError;

/// Lowercases and trims an email address and checks its rough shape (`local@domain.tld`).
pub fn email(input: &str) -> Result<String, CoreError> {
    let email = input.trim().to_lowercase();
    let bad = |m: &str| CoreError::invalid("email", m.to_string());
    if email.len() > 254 {
        return Err(bad("is longer than 254 characters"));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(bad("must look like name@example.com"));
    };
    if local.is_empty() || domain.is_empty() || !domain.contains('.') || domain.contains('@') {
        return Err(bad("must look like name@example.com"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces"));
    }
    Ok(email)
}

/// A DNS label: 1–63 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`.
pub fn dns_label(field: &'static str, input: &str) -> Result<String, CoreError> {
    let ok = !input.is_empty()
        && input.len() <= 63
        && input
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !input.starts_with('-')
        && !input.ends_with('-');
    if ok {
        Ok(input.to_string())
    } else {
        Err(CoreError::invalid(
            field,
            "must be 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen",
        ))
    }
}

/// A display name: 1–64 printable characters.
pub fn display_name(field: &'static str, input: &str) -> Result<String, CoreError> {
    let name = input.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            field,
            "must be 1-64 printable characters",
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        assert!(dns_label("slug", "my-first-project").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(dns_label("slug", bad).is_err(), "{bad}");
        }
    }
}
