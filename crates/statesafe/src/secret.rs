//! Passwords kept out of what statesafe prints and records: a PostgreSQL URL's
//! password, found where the client library finds it, and the password of any other
//! URL or `password=` setting in this process's command line (recorded as the writer
//! of every commit and in the lock file's holder record).

/// The prefixes of a PostgreSQL URL, as the client library (tokio-postgres) takes them.
const PG_PREFIXES: [&str; 2] = ["postgres://", "postgresql://"];

/// The URL with every password the client library would take replaced by `***`, and
/// whether it had one. tokio-postgres reads the userinfo up to the *first* `@` of the
/// whole URL (a `/` or `?` before it belongs to the password), the query from the
/// first `?` after that, and decodes each query key (`pass%77ord` is `password`), so
/// this reads them the same way.
pub(crate) fn redact_url(url: &str) -> (String, bool) {
    let Some(prefix) = PG_PREFIXES.iter().find(|p| url.starts_with(**p)) else {
        return (url.to_string(), false);
    };
    let mut out = prefix.to_string();
    let mut found = false;
    let (creds, rest) = match ambiguous_at(&url[prefix.len()..]) {
        // Where the userinfo ends cannot be told (see `ambiguous_at`): counted as a
        // password, and hidden up to the last `@` before the query's values, or (an
        // `@` in the query: any text may be a password's) whole.
        Some(Some(last)) => {
            out.push_str("***@");
            found = true;
            (None, &url[prefix.len() + last + 1..])
        }
        Some(None) => return (format!("{prefix}***"), true),
        None => split_creds(&url[prefix.len()..]),
    };
    if let Some(creds) = creds {
        match creds.split_once(':') {
            Some((user, _)) => {
                found = true;
                out.push_str(user);
                out.push_str(":***@");
            }
            None => {
                out.push_str(creds);
                out.push('@');
            }
        }
    }
    let (base, query) = split_query(rest);
    out.push_str(base);
    if let Some(query) = query {
        out.push('?');
        let mut rest = query;
        let mut pairs = Vec::new();
        // As the library: a key runs to the next `=`, its value to the next `&`.
        while !rest.is_empty() {
            let Some((key, after)) = rest.split_once('=') else {
                pairs.push(rest.to_string()); // the library refuses the URL
                break;
            };
            let (value, next) = after.split_once('&').unwrap_or((after, ""));
            if decode(key) == "password" {
                found = true;
                pairs.push(format!("{key}=***"));
            } else {
                pairs.push(format!("{key}={value}"));
            }
            rest = next;
        }
        out.push_str(&pairs.join("&"));
    }
    (out, found)
}

/// The userinfo of a PostgreSQL URL's remainder (after `postgres://`), up to its first
/// `@` as the client library takes it, and what follows.
fn split_creds(rest: &str) -> (Option<&str>, &str) {
    match rest.split_once('@') {
        Some((creds, after)) => (Some(creds), after),
        None => (None, rest),
    }
}

/// Whether a PostgreSQL URL's remainder (after `postgres://`) holds an `@` whose
/// meaning the client library and the URL's writer may not share (review19pg,
/// review19c). The library takes the userinfo up to the first `@` of the whole URL, so:
/// - an `@` after that one and before the query's first value (`=`): a user name or
///   password with an `@` not written `%40` (`bot:p@ss@h/db`, `bot:p@ss?x@h/db`), or
///   a database name with one (`bot@h/team@corp`); the library would take a piece of
///   the password for the host (and look it up) and show it in its errors;
/// - a first `@` whose "user name" holds `/`, `?`, `=`, `&` or `#`, or whose userinfo
///   holds a `?` and then a `=`: the `@` was in the path or the query
///   (`h/db?password=p@ss`, `h:1/db?password=p@ss`), and the library would send the
///   text before it, password included, as the user name or password.
///
/// Such a URL is refused before it is used, and shown with everything up to the last
/// `@` before the query's values hidden (`Some(Some(i))`, `i` that `@`), or, for an
/// `@` in the query, everything (`Some(None)`).
fn ambiguous_at(rest: &str) -> Option<Option<usize>> {
    let (userinfo, after) = rest.split_once('@')?;
    let user = userinfo.split(':').next().unwrap_or_default();
    // A query inside the userinfo (`h:5432/db?password=p@ss`: a port taken for the
    // password's start): a password holding `?` and then `=` must write them encoded.
    if user.contains(['/', '?', '=', '&', '#'])
        || userinfo
            .find('?')
            .is_some_and(|q| userinfo[q..].contains('='))
    {
        return Some(None);
    }
    let values = after.find('=').unwrap_or(after.len());
    after[..values]
        .rfind('@')
        .map(|i| Some(userinfo.len() + 1 + i))
}

/// Whether a PostgreSQL URL holds an `@` that makes its userinfo ambiguous
/// ([`ambiguous_at`]): refused by the address parser.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn unencoded_at_in_userinfo(url: &str) -> bool {
    PG_PREFIXES
        .iter()
        .find(|p| url.starts_with(**p))
        .is_some_and(|p| ambiguous_at(&url[p.len()..]).is_some())
}

/// A PostgreSQL URL split at the `?` that starts its query, as the client library
/// splits it: the first `?` after the userinfo.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn split_url_query(url: &str) -> (&str, Option<&str>) {
    let Some(prefix) = PG_PREFIXES.iter().find(|p| url.starts_with(**p)) else {
        return url
            .split_once('?')
            .map_or((url, None), |(b, q)| (b, Some(q)));
    };
    let start = prefix.len()
        + split_creds(&url[prefix.len()..])
            .0
            .map_or(0, |c| c.len() + 1);
    match url[start..].find('?') {
        Some(i) => (&url[..start + i], Some(&url[start + i + 1..])),
        None => (url, None),
    }
}

fn split_query(rest: &str) -> (&str, Option<&str>) {
    rest.split_once('?')
        .map_or((rest, None), |(b, q)| (b, Some(q)))
}

/// Percent-decoding as the client library does it (a `%` not followed by two hex
/// digits stays as it is).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One command-line argument with its passwords replaced by `***`: those of the URLs
/// in it (a PostgreSQL URL's as [`redact_url`] finds them; another scheme's in the
/// userinfo of its authority) and the values of `password=` settings (a libpq
/// connection string, `--password=…`).
pub(crate) fn redact_arg(arg: &str) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(at) = rest.find("://") {
        // The scheme's characters are ASCII: as many bytes as characters.
        let start = at
            - rest[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || "+-.".contains(*c))
                .count();
        let end = rest[at..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |i| at + i);
        out.push_str(&redact_settings(&rest[..start]));
        let url = &rest[start..end];
        if PG_PREFIXES.iter().any(|p| url.starts_with(p)) {
            out.push_str(&redact_url(url).0);
        } else {
            out.push_str(&redact_authority(url, at - start + 3));
        }
        rest = &rest[end..];
    }
    out.push_str(&redact_settings(rest));
    out
}

/// Another scheme's URL with the password of its userinfo (`user:PASSWORD@`, the
/// authority running from `from` to the first `/`, `?` or `#`) replaced by `***`.
fn redact_authority(url: &str, from: usize) -> String {
    let end = url[from..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| from + i);
    match url[from..end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let colon = from + userinfo.find(':').expect("invariant: it has one");
            format!("{}:***{}", &url[..colon], &url[from + userinfo.len()..])
        }
        _ => url.to_string(),
    }
}

/// Text with the value of every `password=` (up to the next space, or a quoted value)
/// replaced by `***`.
fn redact_settings(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("password=") {
        let value = at + "password=".len();
        out.push_str(&rest[..value]);
        out.push_str("***");
        let tail = &rest[value..];
        let len = if let Some(quoted) = tail.strip_prefix('\'') {
            // A quoted value runs to the next quote not escaped by a backslash.
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map_or(tail.len(), |(i, _)| i + 2)
        } else {
            tail.find(char::is_whitespace).unwrap_or(tail.len())
        };
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password with an `@` that is not percent-encoded: the client library takes
    /// the userinfo up to the first `@` and the rest as the host, so the password's
    /// tail was shown in every message naming the URL (review19pg). Everything up to
    /// the last `@` before the query is hidden.
    #[test]
    fn the_tail_of_a_password_with_an_unencoded_at_is_hidden_too() {
        for (url, want) in [
            (
                "postgres://bot:pa@ssword@127.0.0.1:1/db?state=a",
                "postgres://***@127.0.0.1:1/db?state=a",
            ),
            (
                "postgres://bot:p@ss/w@rd@h/db?state=a&passfile=/home/a@b/pgpass",
                "postgres://***@h/db?state=a&passfile=/home/a@b/pgpass",
            ),
        ] {
            assert_eq!(redact_url(url), (want.to_string(), true), "{url}");
        }
    }

    #[test]
    fn every_password_the_client_library_takes_is_found() {
        for (url, want) in [
            (
                "postgres://u:secret@h:5/db?state=s&password=x",
                "postgres://u:***@h:5/db?state=s&password=***",
            ),
            // A `/` or `?` in the password: the userinfo runs to the first `@`.
            (
                "postgres://bot:se/cr?et@h/db?state=a",
                "postgres://bot:***@h/db?state=a",
            ),
            // Percent-encoded keys are decoded by the library.
            (
                "postgresql://bot@h/db?state=a&pass%77ord=hunter2&%70assword=x",
                "postgresql://bot@h/db?state=a&pass%77ord=***&%70assword=***",
            ),
            // An empty password is one, and so is `***`.
            ("postgres://u:@h/db", "postgres://u:***@h/db"),
            ("postgres://u:***@h/db", "postgres://u:***@h/db"),
        ] {
            assert_eq!(redact_url(url), (want.to_string(), true), "{url}");
        }
        for url in [
            "postgres://u@h/db?state=s",
            "postgres://h/db?state=s&passwords=x",
            "postgres://h",
        ] {
            assert_eq!(redact_url(url), (url.to_string(), false), "{url}");
        }
    }

    #[test]
    fn the_query_starts_after_the_userinfo() {
        assert_eq!(
            split_url_query("postgres://u:a?b@h/db?state=s&x=1"),
            ("postgres://u:a?b@h/db", Some("state=s&x=1"))
        );
        assert_eq!(
            split_url_query("postgres://u@h/db"),
            ("postgres://u@h/db", None)
        );
    }

    #[test]
    fn command_line_arguments_lose_their_passwords() {
        for (arg, want) in [
            (
                "postgres://u:s3/c@h/db?state=a",
                "postgres://u:***@h/db?state=a",
            ),
            (
                "--url=postgresql://u@h/db?pass%77ord=x",
                "--url=postgresql://u@h/db?pass%77ord=***",
            ),
            (
                "mirror https://me:tok@git.example/r.git and redis://:pw@r:6379/0",
                "mirror https://me:***@git.example/r.git and redis://:***@r:6379/0",
            ),
            (
                "host=db password=hunter2 dbname=ops",
                "host=db password=*** dbname=ops",
            ),
            ("--password=hunter2", "--password=***"),
            ("password='a \\' b' user=x", "password=*** user=x"),
            ("plain/arg:with@signs", "plain/arg:with@signs"),
            ("https://h/p?q=1", "https://h/p?q=1"),
        ] {
            assert_eq!(redact_arg(arg), want, "{arg}");
        }
    }
}
