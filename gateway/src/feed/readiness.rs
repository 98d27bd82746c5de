//! Readiness of the node's recording: whether some recorder answers its
//! `/readyz`. It only asks; it never decides a lesson's recording gate (that
//! is the acknowledged feed, see [`super`]).

use std::sync::Arc;
use std::time::Duration;

/// Readiness: some recorder answers its `/readyz`.
#[derive(Clone, Debug)]
pub(crate) struct ReadinessProbe {
    urls: Arc<Vec<String>>,
    client: reqwest::Client,
}

impl ReadinessProbe {
    /// Probes the `/readyz` of each of `recorders` (their `ws` URLs as `http`).
    pub(crate) fn new(recorders: &[String]) -> Self {
        let urls = recorders
            .iter()
            .map(|u| {
                let http = if let Some(rest) = u.strip_prefix("wss://") {
                    format!("https://{rest}")
                } else if let Some(rest) = u.strip_prefix("ws://") {
                    format!("http://{rest}")
                } else {
                    u.clone()
                };
                format!("{}/readyz", http.trim_end_matches('/'))
            })
            .collect();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Self {
            urls: Arc::new(urls),
            client,
        }
    }

    /// Ok if any recorder is ready.
    pub(crate) async fn check(&self) -> Result<(), String> {
        let mut why = Vec::new();
        for url in self.urls.iter() {
            match self.client.get(url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => why.push(format!("{url}: {}", r.status())),
                Err(e) => why.push(format!("{url}: {e}")),
            }
        }
        Err(format!("no recorder ready ({})", why.join("; ")))
    }
}
