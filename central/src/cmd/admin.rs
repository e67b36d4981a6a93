//! `diatom nodes`, `ps`, `status` and `kill`: one request to central's
//! control socket each, printed as JSON or as a table.

use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::Value;

use crate::control::{self, Request, Response};

/// Sends one request and returns central's answer.
pub fn ask(socket: &Path, req: &Request) -> Result<Response, String> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach central at {}: {e} (is diatom-central running?)",
            socket.display()
        )
    })?;
    control::send(&stream, req, &[]).map_err(|e| e.to_string())?;
    let (resp, _fds): (Response, _) =
        control::recv(&stream).map_err(|e| format!("central: {e}"))?;
    match resp {
        Response::Error(why) => Err(why),
        other => Ok(other),
    }
}

fn listing(socket: &Path, req: &Request) -> Result<Value, String> {
    match ask(socket, req)? {
        Response::Listing(v) => Ok(v),
        other => Err(format!("central answered {other:?}")),
    }
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| h.to_string()).collect(), &mut out);
    for r in rows {
        line(r, &mut out);
    }
    out
}

fn dropped_total(v: &Value) -> String {
    v.get("dropped")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(Value::as_u64)
                .sum::<u64>()
                .to_string()
        })
        .unwrap_or_else(|| "0".into())
}

/// `diatom nodes [--json]`.
pub fn nodes(socket: &Path, json: bool) -> Result<String, String> {
    let v = listing(socket, &Request::Nodes)?;
    if json {
        return Ok(format!("{v}\n"));
    }
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    vec![
                        s(n, "name"),
                        s(n, "address"),
                        s(n, "state"),
                        s(n, "cpus"),
                        format!("{}/{}", s(n, "slots_used"), s(n, "slots")),
                        s(n, "load"),
                        s(n, "last_seen"),
                        dropped_total(n),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(table(
        &[
            "NAME",
            "ADDRESS",
            "STATE",
            "CPUS",
            "SLOTS",
            "LOAD",
            "LAST SEEN",
            "DROPPED",
        ],
        rows,
    ))
}

/// `diatom ps [--all] [--json]`.
pub fn ps(socket: &Path, all: bool, json: bool) -> Result<String, String> {
    let v = listing(socket, &Request::Jobs { all })?;
    if json {
        return Ok(format!("{v}\n"));
    }
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|j| {
                    vec![
                        s(j, "id"),
                        s(j, "user"),
                        s(j, "node"),
                        s(j, "program"),
                        s(j, "state"),
                        s(j, "start"),
                        s(j, "exit_status"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(table(
        &["ID", "USER", "NODE", "PROGRAM", "STATE", "START", "EXIT"],
        rows,
    ))
}

/// `diatom status [--json]`.
pub fn status(socket: &Path, json: bool) -> Result<String, String> {
    let v = listing(socket, &Request::Status)?;
    if json {
        return Ok(format!("{v}\n"));
    }
    let mut out = String::new();
    out.push_str(&format!("address   {}\n", s(&v, "address")));
    out.push_str(&format!("version   {}\n", s(&v, "version")));
    out.push_str(&format!(
        "started   {} (up {} s)\n",
        s(&v, "started"),
        s(&v, "uptime_s")
    ));
    let nodes = v.get("nodes").cloned().unwrap_or(Value::Null);
    out.push_str(&format!(
        "nodes     {} up of {}\n",
        s(&nodes, "up"),
        s(&nodes, "total")
    ));
    let jobs = v.get("jobs").cloned().unwrap_or(Value::Null);
    out.push_str(&format!(
        "jobs      {} running, {} in history\n",
        s(&jobs, "running"),
        s(&jobs, "total")
    ));
    let dropped: Vec<String> = v
        .get("dropped")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, n)| format!("{k}={n}")).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "dropped   {}\n",
        if dropped.is_empty() {
            "none".to_string()
        } else {
            dropped.join(" ")
        }
    ));
    Ok(out)
}

/// `diatom kill [--signal SIG] JOB`.
pub fn kill(socket: &Path, job: u64, signal: i32) -> Result<(), String> {
    match ask(socket, &Request::Kill { job, signal })? {
        Response::Done => Ok(()),
        other => Err(format!("central answered {other:?}")),
    }
}
