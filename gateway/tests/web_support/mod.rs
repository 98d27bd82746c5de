//! A whole gateway node in-process (the same `App::build` as `main`), its
//! development identity provider spoken to over real HTTP, and a minimal
//! browser: a cookie jar and manual redirects, so every hop is visible.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow, bail};
use chaperone_gateway::app::App;
use chaperone_gateway::config::Config;
use chaperone_gateway::dev::idp::DevIdp;
use chaperone_gateway::store::{LocalStore, Store};
use chaperone_protocol::signal::{ClientMsg, PROTOCOL_VERSION, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

pub const STEP: std::time::Duration = std::time::Duration::from_secs(5);

/// A running node.
pub struct Node {
    pub addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    pub app: App,
    pub store: Store,
    pub recordings: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Node {
    /// A development node on a free port, after `tweak` edits its configuration.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Result<Node> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = Config {
            dev: true,
            ..Config::default()
        };
        config.http.listen = addr;
        let recordings = tempfile::tempdir()?;
        config.recorder.dir = recordings.path().join("recordings").display().to_string();
        tweak(&mut config);
        config.validate()?;
        let store = Store::Local(LocalStore::new());
        let app = App::build(&config, store.clone(), format!("http://{addr}")).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = app.router.clone();
        tokio::spawn(chaperone_gateway::http::run(
            listener,
            router,
            config.http.limits(),
            async move {
                let _ = stopped.await;
            },
        ));
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let metrics_addr = metrics_listener.local_addr()?;
        tokio::spawn(chaperone_gateway::http::run(
            metrics_listener,
            app.metrics_router(),
            chaperone_serve::Limits::default(),
            std::future::pending(),
        ));
        Ok(Node {
            addr,
            metrics_addr,
            app,
            store,
            recordings,
            stop: Some(stop),
        })
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn idp(&self) -> &DevIdp {
        self.app.devidp.as_ref().unwrap()
    }

    /// One scrape of `/metrics`.
    pub async fn scrape(&self) -> Result<String> {
        Ok(
            reqwest::get(format!("http://{}/metrics", self.metrics_addr))
                .await?
                .text()
                .await?,
        )
    }

    pub fn browser(&self) -> Browser {
        Browser::new(self.base())
    }
}

/// What a page or API call answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `<body data-page="...">`.
    pub fn page(&self) -> Option<String> {
        let at = self.body.find("data-page=\"")? + "data-page=\"".len();
        let end = self.body[at..].find('"')?;
        Some(self.body[at..at + end].to_owned())
    }

    pub fn location(&self) -> Option<String> {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
}

/// A browser: cookies per name (one host), no automatic redirects.
pub struct Browser {
    pub base: String,
    pub cookies: BTreeMap<String, String>,
    http: reqwest::Client,
}

impl Browser {
    pub fn new(base: String) -> Self {
        Self {
            base,
            cookies: BTreeMap::new(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    fn absorb(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(SET_COOKIE) {
            let Ok(text) = v.to_str() else { continue };
            let first = text.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.split_once('=') {
                if v.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Result<Answer> {
        let resp = req.header("cookie", self.cookie_header()).send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        self.absorb(&headers);
        let body = resp.text().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer> {
        let req = self.http.get(self.url(path));
        self.send(req).await
    }

    /// A same-origin JSON POST, as the page's script makes it.
    pub async fn post(&mut self, path: &str, body: serde_json::Value) -> Result<Answer> {
        let req = self
            .http
            .post(self.url(path))
            .header("origin", self.base.clone())
            .json(&body);
        self.send(req).await
    }

    /// A POST from another site (no matching `Origin`).
    pub async fn post_from(
        &mut self,
        origin: Option<&str>,
        path: &str,
        body: serde_json::Value,
    ) -> Result<Answer> {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        self.send(req).await
    }

    pub async fn post_form(&mut self, url: &str, form: &[(String, String)]) -> Result<Answer> {
        let req = self
            .http
            .post(self.url(url))
            .header("origin", self.base.clone())
            .form(form);
        self.send(req).await
    }

    /// Starts a login: `/login`, then the provider's picker page; returns
    /// the authorization request's parameters.
    pub async fn start_login(&mut self) -> Result<Vec<(String, String)>> {
        let start = self.get("/login").await?;
        if start.status != StatusCode::SEE_OTHER {
            bail!("login did not redirect: {} {}", start.status, start.body);
        }
        let to = start.location().context("no location")?;
        let picker = self.get(&to).await?;
        if picker.page().as_deref() != Some("dev-idp") {
            bail!("no picker page: {} {}", picker.status, picker.body);
        }
        let url = reqwest::Url::parse(&to)?;
        Ok(url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect())
    }

    /// Picks `person` on the provider's page; returns the callback URL the
    /// provider redirects to.
    pub async fn pick(&mut self, params: &[(String, String)], person: &str) -> Result<String> {
        let mut form = params.to_vec();
        form.push(("person".to_owned(), person.to_owned()));
        let chosen = self.post_form("/dev-idp/authorize", &form).await?;
        if chosen.status != StatusCode::SEE_OTHER {
            bail!("provider refused: {} {}", chosen.status, chosen.body);
        }
        chosen.location().context("no callback location")
    }

    /// A whole login as `person`; returns the callback's answer.
    pub async fn login(&mut self, person: &str) -> Result<Answer> {
        let params = self.start_login().await?;
        let callback = self.pick(&params, person).await?;
        self.get(&callback).await
    }

    /// Logs in and checks it worked; returns the home page.
    pub async fn login_ok(&mut self, person: &str) -> Result<Answer> {
        let cb = self.login(person).await?;
        if cb.status != StatusCode::SEE_OTHER {
            bail!("login as {person} refused: {} {:?}", cb.status, cb.page());
        }
        let to = cb.location().context("no location")?;
        self.get(&to).await
    }

    /// Creates a lesson (as staff) for `class`; returns its id.
    pub async fn create_lesson(&mut self, class: &str) -> Result<String> {
        let now = chaperone_gateway::clock::unix_millis();
        let a = self
            .post(
                "/api/lessons",
                serde_json::json!({"title": "Fractions", "class": class,
                    "starts_at_ms": now, "ends_at_ms": now + 3_600_000}),
            )
            .await?;
        if a.status != StatusCode::CREATED {
            bail!("lesson not created: {} {}", a.status, a.body);
        }
        Ok(a.json()["id"].as_str().context("no id")?.to_owned())
    }

    /// A room token for `lesson`.
    pub async fn room_token(&mut self, lesson: &str) -> Result<Answer> {
        self.post(
            &format!("/api/lessons/{lesson}/token"),
            serde_json::json!({}),
        )
        .await
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a lesson socket with `token`: `Ok(ws)` after hello, or the HTTP
/// refusal's status.
pub async fn open_ws(
    node: &Node,
    lesson: &str,
    token: &str,
) -> Result<std::result::Result<Ws, u16>> {
    let mut req = format!("ws://{}/ws/lessons/{lesson}", node.addr).into_client_request()?;
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(&node.base())?);
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("chaperone.v1, chaperone.token.{token}"))?,
    );
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req)).await? {
        Ok((mut ws, _)) => {
            let hello = serde_json::to_string(&ClientMsg::Hello {
                version: PROTOCOL_VERSION,
            })?;
            ws.send(Message::text(hello)).await?;
            Ok(Ok(ws))
        }
        Err(tungstenite::Error::Http(resp)) => Ok(Err(resp.status().as_u16())),
        Err(e) => Err(e.into()),
    }
}

/// The next server message, skipping pings.
pub async fn recv(ws: &mut Ws) -> Result<ServerMsg> {
    loop {
        match tokio::time::timeout(STEP, ws.next()).await? {
            Some(Ok(Message::Text(t))) => return Ok(ServerMsg::decode(t.as_bytes())?),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return Err(anyhow!("expected a message, got {other:?}")),
        }
    }
}

/// Waits (up to `limit`) until the server ends the connection.
pub async fn ended_within(ws: &mut Ws, limit: std::time::Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("still connected after {limit:?}"),
            Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => return Ok(()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}
