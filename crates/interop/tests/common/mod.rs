//! What the interop tests share: the person at the browser (follows redirects, keeps cookies,
//! signs in and allows), and reading a JWT's payload.

#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;
use url::Url;

pub const EMAIL: &str = "owner@example.com";
pub const PASSWORD: &str = "correct horse battery staple";

// ---------------------------------------------------------------------------------------------
// The person at the browser: follows redirects, keeps cookies, signs in and allows.

pub struct Browser {
    http: reqwest::Client,
    /// (name, value, path)
    jar: Vec<(String, String, String)>,
    /// Each request made, as `METHOD path -> status`.
    pub hops: Vec<String>,
}

enum Step {
    Get(Url),
    Post(Url, Vec<(String, String)>),
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client"),
            jar: Vec::new(),
            hops: Vec::new(),
        }
    }

    fn cookies_for(&self, url: &Url) -> Option<String> {
        let cookies: Vec<String> = self
            .jar
            .iter()
            .filter(|(_, _, path)| url.path().starts_with(path.as_str()))
            .map(|(name, value, _)| format!("{name}={value}"))
            .collect();
        (!cookies.is_empty()).then(|| cookies.join("; "))
    }

    fn keep_cookies(&mut self, resp: &reqwest::Response) {
        for header in resp.headers().get_all(SET_COOKIE) {
            let header = header.to_str().expect("ASCII cookie");
            let mut parts = header.split(';').map(str::trim);
            let (name, value) = parts
                .next()
                .and_then(|p| p.split_once('='))
                .expect("name=value");
            let mut path = "/".to_string();
            let mut expired = false;
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                if k.eq_ignore_ascii_case("path") {
                    path = v.to_string();
                } else if k.eq_ignore_ascii_case("max-age") && v == "0" {
                    expired = true;
                }
            }
            self.jar.retain(|(n, _, p)| !(n == name && *p == path));
            if !expired {
                self.jar.push((name.into(), value.into(), path));
            }
        }
    }

    /// Opens `start` and goes wherever the server leads, signing in and allowing when asked,
    /// until the server sends the browser to `redirect_uri`; returns that URL.
    pub async fn authorize(&mut self, start: &str, redirect_uri: &str) -> String {
        let mut step = Step::Get(Url::parse(start).expect("authorization URL"));
        for _ in 0..10 {
            let (url, req, method) = match step {
                Step::Get(url) => (url.clone(), self.http.get(url), "GET"),
                Step::Post(url, form) => (url.clone(), self.http.post(url).form(&form), "POST"),
            };
            let req = match self.cookies_for(&url) {
                Some(c) => req.header(COOKIE, c),
                None => req,
            };
            let resp = req.send().await.expect("server answers");
            self.keep_cookies(&resp);
            let status = resp.status();
            self.hops
                .push(format!("{method} {} -> {}", url.path(), status.as_u16()));
            if status.is_redirection() {
                let location = resp.headers()[LOCATION].to_str().expect("ASCII Location");
                let target = url.join(location).expect("Location is a URL");
                if target.as_str().starts_with(redirect_uri) {
                    return target.to_string();
                }
                step = Step::Get(target);
            } else if status.is_success() {
                let page = resp.text().await.expect("page");
                let (action, fields) = fill_form(&page);
                step = Step::Post(url.join(&action).expect("form action"), fields);
            } else {
                let page = resp.text().await.unwrap_or_default();
                panic!("{method} {url} answered {status}: {page}");
            }
        }
        panic!("too many hops: {:?}", self.hops);
    }
}

/// The attribute text of each `<tag …>` in `html`.
pub fn tags<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let end = after.find('>').expect("tag closes");
        out.push(&after[..end]);
        rest = &after[end..];
    }
    out
}

pub fn attr(tag: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = tag
        .match_indices(&marker)
        .find(|(i, _)| *i == 0 || tag.as_bytes()[i - 1] == b' ')?
        .0
        + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#x27;", "'")
            .replace("&amp;", "&"),
    )
}

/// The page's one form, filled in the way a person would: hidden fields as they are, the email
/// and password when asked for them, and the "Allow" button when there is one.
pub fn fill_form(page: &str) -> (String, Vec<(String, String)>) {
    let start = page
        .find("<form ")
        .unwrap_or_else(|| panic!("no form in {page}"));
    let end = page[start..].find("</form>").expect("form closes") + start;
    let form = &page[start..end];
    let action = attr(tags(form, "form")[0], "action").expect("form action");
    let mut fields = Vec::new();
    for input in tags(form, "input") {
        let name = attr(input, "name").expect("input name");
        let value = match (attr(input, "type").as_deref(), name.as_str()) {
            (Some("hidden"), _) => attr(input, "value").unwrap_or_default(),
            (_, "email") => EMAIL.into(),
            (_, "password") => PASSWORD.into(),
            _ => panic!("unexpected input {input}"),
        };
        fields.push((name, value));
    }
    for button in tags(form, "button") {
        if let (Some(name), Some("allow")) =
            (attr(button, "name"), attr(button, "value").as_deref())
        {
            fields.push((name, "allow".into()));
        }
    }
    (action, fields)
}

/// The payload of a JWT, unverified.
pub fn claims(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {jwt}");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url")).expect("JSON")
}
