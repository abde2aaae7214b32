//! HTML building: every piece of text that did not come from this file goes through [`esc`], so a
//! description holding `<script>` is shown as text. Pages are plain server-rendered HTML with one
//! stylesheet the portal serves itself, and no script at all.

use std::fmt::Write as _;

/// The stylesheet, served at [`CSS_PATH`].
pub const CSS: &str = include_str!("portal.css");
/// Where the stylesheet is served.
pub const CSS_PATH: &str = "/portal.css";
/// Sent with every page: nothing but the portal's own origin, no inline script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// `text` with `& < > " '` replaced by entities: safe in element content and in quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded for a path segment or query value.
pub fn url_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Who is signed in, for the page header (`None` on the sign-in page).
pub struct Viewer<'a> {
    /// Their user name.
    pub user: &'a str,
    /// Their session's CSRF token, for the sign-out form.
    pub csrf: &'a str,
}

/// A whole page: `body` is HTML already built (every outside text escaped by its builder).
pub fn page(title: &str, viewer: Option<Viewer<'_>>, body: &str) -> String {
    let nav = match viewer {
        Some(v) => format!(
            "<nav><a href=\"/\">Catalog</a> <a href=\"/subscriptions\">My subscriptions</a> \
             <a href=\"/approvals\">Approvals</a> <a href=\"/consumers\">Consumers</a> \
             <a href=\"/usage\">Usage</a>\
             <form class=\"signout\" method=\"post\" action=\"/signout\">{}\
             <span class=\"who\">{}</span> <button>Sign out</button></form></nav>",
            csrf_field(v.csrf),
            esc(v.user)
        ),
        None => String::new(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Tollgate</title><link rel=\"stylesheet\" href=\"{CSS_PATH}\"></head>\
         <body><header><a class=\"brand\" href=\"/\">Tollgate</a>{nav}</header><main>{body}</main></body></html>\n",
        esc(title)
    )
}

/// The hidden field every form carries.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let p = page("<b>", None, "");
        assert!(p.contains("<title>&lt;b&gt; · Tollgate</title>"));
    }

    #[test]
    fn url_parts_are_percent_encoded() {
        assert_eq!(url_part("team-a"), "team-a");
        assert_eq!(url_part("a b/c?&=\""), "a%20b%2Fc%3F%26%3D%22");
    }
}
