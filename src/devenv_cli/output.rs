//! Table output, as `kubectl get pods` prints it.

use crate::api::view::PodSummary;

/// NAMESPACE (when several namespaces are shown), NAME, STATUS, READY,
/// RESTARTS, AGE; columns padded to their widest cell.
pub fn pod_table(pods: &[PodSummary], with_namespace: bool, now: jiff::Timestamp) -> String {
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(pods.len() + 1);
    let mut header = vec!["NAME", "STATUS", "READY", "RESTARTS", "AGE"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.into_iter().map(String::from).collect());
    for pod in pods {
        let mut row = vec![
            pod.name.clone(),
            pod.status.clone(),
            pod.ready.clone(),
            pod.restarts.to_string(),
            pod.created
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map_or_else(|| "<unknown>".to_string(), |t| age(now, t)),
        ];
        if with_namespace {
            row.insert(0, pod.namespace.clone());
        }
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// kubectl-style age: `42s`, `5m`, `3h`, `12d`.
pub fn age(now: jiff::Timestamp, then: jiff::Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 120 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, created: Option<&str>) -> PodSummary {
        PodSummary {
            namespace: namespace.into(),
            name: name.into(),
            uid: "u".into(),
            resource_version: "1".into(),
            developer: "alice".into(),
            service_account: None,
            status: "Pending".into(),
            phase: "Pending".into(),
            ready: "0/1".into(),
            restarts: 0,
            node: None,
            pod_ip: None,
            created: created.map(String::from),
            containers: vec![],
        }
    }

    #[test]
    fn ages() {
        let now: jiff::Timestamp = "2025-01-10T00:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(age(now, at("2025-01-09T23:59:18Z")), "42s");
        assert_eq!(age(now, at("2025-01-09T23:55:00Z")), "5m");
        assert_eq!(age(now, at("2025-01-09T21:00:00Z")), "3h");
        assert_eq!(age(now, at("2024-12-29T00:00:00Z")), "12d");
        assert_eq!(age(now, at("2025-01-10T00:00:05Z")), "0s");
    }

    #[test]
    fn tables_line_up() {
        let now: jiff::Timestamp = "2025-01-10T00:00:00Z".parse().unwrap();
        let pods = [
            pod("devenv", "ws-0", Some("2025-01-09T23:59:00Z")),
            pod("sandbox", "a-much-longer-name", None),
        ];
        let table = pod_table(&pods, true, now);
        assert_eq!(
            table,
            "NAMESPACE   NAME                 STATUS    READY   RESTARTS   AGE\n\
             devenv      ws-0                 Pending   0/1     0          60s\n\
             sandbox     a-much-longer-name   Pending   0/1     0          <unknown>\n"
        );
        let table = pod_table(&pods[..1], false, now);
        assert!(table.starts_with("NAME   STATUS"), "{table}");
    }
}
