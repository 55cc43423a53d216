//! A real server on 127.0.0.1:0 against a fresh database, with a clock the test can move.

#![allow(dead_code)]

use ezforge_client::{Auth, Client, Session};
use ezforge_core::ManualClock;
use ezforge_proto::{CreateApiKeyRequest, Environment, SignupRequest};
use ezforge_server::{RunningServer, ServerConfig};
pub mod oauth;

use ezforge_testkit::TestDb;
use std::sync::Arc;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestServer {
    pub server: RunningServer,
    pub url: String,
    pub clock: ManualClock,
    pub db: TestDb,
    _data: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(db: TestDb) -> TestServer {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: TestDb, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let data = tempfile::tempdir().expect("data dir");
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            data.path().to_path_buf(),
        );
        config.database_url = Some(db.url.clone());
        tweak(&mut config);
        let clock = ManualClock::new();
        let server = ezforge_server::app::start_with_clock(config, Arc::new(clock.clone()))
            .await
            .expect("server starts");
        let url = format!("http://{}", server.addr);
        TestServer {
            server,
            url,
            clock,
            db,
            _data: data,
        }
    }

    /// Stops the server gracefully (its request log flushed) and starts a new one on the same
    /// database and data directory, as an operator's restart would.
    pub async fn restart(self) -> TestServer {
        let TestServer {
            server, db, _data, ..
        } = self;
        server.shutdown().await.expect("graceful shutdown");
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            _data.path().to_path_buf(),
        );
        config.database_url = Some(db.url.clone());
        let clock = ManualClock::new();
        let server = ezforge_server::app::start_with_clock(config, Arc::new(clock.clone()))
            .await
            .expect("server restarts");
        let url = format!("http://{}", server.addr);
        TestServer {
            server,
            url,
            clock,
            db,
            _data,
        }
    }

    /// Another node of the same deployment: its own server on the same database and master key
    /// (this one's data directory), as a second `ezforge serve` behind a load balancer would
    /// be. Returns it and its URL.
    pub async fn another_node(
        &self,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> (RunningServer, String) {
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            self._data.path().to_path_buf(),
        );
        config.database_url = Some(self.db.url.clone());
        tweak(&mut config);
        let server = ezforge_server::app::start_with_clock(config, Arc::new(self.clock.clone()))
            .await
            .expect("second node starts");
        let url = format!("http://{}", server.addr);
        (server, url)
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    pub fn as_session(&self, s: &Session) -> Client {
        self.client().with_auth(Auth::Session {
            token: s.token.clone(),
            csrf: s.info.csrf_token.clone(),
        })
    }

    pub fn as_key(&self, key: &str) -> Client {
        self.client().with_auth(Auth::ApiKey(key.to_string()))
    }

    pub async fn signup(&self, email: &str) -> Session {
        self.client()
            .signup(&SignupRequest {
                email: email.into(),
                password: PASSWORD.into(),
                invite_code: None,
            })
            .await
            .expect("sign-up")
    }

    /// Signs up `email`, creates `project`, and returns the owner's session.
    pub async fn owner_of(&self, email: &str, project: &str) -> Session {
        let s = self.signup(email).await;
        self.as_session(&s)
            .create_project(project)
            .await
            .expect("create project");
        s
    }

    pub async fn key(
        &self,
        owner: &Session,
        project: &str,
        scopes: &[&str],
        env: Environment,
    ) -> String {
        let req = CreateApiKeyRequest {
            name: "test".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            environment: env,
            expires_at: None,
        };
        self.as_session(owner)
            .create_key(project, &req)
            .await
            .expect("create key")
            .secret
    }

    /// A raw request, for what the typed client will not send.
    pub fn raw(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}
