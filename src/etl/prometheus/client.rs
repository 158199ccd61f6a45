//! A small Prometheus HTTP API client: instant and range queries, with the connection options
//! people need in front of Prometheus, Thanos, Mimir or VictoriaMetrics (bearer token, basic
//! auth, extra headers, a CA file or skip-verify, a path prefix), a bound on queries in flight,
//! a timeout per request and retries with backoff. Credentials never reach a log line or an
//! error: errors name the query and the status, never the request's headers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::Semaphore;

/// A secret string: shown as `***` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// How to reach Prometheus.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Base URL, with any path prefix (`http://prometheus:9090/prometheus`).
    pub url: String,
    /// A bearer token.
    pub bearer_token: Option<Secret>,
    /// A file holding a bearer token, read again for every request (tokens rotate).
    pub bearer_token_file: Option<PathBuf>,
    /// Basic auth user and password.
    pub basic_auth: Option<(String, Secret)>,
    /// Extra headers (`X-Scope-OrgID` for Mimir and Cortex).
    pub headers: Vec<(String, Secret)>,
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// How long one request may take.
    pub timeout: Duration,
    /// Retries after a failed request (timeouts, connection errors, 5xx, 429).
    pub retries: u32,
    /// Requests in flight at once (Kubecost's `maxQueryConcurrency`).
    pub concurrency: usize,
}

/// A query that failed after its retries.
#[derive(Debug, thiserror::Error)]
#[error("Prometheus query failed{}: {reason}; query: {query}", if *.attempts > 1 { format!(" after {} attempts", .attempts) } else { String::new() })]
pub struct QueryError {
    /// The PromQL.
    pub query: String,
    /// What went wrong.
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
}

/// One series of a result: its labels and its samples (milliseconds, value). NaN and infinite
/// samples are dropped (OpenCost treats them as absent).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Labels, `__name__` included when Prometheus keeps it.
    pub labels: HashMap<String, String>,
    /// Samples, in time order.
    pub points: Vec<(i64, f64)>,
}

impl Series {
    /// A label's value, or "".
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// The client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    conn: Connection,
    permits: Arc<Semaphore>,
    issued: AtomicU64,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    /// VictoriaMetrics: the answer misses some of its storage nodes.
    #[serde(default, rename = "isPartial")]
    is_partial: bool,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Box<serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: HashMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, Value)>,
    #[serde(default)]
    value: Option<(f64, Value)>,
}

/// A sample value: Prometheus writes it as a string (`"0.5"`, `"NaN"`, `"+Inf"`); parsed where
/// it lies in the body, without an owned string per sample (a day of a big cluster is millions).
struct Value(Option<f64>);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sample value as a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value(v.parse::<f64>().ok().filter(|x| x.is_finite())))
            }
        }
        d.deserialize_str(V)
    }
}

impl Client {
    /// A client; an error names the setting at fault (`url`, `ca_file`, `headers`) and what is
    /// wrong with it.
    pub fn new(conn: Connection) -> Result<Self, (&'static str, String)> {
        let url = reqwest::Url::parse(&conn.url).map_err(|e| {
            (
                "url",
                format!("not a URL ({e}): {}", crate::redact::userinfo(&conn.url)),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err((
                "url",
                format!("must be http or https, not {}", url.scheme()),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err((
                "url",
                "credentials in the URL are refused: use the basic-auth username and password settings"
                    .into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(conn.timeout)
            .connect_timeout(conn.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(conn.concurrency.max(1));
        if let Some(ca) = &conn.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| ("ca_file", format!("cannot read {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                (
                    "ca_file",
                    format!("{} holds no PEM certificate: {e}", ca.display()),
                )
            })?;
            if certs.is_empty() {
                return Err((
                    "ca_file",
                    format!("{} holds no PEM certificate", ca.display()),
                ));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if conn.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        for (name, value) in &conn.headers {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ("headers", format!("`{name}` is not a valid header name")))?;
            reqwest::header::HeaderValue::from_str(&value.0).map_err(|_| {
                (
                    "headers",
                    format!("the value of header `{name}` is not valid in a header"),
                )
            })?;
        }
        let http = builder
            .build()
            .map_err(|e| ("url", format!("cannot build the HTTP client: {e}")))?;
        let base = conn.url.trim_end_matches('/').to_string();
        Ok(Self {
            http,
            base,
            permits: Arc::new(Semaphore::new(conn.concurrency.max(1))),
            conn,
            issued: AtomicU64::new(0),
        })
    }

    /// Queries sent so far (retries included).
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// An instant query at `at`.
    pub async fn instant(&self, query: &str, at: DateTime<Utc>) -> Result<Vec<Series>, QueryError> {
        self.call(
            "query",
            query,
            vec![("time", seconds(at.timestamp_millis()))],
        )
        .await
    }

    /// A range query from `start` to `end` (both evaluated) every `step`.
    pub async fn range(
        &self,
        query: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step: Duration,
    ) -> Result<Vec<Series>, QueryError> {
        self.call(
            "query_range",
            query,
            vec![
                ("start", seconds(start.timestamp_millis())),
                ("end", seconds(end.timestamp_millis())),
                ("step", format!("{}", step.as_secs_f64())),
            ],
        )
        .await
    }

    async fn call(
        &self,
        endpoint: &str,
        query: &str,
        mut params: Vec<(&'static str, String)>,
    ) -> Result<Vec<Series>, QueryError> {
        params.push(("query", query.to_string()));
        // Thanos and VictoriaMetrics may answer from part of their stores and call it success;
        // a partial answer would be published as a complete window, so ask them not to (plain
        // Prometheus ignores both). VictoriaMetrics also aligns a range query's times to its
        // step unless caching is off; the steps asked here must be kept.
        params.push(("partial_response", "false".into()));
        params.push(("deny_partial_response", "1".into()));
        params.push(("nocache", "1".into()));
        let url = format!("{}/api/v1/{endpoint}", self.base);
        let _permit = self.permits.acquire().await.expect("never closed");
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.issued.fetch_add(1, Ordering::Relaxed);
            match self.once(&url, &params).await {
                Ok(body) => {
                    return tokio::task::spawn_blocking(move || parse(&body))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r)
                        .map_err(|reason| QueryError {
                            query: query.to_string(),
                            reason,
                            attempts: attempt,
                        });
                }
                Err((reason, retryable)) if retryable && attempt <= self.conn.retries => {
                    let backoff = Duration::from_millis(500 * (1 << (attempt - 1).min(5)));
                    tracing::warn!(attempt, backoff = ?backoff, %reason, %query, "Prometheus query failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err((reason, _)) => {
                    return Err(QueryError {
                        query: query.to_string(),
                        reason,
                        attempts: attempt,
                    });
                }
            }
        }
    }

    /// One request: the body of a 200, or why not and whether a retry may help.
    async fn once(
        &self,
        url: &str,
        params: &[(&'static str, String)],
    ) -> Result<bytes::Bytes, (String, bool)> {
        let mut req = self.http.post(url).form(params);
        if let Some((user, password)) = &self.conn.basic_auth {
            req = req.basic_auth(user, Some(&password.0));
        }
        let token = match &self.conn.bearer_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        (
                            format!("cannot read the bearer token file {}: {e}", path.display()),
                            true,
                        )
                    })?
                    .trim()
                    .to_string(),
            ),
            None => self.conn.bearer_token.as_ref().map(|t| t.0.clone()),
        };
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (name, value) in &self.conn.headers {
            req = req.header(name.as_str(), value.0.as_str());
        }
        let resp = req.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                format!("no answer within {:?}", self.conn.timeout)
            } else if e.is_connect() {
                format!("cannot connect to {}", crate::redact::userinfo(&self.base))
            } else {
                format!(
                    "request failed: {}",
                    crate::redact::userinfo(&e.without_url().to_string())
                )
            };
            (what, true)
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            (
                format!("reading the answer failed: {}", e.without_url()),
                true,
            )
        })?;
        if status.is_success() {
            return Ok(body);
        }
        // Prometheus explains a refused query in its JSON envelope.
        let detail = serde_json::from_slice::<Envelope>(&body)
            .ok()
            .and_then(|e| {
                e.error
                    .map(|m| format!("{}: {m}", e.error_type.unwrap_or_default()))
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        let retryable = status.is_server_error() || status.as_u16() == 429;
        Err((format!("HTTP {status}: {detail}"), retryable))
    }
}

/// Prometheus's seconds with milliseconds.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn parse(body: &[u8]) -> Result<Vec<Series>, String> {
    let env: Envelope =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus API answer: {e}"))?;
    if env.status != "success" {
        return Err(format!(
            "{}: {}",
            env.error_type.unwrap_or_default(),
            env.error.unwrap_or_default()
        ));
    }
    if env.is_partial {
        return Err(
            "the server says its answer is partial (some of its storage did not answer)".into(),
        );
    }
    let data = env.data.ok_or("a success without data")?;
    match data.result_type.as_str() {
        "matrix" | "vector" => {}
        other => return Err(format!("expected a vector or matrix, got a {other}")),
    }
    let raw: Vec<RawSeries> =
        serde_json::from_str(data.result.get()).map_err(|e| format!("malformed result: {e}"))?;
    Ok(raw
        .into_iter()
        .map(|r| {
            let points = r
                .values
                .into_iter()
                .chain(r.value)
                .filter_map(|(t, v)| Some(((t * 1000.0).round() as i64, v.0?)))
                .collect();
            Series {
                labels: r.metric,
                points,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_and_vector_answers_parse_and_drop_nan() {
        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"pod":"a"},"values":[[1700000000.999,"1.5"],[1700000300.999,"NaN"]]}]}}"#;
        let s = parse(m).unwrap();
        assert_eq!(s[0].label("pod"), "a");
        assert_eq!(s[0].points, vec![(1_700_000_000_999, 1.5)]);
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1700000000,"+Inf"]},{"metric":{"x":"y"},"value":[1700000000,"2"]}]}}"#;
        let s = parse(v).unwrap();
        assert!(s[0].points.is_empty());
        assert_eq!(s[1].points, vec![(1_700_000_000_000, 2.0)]);
    }

    #[test]
    fn errors_say_what_prometheus_said() {
        let e = parse(br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
            .unwrap_err();
        assert_eq!(e, "bad_data: parse error");
        assert!(parse(b"<html>").is_err());
        assert!(
            parse(br#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#)
                .is_err()
        );
    }

    #[test]
    fn a_partial_answer_is_an_error() {
        let body =
            br#"{"status":"success","isPartial":true,"data":{"resultType":"vector","result":[]}}"#;
        assert!(parse(body).unwrap_err().contains("partial"));
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        assert_eq!(seconds(1_700_000_000_999), "1700000000.999");
        assert_eq!(seconds(1_700_000_000_000), "1700000000.000");
    }

    #[test]
    fn credentials_in_the_url_are_refused_and_secrets_never_debug() {
        let conn = Connection {
            url: "http://user:pw@prometheus:9090".into(),
            bearer_token: Some(Secret("s3cr3t-value".into())),
            bearer_token_file: None,
            basic_auth: None,
            headers: vec![],
            ca_file: None,
            insecure_skip_verify: false,
            timeout: Duration::from_secs(1),
            retries: 0,
            concurrency: 1,
        };
        let dbg = format!("{conn:?}");
        assert!(!dbg.contains("s3cr3t-value"), "{dbg}");
        let (setting, e) = Client::new(conn).err().unwrap();
        assert_eq!(setting, "url");
        assert!(!e.contains("pw"), "{e}");
    }
}
