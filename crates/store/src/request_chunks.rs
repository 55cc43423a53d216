//! The request log's storage format: each written batch becomes one row per server holding its
//! records as JSON (a *chunk*). Reading walks the chunks newest first and stops as soon as no
//! further chunk can hold a record that belongs on the page.
//!
//! A chunk names each text once. Its records share their project, environment, deployment,
//! HTTP method, method, tool, decision, reason, subject, client and token id over and over, so
//! a record holds those as indexes into the chunk's `strings`, and its time as milliseconds
//! after the chunk's first record:
//!
//! ```json
//! {"v":2,"t0":1795683513000,"strings":["prj_…","live","dep_…","POST","tools/call","echo","allowed","usr_…","cli_…","at_…"],
//!  "records":[["req_…",0,1500,200,98,120,[0,1,2,3,4,5,6,null,7,8,9]], …]}
//! ```
//!
//! (id, time − t0, latency µs, status, bytes in, bytes out, then project, environment,
//! deployment, HTTP method, method, tool, decision, reason, subject, client, token id). Under
//! gateway load that is under a third of the bytes of one JSON object per record (the first
//! format, still read): the chunk is serialized, written to the WAL and checkpointed into the
//! database file on the same two cores that serve requests. Builds from before format 2 cannot
//! read it (docs/telemetry.md).

use ezforge_core::telemetry::RequestRow;
use ezforge_proto::{Decision, Environment};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The format `chunks` writes.
const FORMAT: u32 = 2;

/// A record's text fields, as indexes into the chunk's `strings`: project, environment,
/// deployment, HTTP method, method, tool, decision, reason, subject, client, token id.
type Texts = [Option<u32>; 11];

/// A record of format 2: id, time after `t0`, latency, status, bytes in, bytes out, texts.
type Packed<S> = (S, i64, i64, u16, i64, i64, Texts);

#[derive(Serialize)]
struct PackedOut<'a> {
    v: u32,
    t0: i64,
    strings: Vec<&'a str>,
    records: Vec<Packed<&'a str>>,
}

#[derive(Deserialize)]
struct PackedIn {
    v: u32,
    t0: i64,
    strings: Vec<String>,
    records: Vec<Packed<String>>,
}

/// The first format: a JSON array with one object per record (the server is the chunk's).
#[derive(Serialize, Deserialize)]
struct Stored<S> {
    i: S,
    p: S,
    e: Environment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<S>,
    t: i64,
    h: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool: Option<S>,
    a: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<S>,
    s: u16,
    l: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<S>,
    bi: i64,
    bo: i64,
}

/// A chunk to insert: (server, first at, last at, count, JSON).
pub(crate) struct Chunk {
    pub server_id: String,
    pub first_at: i64,
    pub last_at: i64,
    pub count: i64,
    pub json: String,
}

/// The texts of one chunk, each kept once.
#[derive(Default)]
struct Strings<'a> {
    index: HashMap<&'a str, u32>,
    list: Vec<&'a str>,
}

impl<'a> Strings<'a> {
    fn id(&mut self, s: &'a str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(s);
        self.index.insert(s, i);
        i
    }

    fn opt(&mut self, s: Option<&'a str>) -> Option<u32> {
        s.map(|s| self.id(s))
    }
}

/// Groups records by server, each group one chunk (records oldest first).
pub(crate) fn chunks(records: &[RequestRow]) -> Vec<Chunk> {
    let mut by_server: std::collections::BTreeMap<&str, Vec<&RequestRow>> = Default::default();
    for r in records {
        by_server.entry(&r.server_id).or_default().push(r);
    }
    by_server
        .into_iter()
        .map(|(server_id, mut rows)| {
            rows.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
            let first_at = rows.first().map(|r| r.at_ms).unwrap_or(0);
            let mut strings = Strings::default();
            let packed: Vec<Packed<&str>> = rows
                .iter()
                .map(|r| {
                    let texts = [
                        Some(strings.id(&r.project_id)),
                        Some(strings.id(r.environment.as_str())),
                        strings.opt(r.deployment_id.as_deref()),
                        Some(strings.id(&r.http_method)),
                        strings.opt(r.method.as_deref()),
                        strings.opt(r.tool.as_deref()),
                        Some(strings.id(r.decision.as_str())),
                        strings.opt(r.reason.as_deref()),
                        strings.opt(r.subject.as_deref()),
                        strings.opt(r.client_id.as_deref()),
                        strings.opt(r.token_id.as_deref()),
                    ];
                    (
                        r.id.as_str(),
                        r.at_ms - first_at,
                        r.latency_us,
                        r.status,
                        r.bytes_in,
                        r.bytes_out,
                        texts,
                    )
                })
                .collect();
            let out = PackedOut {
                v: FORMAT,
                t0: first_at,
                strings: strings.list,
                records: packed,
            };
            Chunk {
                server_id: server_id.to_string(),
                first_at,
                last_at: rows.last().map(|r| r.at_ms).unwrap_or(0),
                count: rows.len() as i64,
                // Strings, integers and arrays of them always serialize.
                json: serde_json::to_string(&out).unwrap_or_else(|_| "[]".into()),
            }
        })
        .collect()
}

/// The records of a stored chunk, of either format.
pub(crate) fn decode(server_id: &str, json: &str) -> Result<Vec<RequestRow>, String> {
    let corrupt = |e: &dyn std::fmt::Display| format!("a request log chunk is corrupt: {e}");
    if json.trim_start().starts_with('[') {
        return decode_objects(server_id, json).map_err(|e| corrupt(&e));
    }
    let chunk: PackedIn = serde_json::from_str(json).map_err(|e| corrupt(&e))?;
    if chunk.v != FORMAT {
        return Err(format!(
            "a request log chunk has format {}, which this version cannot read",
            chunk.v
        ));
    }
    let text = |i: Option<u32>| -> Result<Option<String>, String> {
        i.map(|i| {
            chunk
                .strings
                .get(i as usize)
                .cloned()
                .ok_or_else(|| corrupt(&format!("no string {i}")))
        })
        .transpose()
    };
    let required = |i: Option<u32>, what: &str| -> Result<String, String> {
        text(i)?.ok_or_else(|| corrupt(&format!("a record has no {what}")))
    };
    let mut out = Vec::with_capacity(chunk.records.len());
    for (id, dt, latency_us, status, bytes_in, bytes_out, t) in &chunk.records {
        let environment = required(t[1], "environment")?;
        let environment = [Environment::Live, Environment::Test]
            .into_iter()
            .find(|e| e.as_str() == environment)
            .ok_or_else(|| corrupt(&format!("unknown environment {environment:?}")))?;
        let decision = required(t[6], "decision")?;
        let decision = [Decision::Allowed, Decision::Denied]
            .into_iter()
            .find(|d| d.as_str() == decision)
            .ok_or_else(|| corrupt(&format!("unknown decision {decision:?}")))?;
        let at_ms = chunk
            .t0
            .checked_add(*dt)
            .ok_or_else(|| corrupt(&"a record's time is out of range"))?;
        out.push(RequestRow {
            id: id.clone(),
            project_id: required(t[0], "project")?,
            server_id: server_id.to_string(),
            environment,
            deployment_id: text(t[2])?,
            at_ms,
            http_method: required(t[3], "HTTP method")?,
            method: text(t[4])?,
            tool: text(t[5])?,
            decision,
            reason: text(t[7])?,
            status: *status,
            latency_us: *latency_us,
            subject: text(t[8])?,
            client_id: text(t[9])?,
            token_id: text(t[10])?,
            bytes_in: *bytes_in,
            bytes_out: *bytes_out,
            tool_calls: 0,
            quota_counted: false,
        });
    }
    Ok(out)
}

/// The first format's records.
fn decode_objects(server_id: &str, json: &str) -> Result<Vec<RequestRow>, serde_json::Error> {
    let stored: Vec<Stored<String>> = serde_json::from_str(json)?;
    Ok(stored
        .into_iter()
        .map(|s| RequestRow {
            id: s.i,
            project_id: s.p,
            server_id: server_id.to_string(),
            environment: s.e,
            deployment_id: s.d,
            at_ms: s.t,
            http_method: s.h,
            method: s.m,
            tool: s.tool,
            decision: s.a,
            reason: s.r,
            status: s.s,
            latency_us: s.l,
            subject: s.sub,
            client_id: s.c,
            token_id: s.k,
            bytes_in: s.bi,
            bytes_out: s.bo,
            tool_calls: 0,
            quota_counted: false,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64, server: &str) -> RequestRow {
        RequestRow {
            id: ezforge_core::ids::ordered_id("req"),
            project_id: "prj_3kT9aaaaaaaaaaaaaaaa".into(),
            server_id: server.into(),
            environment: if n % 7 == 0 {
                Environment::Test
            } else {
                Environment::Live
            },
            deployment_id: (n % 5 != 0).then(|| "dep_Qm2xbbbbbbbbbbbbbbbb".into()),
            at_ms: 1_795_683_513_000 + n * 3,
            http_method: "POST".into(),
            method: Some("tools/call".into()),
            tool: (n % 3 != 0).then(|| format!("tool_{}", n % 4)),
            decision: if n % 11 == 0 {
                Decision::Denied
            } else {
                Decision::Allowed
            },
            reason: (n % 11 == 0).then(|| "insufficient_scope".into()),
            status: if n % 11 == 0 { 403 } else { 200 },
            latency_us: 900 + n,
            subject: Some(format!("usr_{}", n % 2)),
            client_id: (n % 13 != 0).then(|| "https://client.example/metadata.json".into()),
            token_id: Some(format!("at_Zp8ccccccccccccccccc{}", n % 3)),
            bytes_in: 98,
            bytes_out: 120 + n,
            tool_calls: 0,
            quota_counted: false,
        }
    }

    /// Format 1, as written before: one JSON object per record.
    fn objects(rows: &[RequestRow]) -> String {
        let stored: Vec<Stored<&str>> = rows
            .iter()
            .map(|r| Stored {
                i: r.id.as_str(),
                p: r.project_id.as_str(),
                e: r.environment,
                d: r.deployment_id.as_deref(),
                t: r.at_ms,
                h: r.http_method.as_str(),
                m: r.method.as_deref(),
                tool: r.tool.as_deref(),
                a: r.decision,
                r: r.reason.as_deref(),
                s: r.status,
                l: r.latency_us,
                sub: r.subject.as_deref(),
                c: r.client_id.as_deref(),
                k: r.token_id.as_deref(),
                bi: r.bytes_in,
                bo: r.bytes_out,
            })
            .collect();
        serde_json::to_string(&stored).expect("serializes")
    }

    #[test]
    fn records_come_back_as_they_went_in_one_chunk_per_server() {
        let mut rows: Vec<RequestRow> = (0..200)
            .map(|n| record(n, if n % 4 == 0 { "srv_b" } else { "srv_a" }))
            .collect();
        // Handed over out of order (the queue is filled by several threads).
        rows.reverse();
        rows.swap(3, 150);
        let chunks = chunks(&rows);
        assert_eq!(chunks.len(), 2);
        let mut back = Vec::new();
        for c in &chunks {
            let decoded = decode(&c.server_id, &c.json).expect("decodes");
            assert_eq!(decoded.len() as i64, c.count);
            assert!(decoded.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
            assert_eq!(decoded.first().map(|r| r.at_ms), Some(c.first_at));
            assert_eq!(decoded.last().map(|r| r.at_ms), Some(c.last_at));
            back.extend(decoded);
        }
        back.sort_by(|a, b| a.id.cmp(&b.id));
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(back, rows);
    }

    #[test]
    fn chunks_of_the_first_format_are_still_read() {
        let rows: Vec<RequestRow> = (0..20).map(|n| record(n, "srv_a")).collect();
        assert_eq!(decode("srv_a", &objects(&rows)).expect("decodes"), rows);
    }

    #[test]
    fn a_chunk_names_each_text_once() {
        let rows: Vec<RequestRow> = (0..1000).map(|n| record(n, "srv_a")).collect();
        let packed = chunks(&rows).remove(0).json;
        assert_eq!(packed.matches("prj_3kT9").count(), 1);
        assert_eq!(packed.matches("https://client.example").count(), 1);
        let first = objects(&rows).len();
        assert!(
            packed.len() * 3 < first,
            "{} bytes against {first} as objects",
            packed.len()
        );
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics() {
        let rows: Vec<RequestRow> = (0..3).map(|n| record(n, "srv_a")).collect();
        let json = chunks(&rows).remove(0).json;
        let broken = json.replacen(
            "\"strings\":[\"prj_3kT9aaaaaaaaaaaaaaaa\",",
            "\"strings\":[",
            1,
        );
        for bad in [
            broken.as_str(),
            r#"{"v":3,"t0":0,"strings":[],"records":[]}"#,
            r#"{"v":2,"t0":0,"strings":["p","live","POST","allowed"],"records":[["req_1",0,1,200,0,0,[0,1,null,2,null,null,3,null,99,null,null]]]}"#,
            r#"{"v":2,"t0":0,"strings":["p","live","POST","maybe"],"records":[["req_1",0,1,200,0,0,[0,1,null,2,null,null,3,null,null,null,null]]]}"#,
            r#"{"v":2,"t0":0,"strings":["p"],"records":[["req_1",0,1,200,0,0,[0,null,null,null,null,null,null,null,null,null,null]]]}"#,
            r#"{"v":2,"t0":9223372036854775807,"strings":["p","live","POST","allowed"],"records":[["req_1",1,1,200,0,0,[0,1,null,2,null,null,3,null,null,null,null]]]}"#,
            "[{\"i\":1}]",
            "not json",
        ] {
            assert!(decode("srv_a", bad).is_err(), "{bad}");
        }
    }
}
