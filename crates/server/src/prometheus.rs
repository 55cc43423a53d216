//! Prometheus metrics for operators, on their own address (`--metrics-listen`) so that they are
//! not exposed where MCP clients and users connect: the gateway's requests by decision and
//! status class, its latency histogram, and the request log's queue, drops and losses.

use ezforge_core::telemetry::RequestLog;
use ezforge_core::telemetry::writer::LATENCY_BOUNDS;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Binds `addr` and serves `GET /metrics` there; returns the bound address and the task.
pub async fn serve(
    addr: SocketAddr,
    log: Arc<RequestLog>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let log = log.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render(&log),
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok((bound, task))
}

/// The text exposition format.
pub fn render(log: &RequestLog) -> String {
    let c = &log.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ezforge_gateway_requests_total MCP gateway requests by decision.\n# TYPE ezforge_gateway_requests_total counter"
    );
    let _ = writeln!(
        out,
        "ezforge_gateway_requests_total{{decision=\"allowed\"}} {}",
        get(&c.allowed)
    );
    let _ = writeln!(
        out,
        "ezforge_gateway_requests_total{{decision=\"denied\"}} {}",
        get(&c.denied)
    );
    let _ = writeln!(
        out,
        "# HELP ezforge_gateway_responses_total MCP gateway answers by status class.\n# TYPE ezforge_gateway_responses_total counter"
    );
    for (class, v) in [
        ("2xx", &c.status_2xx),
        ("4xx", &c.status_4xx),
        ("5xx", &c.status_5xx),
        ("other", &c.status_other),
    ] {
        let _ = writeln!(
            out,
            "ezforge_gateway_responses_total{{class=\"{class}\"}} {}",
            get(v)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ezforge_gateway_request_duration_seconds Time from a request's arrival to its response headers.\n# TYPE ezforge_gateway_request_duration_seconds histogram"
    );
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
        cumulative += get(&c.latency[i]);
        let _ = writeln!(
            out,
            "ezforge_gateway_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += get(&c.latency[LATENCY_BOUNDS.len()]);
    let _ = writeln!(
        out,
        "ezforge_gateway_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "ezforge_gateway_request_duration_seconds_sum {}",
        get(&c.latency_sum_us) as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "ezforge_gateway_request_duration_seconds_count {cumulative}"
    );
    for (name, help, value) in [
        (
            "ezforge_request_log_written_total",
            "Request records written to the database.",
            get(&c.written),
        ),
        (
            "ezforge_request_log_dropped_total",
            "Request records dropped because the queue was full (their usage is still counted).",
            get(&c.dropped),
        ),
        (
            "ezforge_request_log_lost_total",
            "Request records the database refused after retries.",
            get(&c.lost),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP ezforge_request_log_queued Request records waiting to be written.\n# TYPE ezforge_request_log_queued gauge\nezforge_request_log_queued {}",
        log.queued()
    );
    out
}
