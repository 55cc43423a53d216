//! The few HTML pages the authorization flow shows people: sign-in, consent, errors.
//! Every interpolated value goes through [`esc`]. Pages work without JavaScript.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// HTML-escapes text for element content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f5f6f8;color:#1a1d21;margin:0}\
main{max-width:28rem;margin:8vh auto;background:#fff;border:1px solid #d8dce2;border-radius:10px;padding:2rem}\
h1{font-size:1.35rem;margin:0 0 1rem}p{line-height:1.5}label{display:block;margin:.9rem 0 .3rem;font-weight:600}\
input[type=email],input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #8a929c;border-radius:6px;font-size:1rem}\
button{font-size:1rem;padding:.6rem 1.2rem;border-radius:6px;border:1px solid #1d4ed8;background:#1d4ed8;color:#fff;cursor:pointer;margin-top:1.2rem}\
button.secondary{background:#fff;color:#1d4ed8;margin-left:.5rem}button:focus,input:focus{outline:3px solid #1d4ed8;outline-offset:2px}\
.error{background:#fdecec;border:1px solid #e5a4a4;color:#8a1c1c;padding:.7rem;border-radius:6px}\
ul.scopes{padding-left:1.2rem}ul.scopes li{margin:.4rem 0}code{background:#eef0f3;padding:.1rem .3rem;border-radius:4px;word-break:break-all}\
.muted{color:#4a525c;font-size:.92rem}";

/// A full page with the security headers every page carries.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · ezForge</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        esc(title)
    );
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer` (the API's default): under it browsers send `Origin: null` on the
    // page's own form posts, and the consent form's origin check would refuse every browser.
    // `same-origin` still sends nothing to other sites, so no code or URL leaks.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Cannot continue",
        &format!(
            "<h1>This request cannot continue</h1><p class=\"error\" role=\"alert\">{}</p>\
             <p class=\"muted\">Nothing was shared with the application. Return to it and try again.</p>",
            esc(message)
        ),
    )
}

pub fn sign_in(next: &str, csrf: &str, email: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<h1>Sign in to ezForge</h1>{error}\
         <form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required autofocus value=\"{}\">\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form>",
        esc(next),
        esc(csrf),
        esc(email)
    )
}

pub struct ConsentView<'a> {
    pub client_name: &'a str,
    pub client_id: &'a str,
    pub redirect_host: &'a str,
    pub server_name: &'a str,
    pub resource: &'a str,
    pub user_email: &'a str,
    pub scopes: Vec<(&'a str, &'static str)>,
    pub sealed: &'a str,
    pub csrf: &'a str,
}

pub fn consent(v: &ConsentView<'_>) -> String {
    let scopes: String = v
        .scopes
        .iter()
        .map(|(s, d)| {
            format!(
                "<li><strong>{}</strong> <code>{}</code></li>",
                esc(d),
                esc(s)
            )
        })
        .collect();
    format!(
        "<h1>Allow {client} to use {server}?</h1>\
         <p><strong>{client}</strong> <span class=\"muted\">(<code>{client_id}</code>)</span> wants to act as you \
         (<strong>{email}</strong>) on the MCP server <strong>{server}</strong> <span class=\"muted\">(<code>{resource}</code>)</span>.</p>\
         <p>It will be able to:</p><ul class=\"scopes\">{scopes}</ul>\
         <p class=\"muted\">After you choose, your browser goes to <strong>{host}</strong>. Only allow applications you trust.</p>\
         <form method=\"post\" action=\"/authorize\">\
         <input type=\"hidden\" name=\"request\" value=\"{sealed}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button></form>",
        client = esc(v.client_name),
        client_id = esc(v.client_id),
        email = esc(v.user_email),
        server = esc(v.server_name),
        resource = esc(v.resource),
        host = esc(v.redirect_host),
        sealed = esc(v.sealed),
        csrf = esc(v.csrf),
    )
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#x27;y&#x27;&lt;/script&gt;"
        );
    }
}
