//! Redaction of credentials in text bound for logs, status and error messages: a URL's
//! userinfo (`https://user:secret@host/`) becomes `https://***@host/`, wherever in the text the
//! URL appears (object-store and HTTP client errors quote the URL they called).

use std::borrow::Cow;

/// `text` with the userinfo of every URL in it replaced by `***`.
pub fn userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first character that cannot be in it.
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_wherever_the_url_appears() {
        assert_eq!(
            userinfo("Error performing PUT http://minio:s3cr3t@127.0.0.1:9000/b/k in 1s"),
            "Error performing PUT http://***@127.0.0.1:9000/b/k in 1s"
        );
        assert_eq!(
            userinfo("a https://u@h, b https://x:y@z?q=1 c"),
            "a https://***@h, b https://***@z?q=1 c"
        );
        assert_eq!(userinfo("https://host/path@v2"), "https://host/path@v2");
        assert_eq!(userinfo("no url: user@host"), "no url: user@host");
        assert_eq!(userinfo("\"s3://k:s@bucket\""), "\"s3://***@bucket\"");
    }
}
