//! The monitoring values (docs/metrics.md, docs/alerts.md): the
//! ServiceMonitor scrapes the manager's metrics port; every PromQL
//! expression of the PrometheusRule and every query of the Grafana dashboard
//! parses (`promql-parser`) and selects only metrics the code registers,
//! through the scrape job's matcher; every alert has its runbook section.
//! A renamed metric fails here.

use std::collections::{BTreeMap, BTreeSet};

use devenv_testbed::fixture;
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;
use serde_json::Value;

use crate::{find, rendered};

/// Every monitoring switch on: one of the value sets of `crate::VALUE_SETS`.
pub const MONITORING_ON: &[&str] = &[
    "--set",
    "monitoring.serviceMonitor.enabled=true",
    "--set",
    "monitoring.prometheusRule.enabled=true",
    "--set",
    "monitoring.dashboard.enabled=true",
];

/// The series Prometheus itself writes for every target, selected by
/// `DevenvManagerAbsent`; anything else must be the code's.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

const DASHBOARD: &str = "charts/devenv-manager/dashboards/devenv-manager.json";

/// The manager's metric families and their series, as OpenMetrics encodes
/// them, from a registry with a sample in every family
/// ([`Metrics::with_every_family`]; an empty family encodes nothing).
///
/// [`Metrics::with_every_family`]: devenv_manager::metrics::Metrics::with_every_family
struct Encoded {
    /// Each family's name and `# TYPE`.
    families: BTreeMap<String, String>,
    /// Every sample's name.
    series: BTreeSet<String>,
}

fn encoded() -> Encoded {
    let text = devenv_manager::metrics::Metrics::with_every_family().encode();
    let mut families = BTreeMap::new();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("# TYPE name type");
            families.insert(family.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).expect("a sample");
            series.insert(line[..end].to_string());
        }
    }
    assert!(families.len() >= 20, "only {families:?}");
    Encoded { families, series }
}

/// The series names the manager exposes: each what its family's `# TYPE`
/// says (`_total` of a counter, `_bucket`/`_sum`/`_count` of a histogram),
/// and every family has its samples.
fn exported_series() -> BTreeSet<String> {
    let Encoded { families, series } = encoded();
    let derived: BTreeSet<String> = families
        .iter()
        .flat_map(|(family, kind)| match kind.as_str() {
            "counter" => vec![format!("{family}_total")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{family}{suffix}"))
                .collect(),
            "gauge" => vec![family.clone()],
            other => panic!("{family}: a {other}, which this test does not know"),
        })
        .collect();
    assert_eq!(series, derived, "the samples and what # TYPE says");
    series
}

#[test]
fn docs_metrics_md_lists_every_metric_the_code_registers() {
    // The table of its "Metrics" section names a counter with `_total`, as
    // it is queried.
    let doc = fixture("docs/metrics.md");
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Metrics\n"))
        .expect("a Metrics section");
    let documented: BTreeMap<String, String> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let name = cells[0].trim_start_matches("| ").trim_matches('`');
            (name.to_string(), cells[1].trim().to_string())
        })
        .collect();
    let registered: BTreeMap<String, String> = encoded()
        .families
        .into_iter()
        .map(|(family, kind)| match kind.as_str() {
            "counter" => (format!("{family}_total"), kind),
            _ => (family, kind),
        })
        .collect();
    assert_eq!(
        documented, registered,
        "docs/metrics.md's table and the registry"
    );
}

/// A metric selected by an expression, with its label matchers.
#[derive(Debug)]
struct Selected {
    name: Option<String>,
    matchers: Vec<(String, MatchOp, String)>,
}

#[derive(Default)]
struct Selectors(Vec<Selected>);

impl Selectors {
    fn add(&mut self, vs: &VectorSelector) {
        let by_name = vs
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
            .map(|m| m.value.clone());
        self.0.push(Selected {
            name: vs.name.clone().or(by_name),
            matchers: vs
                .matchers
                .matchers
                .iter()
                .map(|m| (m.name.clone(), m.op.clone(), m.value.clone()))
                .collect(),
        });
    }
}

impl ExprVisitor for Selectors {
    type Error = ();

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        match expr {
            Expr::VectorSelector(vs) => self.add(vs),
            Expr::MatrixSelector(ms) => self.add(&ms.vs),
            _ => {}
        }
        Ok(true)
    }
}

/// Parses `expr` and checks each metric it selects: named, registered by
/// the code (or [`PROMETHEUS_SERIES`]), and restricted by `job` equal to
/// `job` (the manager's scrape job, not any other application's series).
fn check_expression(
    what: &str,
    expr: &str,
    job: &str,
    exported: &BTreeSet<String>,
) -> Result<(), String> {
    let ast = parser::parse(expr).map_err(|e| format!("{what}: {e}\n{expr}"))?;
    let mut selectors = Selectors::default();
    walk_expr(&mut selectors, &ast).expect("the visitor does not fail");
    if selectors.0.is_empty() {
        return Err(format!("{what}: selects no metric: {expr}"));
    }
    for selected in &selectors.0 {
        let Some(name) = &selected.name else {
            return Err(format!("{what}: a selector with no metric name: {expr}"));
        };
        if !exported.contains(name) && !PROMETHEUS_SERIES.contains(&name.as_str()) {
            return Err(format!(
                "{what}: selects {name}, which the manager does not export: {expr}"
            ));
        }
        let by_job = selected
            .matchers
            .iter()
            .any(|(label, op, value)| label == "job" && *op == MatchOp::Equal && value == job);
        if !by_job {
            return Err(format!(
                "{what}: {name} is not restricted to job=\"{job}\": {expr}"
            ));
        }
    }
    Ok(())
}

/// What the rules' `selector` value is by default.
const JOB: &str = "devenv-manager-metrics";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: Value,
    spec: RuleSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn rules(docs: &[Value]) -> Vec<Rule> {
    let doc = find(docs, "PrometheusRule", "devenv-manager");
    let rule: PrometheusRule = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("PrometheusRule devenv-manager: {e}"));
    assert_eq!(
        (rule.api_version.as_str(), rule.kind.as_str()),
        ("monitoring.coreos.com/v1", "PrometheusRule")
    );
    assert_eq!(rule.metadata["namespace"], "devenv-system");
    let group: Vec<RuleGroup> = rule.spec.groups;
    assert_eq!(group.len(), 1);
    assert_eq!(group[0].name, "devenv-manager");
    group.into_iter().flat_map(|g| g.rules).collect()
}

/// The headings of docs/alerts.md, as GitHub makes their anchors.
fn runbook_anchors() -> BTreeSet<String> {
    fixture("docs/alerts.md")
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|heading| heading.trim().to_lowercase())
        .collect()
}

#[test]
fn every_alert_parses_selects_real_metrics_and_has_a_runbook() {
    let Some(helm) = crate::helm() else { return };
    let docs = rendered(helm, MONITORING_ON);
    let exported = exported_series();
    let values = crate::values::values();
    let base = values["monitoring"]["prometheusRule"]["runbookBaseURL"]
        .as_str()
        .unwrap()
        .to_string();
    let anchors = runbook_anchors();
    let rules = rules(&docs);
    let mut failures = Vec::new();
    for rule in &rules {
        if let Err(e) = check_expression(&rule.alert, &rule.expr, JOB, &exported) {
            failures.push(e);
        }
        let severity = rule.labels.get("severity").map(String::as_str);
        if !matches!(severity, Some("warning" | "critical")) {
            failures.push(format!("{}: severity {severity:?}", rule.alert));
        }
        for key in ["summary", "description"] {
            if rule
                .annotations
                .get(key)
                .is_none_or(|t| t.trim().is_empty())
            {
                failures.push(format!("{}: no {key}", rule.alert));
            }
        }
        let anchor = rule.alert.to_lowercase();
        if rule.annotations.get("runbook_url") != Some(&format!("{base}#{anchor}")) {
            failures.push(format!(
                "{}: runbook_url {:?}",
                rule.alert,
                rule.annotations.get("runbook_url")
            ));
        }
        if !anchors.contains(&anchor) {
            failures.push(format!(
                "{}: no `## {}` section in docs/alerts.md",
                rule.alert, rule.alert
            ));
        }
        if promql_parser::util::duration::parse_duration(&rule.for_).is_err() {
            failures.push(format!("{}: for: {}", rule.alert, rule.for_));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The conditions docs/alerts.md promises an alert for, at least.
    let names: BTreeSet<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    for alert in [
        "DevenvManagerAbsent",
        "DevenvManagerNoLeader",
        "DevenvManagerCertificateExpiringSoon",
        "DevenvManagerCAExpiringSoon",
        "DevenvManagerCertificateRenewalFailing",
        "DevenvManagerReconcileErrors",
        "DevenvManagerLearnerSpacesFailed",
        "DevenvManagerWebhookSlow",
        "DevenvManagerWebhookErrors",
    ] {
        assert!(names.contains(alert), "no alert {alert}: {names:?}");
    }
    // Each runbook section belongs to an alert.
    let extra: Vec<&String> = anchors
        .iter()
        .filter(|a| !rules.iter().any(|r| r.alert.to_lowercase() == **a))
        .collect();
    assert!(
        extra.is_empty(),
        "docs/alerts.md sections without an alert: {extra:?}"
    );
}

#[test]
fn the_checks_catch_a_renamed_metric_and_a_missing_job() {
    let exported = exported_series();
    let check = |expr: &str| check_expression("test", expr, JOB, &exported);
    check(r#"sum(rate(operator_reconciles_total{job="devenv-manager-metrics"}[5m]))"#).unwrap();
    let renamed = check(r#"sum(rate(operator_reconcile_total{job="devenv-manager-metrics"}[5m]))"#);
    assert!(renamed.unwrap_err().contains("does not export"));
    // The counter's family name is not a series: counters end in _total.
    assert!(check(r#"operator_reconciles{job="devenv-manager-metrics"}"#).is_err());
    let unscoped =
        check(r#"max(operator_leader) + on() sum(operator_leader{job="devenv-manager-metrics"})"#);
    assert!(unscoped.unwrap_err().contains("not restricted"));
    assert!(check(r#"{job="devenv-manager-metrics"}"#).is_err());
    assert!(check("sum(rate(operator_reconciles_total[5m]").is_err());
    // The gauge the no-leader alert needs is registered.
    assert!(exported.contains("operator_leader"));
}

#[test]
fn the_thresholds_and_the_selector_are_values() {
    let Some(helm) = crate::helm() else { return };
    let mut args = MONITORING_ON.to_vec();
    args.extend([
        "--set",
        "monitoring.prometheusRule.certificateExpiryDays=7",
        "--set",
        "monitoring.prometheusRule.webhookLatencyP99Seconds=2",
        "--set",
        "monitoring.prometheusRule.for.noLeader=2m",
        "--set",
        "monitoring.prometheusRule.selector=job=\"devenv\"\\, namespace=\"devenv-system\"",
    ]);
    let rules = rules(&rendered(helm, &args));
    let rule = |name: &str| rules.iter().find(|r| r.alert == name).unwrap();
    assert!(
        rule("DevenvManagerCertificateExpiringSoon")
            .expr
            .ends_with("< 604800")
    );
    assert!(
        rule("DevenvManagerCAExpiringSoon")
            .expr
            .ends_with("< 604800")
    );
    assert!(rule("DevenvManagerWebhookSlow").expr.ends_with("> 2"));
    assert_eq!(rule("DevenvManagerNoLeader").for_, "2m");
    let exported = exported_series();
    for rule in &rules {
        check_expression(&rule.alert, &rule.expr, "devenv", &exported)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            rule.expr.contains(r#"namespace="devenv-system""#),
            "{}",
            rule.expr
        );
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    namespace_selector: NamespaceSelector,
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespaceSelector {
    match_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Endpoint {
    port: String,
    path: String,
    scheme: String,
    interval: String,
    scrape_timeout: String,
    #[serde(default)]
    relabelings: Vec<Value>,
    #[serde(default)]
    metric_relabelings: Vec<Value>,
}

/// Whether `labels` has every `matchLabels` pair of `selector`.
fn selects(selector: &BTreeMap<String, String>, labels: &Value) -> bool {
    selector.iter().all(|(k, v)| labels[k] == v.as_str())
}

#[test]
fn the_service_monitor_scrapes_the_metrics_port_of_every_replica() {
    let Some(helm) = crate::helm() else { return };
    let defaults = rendered(helm, &[]);
    let kinds = |docs: &[Value]| {
        docs.iter()
            .filter(|d| {
                matches!(
                    d["kind"].as_str(),
                    Some("ServiceMonitor" | "PrometheusRule")
                ) || d["metadata"]["name"] == "devenv-manager-metrics"
                    || d["metadata"]["name"] == "devenv-manager-dashboard"
            })
            .count()
    };
    assert_eq!(kinds(&defaults), 0, "all off by default");

    let mut args = MONITORING_ON.to_vec();
    args.extend([
        "--set",
        "monitoring.serviceMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "monitoring.serviceMonitor.metricRelabelings[0].action=drop",
        "--set",
        "monitoring.serviceMonitor.metricRelabelings[0].sourceLabels[0]=__name__",
        "--set",
        "monitoring.serviceMonitor.metricRelabelings[0].regex=listener_.*",
    ]);
    let docs = rendered(helm, &args);
    assert_eq!(kinds(&docs), 4);
    let monitor: ServiceMonitor =
        serde_json::from_value(find(&docs, "ServiceMonitor", "devenv-manager").clone())
            .unwrap_or_else(|e| panic!("ServiceMonitor devenv-manager: {e}"));
    assert_eq!(monitor.api_version, "monitoring.coreos.com/v1");
    assert_eq!(monitor.kind, "ServiceMonitor");
    assert_eq!(
        monitor.metadata.labels.unwrap()["release"],
        "kube-prometheus-stack"
    );
    let selector = monitor.spec.selector.match_labels.expect("matchLabels");
    let metrics_service = find(&docs, "Service", "devenv-manager-metrics");
    assert!(selects(&selector, &metrics_service["metadata"]["labels"]));
    // Not the webhook and pod API Service (TLS ports; scraped twice else).
    let main_service = find(&docs, "Service", "devenv-manager");
    assert!(!selects(&selector, &main_service["metadata"]["labels"]));
    assert_eq!(
        monitor.spec.namespace_selector.match_names,
        [metrics_service["metadata"]["namespace"].as_str().unwrap()]
    );
    let [endpoint] = &monitor.spec.endpoints[..] else {
        panic!("one endpoint")
    };
    assert_eq!(
        (endpoint.path.as_str(), endpoint.scheme.as_str()),
        ("/metrics", "http")
    );
    assert_eq!(
        (endpoint.interval.as_str(), endpoint.scrape_timeout.as_str()),
        ("30s", "10s")
    );
    assert!(endpoint.relabelings.is_empty());
    assert_eq!(endpoint.metric_relabelings[0]["action"], "drop");
    // The endpoint's port is the Service's, whose target is the container's
    // metrics port, on the manager's pods.
    let port = metrics_service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint.port.as_str())
        .unwrap_or_else(|| {
            panic!(
                "no port {} on Service devenv-manager-metrics",
                endpoint.port
            )
        });
    let deployment = find(&docs, "Deployment", "devenv-manager");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let target = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .expect("the targetPort is a container port");
    assert_eq!(target["name"], "metrics");
    let bind = &crate::values::values()["config"]["metrics"]["bind"];
    assert!(
        bind.as_str()
            .unwrap()
            .ends_with(&format!(":{}", target["containerPort"]))
    );
    let service_selector: BTreeMap<String, String> =
        serde_json::from_value(metrics_service["spec"]["selector"].clone()).unwrap();
    assert!(selects(&service_selector, &pod["metadata"]["labels"]));
}

/// Grafana's variables in a query, replaced by what they hold in use.
fn substitute_grafana_variables(query: &str) -> String {
    let mut out = query.to_string();
    for (variable, value) in [
        ("$__rate_interval", "5m"),
        ("$__interval", "1m"),
        ("$__range", "6h"),
        ("$job", JOB),
    ] {
        out = out.replace(variable, value);
    }
    assert!(
        !out.contains('$'),
        "a Grafana variable this test does not know: {query}"
    );
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Target {
    datasource: Value,
    expr: String,
    legend_format: String,
    ref_id: String,
}

/// Every query of the dashboard's panels (rows' nested panels included),
/// by panel title.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let target: Target = serde_json::from_value(target.clone())
                    .unwrap_or_else(|e| panic!("panel {title}: {e}"));
                assert_eq!(target.datasource["uid"], "${datasource}", "{title}");
                assert!(!target.ref_id.is_empty() && !target.legend_format.is_empty());
                out.push((title.clone(), target.expr));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

#[test]
fn every_dashboard_query_parses_and_selects_real_metrics() {
    let dashboard: Value =
        serde_json::from_str(&fixture(DASHBOARD)).expect("the dashboard is JSON");
    let exported = exported_series();
    let mut failures = Vec::new();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    for (title, expr) in &queries {
        let expr = substitute_grafana_variables(expr);
        if let Err(e) = check_expression(title, &expr, JOB, &exported) {
            failures.push(e);
        }
    }
    // The query variables: label_values(METRIC, label).
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().expect("a query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| panic!("not label_values(metric, label): {query}"));
        let ast = parser::parse(inner.0.trim()).unwrap_or_else(|e| panic!("{query}: {e}"));
        let mut selectors = Selectors::default();
        walk_expr(&mut selectors, &ast).unwrap();
        for selected in selectors.0 {
            let name = selected.name.expect("a metric name");
            if !exported.contains(&name) {
                failures.push(format!(
                    "variable {}: {name} is not exported",
                    variable["name"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The panels docs/metrics.md lists, by what they select.
    let all: String = queries.iter().map(|(_, q)| q.as_str()).collect();
    for metric in [
        "admission_requests_total",
        "admission_duration_seconds_bucket",
        "api_requests_total",
        "api_request_duration_seconds_bucket",
        "operator_reconciles_total",
        "operator_reconcile_errors_total",
        "learner_spaces_by_phase",
        "tls_certificate_expiry_timestamp_seconds",
        "tls_ca_expiry_timestamp_seconds",
        "operator_leader",
        "listener_connections",
    ] {
        assert!(all.contains(metric), "no panel shows {metric}");
    }
}

#[test]
fn the_dashboard_config_map_carries_the_dashboard_for_the_sidecar() {
    let Some(helm) = crate::helm() else { return };
    let docs = rendered(helm, MONITORING_ON);
    let config_map = find(&docs, "ConfigMap", "devenv-manager-dashboard");
    assert_eq!(config_map["metadata"]["namespace"], "devenv-system");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let carried = config_map["data"]["devenv-manager.json"].as_str().unwrap();
    assert_eq!(carried, fixture(DASHBOARD).trim_end());

    let mut args = MONITORING_ON.to_vec();
    args.extend([
        "--set",
        "monitoring.dashboard.namespace=monitoring",
        "--set",
        "monitoring.dashboard.annotations.grafana_folder=Platform",
    ]);
    let docs = rendered(helm, &args);
    let config_map = find(&docs, "ConfigMap", "devenv-manager-dashboard");
    assert_eq!(config_map["metadata"]["namespace"], "monitoring");
    assert_eq!(
        config_map["metadata"]["annotations"]["grafana_folder"],
        "Platform"
    );
}
