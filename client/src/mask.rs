//! Masking for logs: user IDs, keys and credentials never appear in clear.
//!
//! Every log line of this crate that names a subject goes through these functions (a
//! [`crate::Key`] shows its scope and masks its subject with [`mask_id`]). They are public so
//! that an application can log the same way.

/// What replaces the hidden part. Always four characters, so the length of the hidden part does
/// not show.
const STARS: &str = "****";

/// Masks an identifier: its first two characters and `****`, e.g. `1234567` -> `12****`. An
/// identifier shorter than six characters shows fewer (`42` -> `****`), so that at most a third
/// of it is ever visible.
pub fn mask_id(id: &str) -> String {
    let shown = (id.chars().count() / 3).min(2);
    let mut masked: String = id.chars().take(shown).collect();
    masked.push_str(STARS);
    masked
}

/// Masks a Redis key: the `prefix`, which is configuration and not a secret, stays when the key
/// starts with it, and the rest is masked by [`mask_id`], e.g. `ratelimit:12****`.
pub fn mask_key(prefix: &str, key: &str) -> String {
    match key.strip_prefix(prefix) {
        Some(rest) if !prefix.is_empty() => format!("{prefix}{}", mask_id(rest)),
        _ => mask_id(key),
    }
}

/// Masks the credentials of a Redis URL: `redis://user:secret@host:6379/0` becomes
/// `redis://user:****@host:6379/0`, and a user alone (`redis://token@host`) is masked whole.
/// Query parameters whose name mentions a password, a secret or a token have their value
/// masked. Anything that does not look like a URL is masked whole.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return STARS.to_string();
    };
    // Everything before the last `@` is credentials, even when a password holds an unencoded
    // `/`, `?` or `#`: better mask too much than leak.
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (host, tail) = after.split_at(host_end);
    let authority = match userinfo {
        None => host.to_string(),
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, _password)) if !user.contains(['/', '?', '#']) => {
                format!("{user}:{STARS}@{host}")
            }
            _ => format!("{STARS}@{host}"),
        },
    };
    format!("{scheme}://{authority}{}", mask_query(tail))
}

/// Masks the values of sensitive query parameters, and drops a fragment.
fn mask_query(tail: &str) -> String {
    let tail = tail.split('#').next().unwrap_or_default();
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((name, _)) if is_sensitive(name) => format!("{name}={STARS}"),
            _ => parameter.to_string(),
        })
        .collect();
    format!("{path}?{}", parameters.join("&"))
}

fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token", "auth", "key"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_show_at_most_two_characters_and_a_third() {
        assert_eq!(mask_id("1234567"), "12****");
        assert_eq!(mask_id("user-1234567890"), "us****");
        assert_eq!(mask_id("12345"), "1****");
        assert_eq!(mask_id("42"), "****");
        assert_eq!(mask_id(""), "****");
        assert_eq!(mask_id("éèêëēė"), "éè****");
    }

    #[test]
    fn keys_keep_the_prefix() {
        assert_eq!(
            mask_key("ratelimit:", "ratelimit:1234567:/search"),
            "ratelimit:12****"
        );
        assert_eq!(mask_key("ratelimit:", "other:1234567"), "ot****");
        assert_eq!(mask_key("", "1234567"), "12****");
    }

    #[test]
    fn urls_lose_their_credentials() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@host:6379/0", "redis://:****@host:6379/0"),
            ("rediss://alice:s3cret@host", "rediss://alice:****@host"),
            ("redis://s3cret@host/", "redis://****@host/"),
            ("redis://a:b@c@host/1", "redis://a:****@host/1"),
            (
                "redis://host/0?protocol=resp3&password=s3cret",
                "redis://host/0?protocol=resp3&password=****",
            ),
            ("redis://host/0#frag", "redis://host/0"),
            ("redis://:pa/ss?w#rd@host:1/2", "redis://:****@host:1/2"),
            ("s3cret", "****"),
        ];
        for (url, masked) in cases {
            assert_eq!(mask_url(url), masked, "{url}");
        }
    }
}
