//! The dashboard: server-rendered pages (askama templates in `templates/dashboard`) for what the
//! API does — accounts, projects, members, API keys, servers, deployments, grants, logs,
//! metrics, usage and the audit log. Forms work without JavaScript; the only script is the
//! copy button. Every form carries the session's CSRF token and cross-origin posts are refused.

mod account;
mod form;
mod projects;
mod servers;
mod views;

use crate::auth::{SESSION_COOKIE, cookie};
use crate::routes::AppState;
use askama::Template;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use ezforge_core::{CoreError, Principal, secret};
pub use form::FormData;

/// The dashboard's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(projects::home))
        .route("/dashboard/{*rest}", axum::routing::any(no_such_page))
        .route(
            "/dashboard/signup",
            get(account::signup_page).post(account::signup),
        )
        .route("/dashboard/login", get(account::login_page))
        .route("/dashboard/logout", post(account::logout))
        .route(
            "/dashboard/logout-everywhere",
            post(account::logout_everywhere),
        )
        .route("/dashboard/static/app.css", get(static_css))
        .route("/dashboard/static/app.js", get(static_js))
        .route("/dashboard/static/favicon.svg", get(static_icon))
        .route("/dashboard/projects", post(projects::create_project))
        .route("/dashboard/projects/{project}", get(projects::project))
        .route(
            "/dashboard/projects/{project}/servers",
            post(projects::create_server),
        )
        .route(
            "/dashboard/projects/{project}/keys",
            get(projects::keys).post(projects::create_key),
        )
        .route(
            "/dashboard/projects/{project}/keys/{key}/revoke",
            get(projects::revoke_key_page).post(projects::revoke_key),
        )
        .route(
            "/dashboard/projects/{project}/members",
            get(projects::members).post(projects::add_member),
        )
        .route(
            "/dashboard/projects/{project}/members/{user}/remove",
            post(projects::remove_member),
        )
        .route("/dashboard/projects/{project}/usage", get(projects::usage))
        .route(
            "/dashboard/projects/{project}/quota",
            post(projects::set_quota),
        )
        .route("/dashboard/projects/{project}/audit", get(projects::audit))
        .route("/dashboard/servers/{server}", get(servers::server))
        .route(
            "/dashboard/servers/{server}/auth",
            post(servers::update_auth),
        )
        .route(
            "/dashboard/servers/{server}/access",
            post(servers::update_access),
        )
        .route(
            "/dashboard/servers/{server}/tools",
            post(servers::update_tools),
        )
        .route("/dashboard/servers/{server}/deploy", post(servers::deploy))
        .route(
            "/dashboard/servers/{server}/rollback",
            post(servers::rollback),
        )
        .route(
            "/dashboard/servers/{server}/grants/{grant}/revoke",
            post(servers::revoke_grant),
        )
}

/// Pages allow only this origin's stylesheet and script, post only to this origin, and are
/// never framed.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Renders a page with the dashboard's security headers.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    let mut resp = match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    };
    secure_headers(&mut resp);
    resp
}

/// 303 to `to` (a path on this site).
pub(crate) fn see_other(to: &str) -> Response {
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    secure_headers(&mut resp);
    resp
}

/// 303 to `to` with a one-time message for the next page.
pub(crate) fn see_other_with(state: &AppState, to: &str, flash: Flash) -> Response {
    let mut resp = see_other(to);
    if let Ok(v) = HeaderValue::from_str(&flash.cookie(state.http.secure_cookies)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// A message for the next page, carried in a short-lived cookie rather than the URL, so that
/// nobody can craft a link that makes the dashboard display their words.
pub(crate) enum Flash {
    Notice(String),
    Error(String),
}

const FLASH_COOKIE: &str = "ezf_flash";

impl Flash {
    fn cookie(&self, secure: bool) -> String {
        let (kind, text) = match self {
            Flash::Notice(t) => ("n", t),
            Flash::Error(t) => ("e", t),
        };
        let value: String =
            url::form_urlencoded::byte_serialize(format!("{kind}:{text}").as_bytes()).collect();
        let secure = if secure { "; Secure" } else { "" };
        format!(
            "{FLASH_COOKIE}={value}; Path=/dashboard; HttpOnly; SameSite=Lax; Max-Age=60{secure}"
        )
    }

    /// The message the previous response left, if any.
    fn read(headers: &HeaderMap) -> Option<Flash> {
        let raw = cookie(headers, FLASH_COOKIE)?;
        let decoded: String = url::form_urlencoded::parse(format!("v={raw}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())?;
        let (kind, text) = decoded.split_once(':')?;
        let text: String = text.chars().take(500).collect();
        match kind {
            "n" => Some(Flash::Notice(text)),
            "e" => Some(Flash::Error(text)),
            _ => None,
        }
    }
}

/// A signed-in dashboard user.
pub(crate) struct Viewer {
    pub principal: Principal,
    pub email: String,
    pub csrf: String,
    flash: Option<Flash>,
}

impl Viewer {
    /// The signed-in user, or a redirect to the sign-in page.
    pub async fn of(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Response> {
        let to_login = || see_other("/dashboard/login");
        let token = cookie(headers, SESSION_COOKIE).ok_or_else(to_login)?;
        let principal = state
            .core
            .authenticate_session(&token)
            .await
            .map_err(|_| to_login())?;
        let email = principal
            .user()
            .map(|u| u.email.clone())
            .unwrap_or_default();
        Ok(Viewer {
            principal,
            email,
            csrf: secret::csrf_token(&token),
            flash: Flash::read(headers),
        })
    }

    /// The signed-in user of a form post whose CSRF token and origin check out.
    pub async fn posting(
        state: &AppState,
        headers: &HeaderMap,
        form: &FormData,
    ) -> Result<Viewer, Response> {
        let viewer = Viewer::of(state, headers).await?;
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
            && origin.trim_end_matches('/') != state.http.public_origin
        {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                "This form was sent from another site.",
            ));
        }
        match form.get("csrf") {
            Some(c) if secret::ct_eq(c, &viewer.csrf) => Ok(viewer),
            _ => Err(error_page(
                StatusCode::FORBIDDEN,
                "This form is not from this dashboard (or your session changed). Reload the page and try again.",
            )),
        }
    }

    /// Renders a page for this viewer; a one-time message shown on it is then forgotten.
    pub fn render(&self, status: StatusCode, page: &impl Template) -> Response {
        let mut resp = render(status, page);
        if self.flash.is_some()
            && let Ok(v) = HeaderValue::from_str(&format!(
                "{FLASH_COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Lax; Max-Age=0"
            ))
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        resp
    }

    /// The page frame: title, who is signed in, the one-time message.
    pub fn layout(&self, title: &str) -> views::Layout {
        let (notice, error) = match &self.flash {
            Some(Flash::Notice(n)) => (Some(n.clone()), None),
            Some(Flash::Error(e)) => (None, Some(e.clone())),
            None => (None, None),
        };
        views::Layout {
            title: title.to_string(),
            user_email: Some(self.email.clone()),
            csrf: self.csrf.clone(),
            notice,
            error,
        }
    }
}

/// A page that only says what went wrong.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let page = views::ErrorPage {
        l: views::Layout {
            title: "Error".into(),
            user_email: None,
            csrf: String::new(),
            notice: None,
            error: Some(message.to_string()),
        },
        heading: if status == StatusCode::NOT_FOUND {
            "Not found".into()
        } else {
            "This cannot be done".into()
        },
    };
    render(status, &page)
}

/// A domain error as a page: not found and forbidden get their status; the rest is a message.
pub(crate) fn core_error(e: CoreError) -> Response {
    let status = match &e {
        CoreError::NotFound(_) => StatusCode::NOT_FOUND,
        CoreError::Conflict(_) => StatusCode::CONFLICT,
        CoreError::Forbidden(_)
        | CoreError::ProjectMismatch
        | CoreError::EnvironmentMismatch { .. } => StatusCode::FORBIDDEN,
        CoreError::Internal(_) => {
            tracing::error!(error = %e, "dashboard request failed");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side. Try again.",
            );
        }
        _ => StatusCode::BAD_REQUEST,
    };
    error_page(status, &e.to_string())
}

/// After a failed form post: back to the page, with the error shown there.
pub(crate) fn back_with_error(state: &AppState, to: &str, e: impl std::fmt::Display) -> Response {
    see_other_with(state, to, Flash::Error(e.to_string()))
}

/// Any other path under `/dashboard`: an HTML 404 with the dashboard's headers.
async fn no_such_page() -> Response {
    error_page(StatusCode::NOT_FOUND, "There is no such page.")
}

/// Forms that must not take effect twice (creating a key: a reload re-posts it) carry a
/// one-time value; this node remembers the used ones for a day.
pub(crate) fn first_use(nonce: &str) -> bool {
    static USED: std::sync::OnceLock<moka::sync::Cache<String, ()>> = std::sync::OnceLock::new();
    let used = USED.get_or_init(|| {
        moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(std::time::Duration::from_secs(86_400))
            .build()
    });
    let fresh = !used.contains_key(nonce);
    if fresh {
        used.insert(nonce.to_string(), ());
    }
    fresh
}

async fn static_css() -> Response {
    static_file(
        "text/css; charset=utf-8",
        include_str!("../../static/app.css"),
    )
}

async fn static_js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../static/app.js"),
    )
}

async fn static_icon() -> Response {
    static_file("image/svg+xml", include_str!("../../static/favicon.svg"))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    secure_headers(&mut resp);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// `YYYY-MM-DD HH:MM UTC` of a unix time.
pub(crate) fn when(unix: i64) -> String {
    let t = ezforge_core::clock::to_datetime(unix);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute()
    )
}
