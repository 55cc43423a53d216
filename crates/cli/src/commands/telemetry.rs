//! `ezforge logs`, `ezforge metrics`, `ezforge usage`, `ezforge audit` and
//! `ezforge project set-quota`.

use crate::cli::LogsArgs;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output;
use ezforge_client::Client;
use ezforge_proto::{MetricsSummary, RequestRecord};
use std::io::Write;

/// The project named, or the caller's only one.
async fn project_or_only(client: &Client, project: Option<String>) -> CliResult<String> {
    if let Some(p) = project {
        return Ok(p);
    }
    let list = client.list_projects().await?;
    match list.projects.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => Err(CliError::Usage(
            "you have no project yet; create one with `ezforge project create NAME`".into(),
        )),
        many => Err(CliError::Usage(format!(
            "you have {} projects; name one with --project ({})",
            many.len(),
            many.iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Text from the server as it may be printed on a terminal: control characters (escape
/// sequences a client could put in a tool name) become `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn record_line(r: &RequestRecord) -> String {
    let what = match (&r.method, &r.tool) {
        (Some(m), Some(t)) => format!("{m} {t}"),
        (Some(m), None) => m.clone(),
        (None, _) => r.http_method.clone(),
    };
    let decision = match &r.reason {
        Some(reason) => format!("denied:{reason}"),
        None => "allowed".into(),
    };
    let line = format!(
        "{}  {:>3}  {:<28} {:<32} {:>8.1} ms  {}",
        r.time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        r.status,
        decision,
        what,
        r.latency_ms,
        r.subject.as_deref().unwrap_or("-"),
    );
    printable(&line)
}

pub async fn logs(ctx: &Ctx, args: LogsArgs) -> CliResult {
    let client = ctx.client()?;
    let mut params = vec![
        ("since", args.since.clone()),
        ("tool", args.tool.clone()),
        ("decision", args.decision.clone()),
        ("status", args.status.map(|s| s.to_string())),
    ];
    if !args.follow {
        params.push(("limit", Some(args.limit.to_string())));
        let page = client.server_logs(&args.server, &params).await?;
        if ctx.global.json {
            output::json(&page);
        } else if page.records.is_empty() {
            eprintln!(
                "No requests recorded for {} with these filters.",
                args.server
            );
        } else {
            // Oldest first on a terminal, like `tail`.
            for r in page.records.iter().rev() {
                println!("{}", record_line(r));
            }
        }
        return Ok(());
    }
    let mut resp = client.follow_server_logs(&args.server, &params).await?;
    if !ctx.global.json {
        eprintln!("Following {} (Ctrl-C to stop)…", args.server);
    }
    // Server-sent events: `data:` lines carry one record each; comments keep the line alive.
    // Bytes until a whole line is in: a character may be split across chunks.
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| CliError::Failure(format!("the log stream broke off: {e}")))?
    {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let bytes: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&bytes);
            if let Some(kind) = line.trim_end().strip_prefix("event: ")
                && kind != "record"
            {
                eprintln!("the server ended the stream ({kind})");
            }
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim_start();
            let mut out = std::io::stdout().lock();
            match serde_json::from_str::<RequestRecord>(data) {
                Ok(r) if ctx.global.json => {
                    let _ = writeln!(out, "{}", serde_json::to_string(&r).unwrap_or_default());
                }
                Ok(r) => {
                    let _ = writeln!(out, "{}", record_line(&r));
                }
                Err(_) => eprintln!("{}", printable(data)),
            }
            let _ = out.flush();
        }
    }
    Ok(())
}

/// A one-line chart of `values` with block characters, scaled to the largest.
fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if max == 0 || v == 0 {
                ' '
            } else {
                BARS[((v * 7).div_ceil(max)) as usize]
            }
        })
        .collect()
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms"))
        .unwrap_or_else(|| "—".into())
}

fn summary_row(name: &str, s: &MetricsSummary) -> Vec<String> {
    vec![
        name.to_string(),
        s.requests.to_string(),
        s.errors.to_string(),
        s.denials.to_string(),
        ms(s.p50_ms),
        ms(s.p95_ms),
        ms(s.p99_ms),
    ]
}

pub async fn metrics(ctx: &Ctx, server: &str, window: &str) -> CliResult {
    let m = ctx.client()?.server_metrics(server, Some(window)).await?;
    if ctx.global.json {
        output::json(&m);
        return Ok(());
    }
    println!(
        "{server}: last {} ({} to {}), one bar per {} s",
        m.window,
        output::time(m.from),
        output::time(m.to),
        m.step_secs
    );
    let requests: Vec<u64> = m.series.iter().map(|p| p.requests).collect();
    let failures: Vec<u64> = m.series.iter().map(|p| p.errors + p.denials).collect();
    println!("  requests          |{}|", sparkline(&requests));
    println!("  errors + denials  |{}|", sparkline(&failures));
    let mut rows = vec![summary_row("(all)", &m.totals)];
    rows.extend(m.tools.iter().map(|t| summary_row(&t.tool, &t.summary)));
    output::table(
        &["TOOL", "REQUESTS", "ERRORS", "DENIED", "P50", "P95", "P99"],
        rows,
    );
    Ok(())
}

pub async fn usage(
    ctx: &Ctx,
    project: Option<String>,
    from: Option<String>,
    to: Option<String>,
    environment: Option<String>,
) -> CliResult {
    let client = ctx.client()?;
    let project = project_or_only(&client, project).await?;
    let u = client
        .project_usage(
            &project,
            &[("from", from), ("to", to), ("environment", environment)],
        )
        .await?;
    if ctx.global.json {
        output::json(&u);
        return Ok(());
    }
    let row = |p: &ezforge_proto::UsagePeriod| {
        vec![
            p.period.clone(),
            p.requests.to_string(),
            p.tool_calls.to_string(),
            p.clients.to_string(),
            p.users.to_string(),
        ]
    };
    let header = ["PERIOD", "REQUESTS", "TOOL CALLS", "CLIENTS", "USERS"];
    if u.days.is_empty() {
        println!("No forwarded requests in these days.");
    } else {
        output::table(&header, u.days.iter().map(row).collect());
    }
    output::table(&header, u.months.iter().map(row).collect());
    match &u.quota {
        Some(q) => println!(
            "Quota: {} of {} requests this month ({}%); resets {}.",
            q.used,
            q.monthly_requests,
            (q.used * 100)
                .checked_div(q.monthly_requests)
                .unwrap_or(100),
            output::time(q.resets_at)
        ),
        None => println!("No monthly quota (set one with `ezforge project set-quota`)."),
    }
    Ok(())
}

pub async fn audit(
    ctx: &Ctx,
    project: Option<String>,
    action: Option<String>,
    limit: u32,
) -> CliResult {
    let client = ctx.client()?;
    let project = project_or_only(&client, project).await?;
    let page = client
        .audit(
            &project,
            &[("action", action), ("limit", Some(limit.to_string()))],
        )
        .await?;
    if ctx.global.json {
        output::json(&page);
    } else if page.entries.is_empty() {
        println!("Nothing recorded yet.");
    } else {
        let rows = page
            .entries
            .iter()
            .map(|e| {
                vec![
                    output::time(e.time),
                    e.actor_email.clone().unwrap_or_else(|| e.actor_id.clone()),
                    e.action.clone(),
                    e.target.clone(),
                    e.details.to_string(),
                ]
            })
            .collect();
        output::table(&["TIME", "ACTOR", "ACTION", "TARGET", "DETAILS"], rows);
    }
    Ok(())
}

pub async fn set_quota(ctx: &Ctx, project: &str, requests: &str) -> CliResult {
    let monthly = match requests.trim() {
        "none" | "off" => None,
        n => Some(n.replace('_', "").parse::<u64>().map_err(|_| {
            CliError::Usage(format!(
                "`{requests}` is not a number of requests (or `none`)"
            ))
        })?),
    };
    let q = ctx.client()?.set_quota(project, monthly).await?;
    if ctx.global.json {
        output::json(&q);
    } else {
        match q.monthly_requests {
            Some(n) => println!("{project}: at most {n} requests per month (UTC)."),
            None => println!("{project}: no monthly quota."),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sparkline;

    #[test]
    fn sparkline_scales_to_the_largest() {
        assert_eq!(sparkline(&[0, 1, 2, 4, 8]), " ▂▃▅█");
        assert_eq!(sparkline(&[0, 0]), "  ");
        assert_eq!(sparkline(&[]), "");
    }
}
