//! The `webhook` recoverer: POSTs `{"anomaly": {...}, "params": {...}}` as
//! JSON to a URL (an n8n webhook, or anything that speaks HTTP), optionally
//! signed with HMAC-SHA256, retried with backoff; any 2xx answer is success.

use std::collections::BTreeMap;
use std::path::PathBuf;

use healer_plugin_sdk::{Duration, Error, Outcome, Recoverer, Recovery};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Options of the `webhook` recoverer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Sign the body with HMAC-SHA256 using the secret in this environment variable...
    hmac_secret_env: Option<String>,
    /// ...or in this file (first line).
    hmac_secret_file: Option<PathBuf>,
    #[serde(default = "default_signature_header")]
    signature_header: String,
    #[serde(default = "default_timeout")]
    timeout: Duration,
    /// Further tries after a failure (so `retries = 2` is at most 3 requests).
    #[serde(default = "default_retries")]
    retries: u32,
    /// Wait before the first retry; doubles after each.
    #[serde(default = "default_backoff")]
    retry_backoff: Duration,
}

fn default_signature_header() -> String {
    "X-Healer-Signature".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_retries() -> u32 {
    2
}

fn default_backoff() -> Duration {
    Duration::from_millis(500)
}

/// Calls a webhook.
pub struct Webhook {
    config: Config,
    client: reqwest::Client,
    secret: Option<Vec<u8>>,
}

impl Recoverer for Webhook {
    type Config = Config;
    const NAME: &'static str = "webhook";
    const DESCRIPTION: &'static str =
        "POSTs {anomaly, params} as JSON to a URL (n8n); 2xx is success; HMAC signing, retries";
    const SAMPLE_CONFIG: &'static str = r#"url = "http://127.0.0.1:5678/webhook/healer"   # e.g. an n8n webhook
headers = { "X-Source" = "healer" }             # extra headers (default none)
# hmac_secret_env = "HEALER_WEBHOOK_SECRET"     # sign the body: header = "sha256=<hex HMAC-SHA256>"
# hmac_secret_file = "/etc/healer/webhook.key"  # or read the secret from a file
signature_header = "X-Healer-Signature"
timeout = "5s"                                  # per request
retries = 2                                     # further tries after a failure
retry_backoff = "500ms"                         # before the first retry; doubles after each
"#;

    fn new(config: Config) -> Result<Self, Error> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| format!("invalid `url` {:?}: {e}", config.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`url` must be http or https, not {:?}", url.scheme()).into());
        }
        let secret = match (&config.hmac_secret_env, &config.hmac_secret_file) {
            (Some(_), Some(_)) => {
                return Err("give `hmac_secret_env` or `hmac_secret_file`, not both".into())
            }
            (Some(var), None) => Some(
                std::env::var(var)
                    .map_err(|_| {
                        format!("`hmac_secret_env`: the environment variable {var} is not set")
                    })?
                    .into_bytes(),
            ),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("`hmac_secret_file` {}: {e}", path.display()))?;
                Some(text.lines().next().unwrap_or("").trim().as_bytes().to_vec())
            }
            (None, None) => None,
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout.into())
            .user_agent(concat!("healer-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Webhook {
            config,
            client,
            secret,
        })
    }

    async fn recover(&mut self, recovery: &Recovery) -> Result<Outcome, Error> {
        let body = serde_json::to_vec(&payload(recovery))?;
        let signature = match &self.secret {
            Some(secret) => Some(sign(secret, &body)?),
            None => None,
        };
        let mut wait: std::time::Duration = self.config.retry_backoff.into();
        let mut last_error = String::new();
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            let mut request = self
                .client
                .post(&self.config.url)
                .header("Content-Type", "application/json")
                .body(body.clone());
            for (name, value) in &self.config.headers {
                request = request.header(name, value);
            }
            if let Some(signature) = &signature {
                request = request.header(&self.config.signature_header, signature);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let code = response.status().as_u16();
                    return Ok(
                        Outcome::done(format!("POST {} answered {code}", self.config.url))
                            .detail("status_code", code)
                            .detail("tries", attempt + 1),
                    );
                }
                Ok(response) => last_error = format!("answered {}", response.status()),
                Err(err) if err.is_timeout() => {
                    last_error = format!("no answer within {}", self.config.timeout)
                }
                Err(err) if err.is_connect() => last_error = "cannot connect".to_owned(),
                Err(err) => last_error = err.to_string(),
            }
        }
        Err(format!(
            "POST {} failed after {} tries: {last_error}",
            self.config.url,
            self.config.retries + 1
        )
        .into())
    }
}

/// What the webhook receives: the anomaly (or finding) and the parameters.
fn payload(recovery: &Recovery) -> serde_json::Value {
    let params = if recovery.params.is_null() {
        serde_json::json!({})
    } else {
        recovery.params.clone()
    };
    let details = if recovery.finding.details.is_null() {
        serde_json::json!({})
    } else {
        recovery.finding.details.clone()
    };
    serde_json::json!({
        "anomaly": {
            "name": recovery.finding.kind,
            "details": details,
            "target": recovery.target,
            "severity": recovery.finding.severity,
            "summary": recovery.finding.summary,
        },
        "params": params,
        "attempt": recovery.attempt,
    })
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, as GitHub-style receivers expect.
fn sign(secret: &[u8], body: &[u8]) -> Result<String, Error> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .map_err(|err| format!("cannot use the HMAC secret: {err}"))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// Installs rustls' `ring` provider for this package.
fn init() -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(())
}

healer_plugin_sdk::export_plugins! {
    init: init,
    recoverers: [Webhook],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?").unwrap(),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_payload_carries_anomaly_and_params() {
        let recovery = Recovery {
            target: "api_latency.coinbase.high".into(),
            finding: healer_plugin_sdk::Finding::critical("api_latency.coinbase.high", "anomaly")
                .detail("latency_ms", 5000),
            attempt: 1,
            params: serde_json::json!({"service": "coinbase"}),
        };
        let body = payload(&recovery);
        assert_eq!(body["anomaly"]["name"], "api_latency.coinbase.high");
        assert_eq!(body["anomaly"]["details"]["latency_ms"], 5000);
        assert_eq!(body["params"]["service"], "coinbase");
    }
}
