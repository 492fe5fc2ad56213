//! values.yaml against the code, the schema and the docs (no helm needed):
//! `config:` has every key of the manager's configuration with the values of
//! `deploy/config.yaml`; the schema describes exactly the keys values.yaml
//! has; docs/helm.md has a row for every value, with its default.

use std::collections::BTreeSet;

use devenv_manager::config::Config;
use devenv_testbed::fixture;
use devenv_testbed::manifests::deploy_config;
use serde_json::Value;

fn yaml(file: &str) -> Value {
    devenv_manager::yaml::from_yaml_stream::<Value>(&fixture(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .remove(0)
}

pub(crate) fn values() -> Value {
    yaml("charts/devenv-manager/values.yaml")
}

fn schema() -> Value {
    serde_json::from_str(&fixture("charts/devenv-manager/values.schema.json"))
        .expect("values.schema.json is JSON")
}

/// Every path to a leaf of a JSON object (`a.b.c`); arrays are leaves.
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                key_paths(v, &format!("{prefix}{key}."), out);
            }
        }
        _ => {
            out.insert(prefix.trim_end_matches('.').to_string());
        }
    }
}

/// The values the schema fixes the shape of, one path per value: an object
/// with `additionalProperties: false` is looked into, anything else (a
/// scalar, a list, a free-form map such as `resources`) is one value.
fn schema_values(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    match schema.get("properties").and_then(Value::as_object) {
        Some(properties) if schema["additionalProperties"] == false => {
            for (key, inner) in properties {
                schema_values(inner, &format!("{prefix}{key}."), out);
            }
        }
        _ => out.push(prefix.trim_end_matches('.').to_string()),
    }
}

/// The value at a dotted path.
fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

#[test]
fn values_config_has_every_configuration_key_with_the_values_of_deploy() {
    let values = values();
    let config = &values["config"];
    let mut chart_keys = BTreeSet::new();
    key_paths(config, "", &mut chart_keys);
    // Every key the manager knows: its defaults, serialized.
    let mut code_keys = BTreeSet::new();
    key_paths(
        &serde_json::to_value(Config::from_yaml("").unwrap()).unwrap(),
        "",
        &mut code_keys,
    );
    assert_eq!(
        chart_keys.difference(&code_keys).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "values.yaml config: keys the manager does not know"
    );
    assert_eq!(
        code_keys.difference(&chart_keys).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "values.yaml config: keys missing (docs/configuration.md lists them)"
    );
    let text = devenv_manager::yaml::to_yaml(config).unwrap();
    let loaded = Config::from_yaml(&text).unwrap_or_else(|e| panic!("values.yaml config: {e}"));
    loaded.validate().expect("values.yaml config is valid");
    assert_eq!(
        loaded,
        deploy_config().0,
        "values.yaml config and deploy/config.yaml"
    );
}

#[test]
fn the_schema_describes_exactly_the_values() {
    let values = values();
    let schema = schema();
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level keys refused"
    );
    let mut described = Vec::new();
    schema_values(&schema, "", &mut described);
    for path in &described {
        assert!(
            at(&values, path).is_some(),
            "values.schema.json has {path}, values.yaml not"
        );
    }
    let mut present = BTreeSet::new();
    key_paths(&values, "", &mut present);
    for path in &present {
        assert!(
            described
                .iter()
                .any(|d| path == d || path.starts_with(&format!("{d}."))),
            "values.yaml has {path}, values.schema.json not"
        );
    }
    // Every object whose keys are fixed refuses others.
    fn closed(schema: &Value, path: &str) {
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            assert_eq!(
                schema["additionalProperties"], false,
                "{path}: additionalProperties"
            );
            for (key, inner) in properties {
                closed(inner, &format!("{path}.{key}"));
            }
        }
    }
    closed(&schema, "");
}

#[test]
fn chart_yaml_follows_cargo_toml() {
    let chart = yaml("charts/devenv-manager/Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "devenv-manager");
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "appVersion is Cargo.toml's version"
    );
    // The image deploy/ names is the chart's default.
    let kustomization = yaml("deploy/kustomization.yaml");
    assert_eq!(
        kustomization["images"][0]["newTag"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        values()["image"]["repository"],
        kustomization["images"][0]["newName"]
    );
}

#[test]
fn docs_helm_md_documents_every_value_with_its_default() {
    let values = values();
    let mut described = Vec::new();
    schema_values(&schema(), "", &mut described);
    // Rows `| `key` | `default` | meaning |` of docs/helm.md.
    let doc = fixture("docs/helm.md");
    let mut documented = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        assert!(cells.len() >= 3, "docs/helm.md: {line}");
        let key = cells[0].trim_start_matches("| ").trim_matches('`');
        let default = cells[1].trim().trim_matches('`');
        let Some(value) = at(&values, key) else {
            panic!("docs/helm.md documents {key}, which values.yaml does not have")
        };
        let parsed: Value = devenv_manager::yaml::from_yaml_stream::<Value>(default)
            .ok()
            .and_then(|mut d| d.pop())
            .unwrap_or(Value::String(String::new()));
        assert_eq!(&parsed, value, "docs/helm.md: the default of {key}");
        documented.push(key.to_string());
    }
    let missing: Vec<&String> = described
        .iter()
        .filter(|d| !documented.contains(d))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/helm.md lacks a row for {missing:?}"
    );
    assert_eq!(documented.len(), described.len(), "one row per value");
}
