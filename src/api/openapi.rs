//! `GET /api/v1/openapi.json`: the OpenAPI 3 description of the pod API.
//!
//! The paths, security and responses are written by hand (`openapi.json`);
//! the schemas of what is sent are generated from the Rust types that are
//! serialized ([`super::view`], [`super::error::ErrorBody`], [`HealthInfo`],
//! [`VersionInfo`]), so the document cannot drift from the answers. Tests keep
//! the paths in step with the routes and every `$ref` pointing at a schema.

use std::sync::LazyLock;

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value};

use super::HealthInfo;
use super::error::ErrorBody;
use super::version::VersionInfo;
use super::view::{DeleteResult, PodList, PodSummary};

/// The hand-written part: everything but `info.version` and `components.schemas`.
const PATHS: &str = include_str!("openapi.json");

static DOCUMENT: LazyLock<String> = LazyLock::new(|| document_value().to_string());

/// The document as served, built once.
pub fn document() -> &'static str {
    &DOCUMENT
}

fn document_value() -> Value {
    let mut doc: Value = serde_json::from_str(PATHS).expect("openapi.json is JSON");
    doc["info"]["version"] = env!("CARGO_PKG_VERSION").into();
    doc["components"]["schemas"] = Value::Object(schemas());
    doc
}

/// The schema of every type the pod API serializes, by the name `$ref`s use.
fn schemas() -> Map<String, Value> {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3().with(|s| {
        // What is described is what the server sends.
        s.contract = schemars::generate::Contract::Serialize;
    }));
    fn add<T: JsonSchema>(generator: &mut SchemaGenerator) {
        generator.subschema_for::<T>();
    }
    add::<HealthInfo>(&mut generator);
    add::<VersionInfo>(&mut generator);
    add::<ErrorBody>(&mut generator);
    add::<PodList>(&mut generator);
    add::<PodSummary>(&mut generator);
    add::<DeleteResult>(&mut generator);
    let mut schemas = generator.take_definitions(true);
    schemas.values_mut().for_each(absent_is_not_null);
    schemas
}

/// The optional fields are left out when empty (`skip_serializing_if`), never
/// sent as `null`; schemars marks every `Option` `nullable` all the same.
fn absent_is_not_null(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get_mut("properties") {
                for property in properties.values_mut() {
                    if let Value::Object(p) = property {
                        p.remove("nullable");
                    }
                }
            }
            map.values_mut().for_each(absent_is_not_null);
        }
        Value::Array(items) => items.iter_mut().for_each(absent_is_not_null),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::Route;

    fn document() -> Value {
        serde_json::from_str(super::document()).expect("the document is JSON")
    }

    #[test]
    fn is_openapi_3() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn describes_exactly_the_routes() {
        let doc = document();
        let mut described = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if method != "parameters" {
                    described.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        described.sort();
        let mut routes: Vec<String> = Route::TEMPLATES.iter().map(|t| t.to_string()).collect();
        routes.sort();
        assert_eq!(described, routes);
    }

    #[test]
    fn every_authenticated_operation_documents_its_errors() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let responses = operation["responses"].as_object().unwrap();
                let public = operation["security"] == serde_json::json!([]);
                let expected: &[&str] = if public {
                    &[]
                } else {
                    &["401", "403", "429", "503"]
                };
                for code in expected {
                    assert!(
                        responses.contains_key(*code),
                        "{method} {path} lacks {code}"
                    );
                }
                for (code, response) in responses {
                    if code.starts_with('4') || code.starts_with('5') {
                        assert_eq!(
                            response["$ref"], "#/components/responses/Error",
                            "{method} {path} {code}"
                        );
                    }
                }
            }
        }
        let error = &doc["components"]["schemas"]["Error"];
        let detail = &error["properties"]["error"]["properties"];
        for field in ["code", "reason", "message"] {
            assert!(detail.get(field).is_some(), "{field}");
        }
    }

    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// Every `$ref` leads to something, and every generated schema is used.
    #[test]
    fn every_reference_resolves_and_every_schema_is_used() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in &found {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} leads nowhere");
        }
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            let r = format!("#/components/schemas/{name}");
            assert!(found.contains(&r.as_str()), "{name} is never referenced");
        }
    }

    /// OpenAPI 3.0 has neither `const` nor `type` lists nor `$defs`: the
    /// generated schemas stay in the dialect the document declares.
    #[test]
    fn schemas_are_openapi_3_0() {
        let text = super::document();
        for word in ["\"const\"", "\"$defs\"", "\"oneOf\"", "\"null\""] {
            assert!(!text.contains(word), "{word} in {text}");
        }
        let doc = document();
        let pod = &doc["components"]["schemas"]["Pod"];
        assert_eq!(pod["properties"]["phase"]["enum"][1], "Running");
        assert_eq!(
            pod["properties"]["containers"]["items"]["$ref"],
            "#/components/schemas/Container"
        );
        let required: Vec<&str> = pod["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(required.contains(&"resourceVersion") && !required.contains(&"node"));
        assert_eq!(
            doc["components"]["schemas"]["DeleteResult"]["properties"]["status"]["enum"],
            serde_json::json!(["Deleted", "Terminating"])
        );
        assert!(
            pod["properties"]["node"].get("nullable").is_none(),
            "absent, never null"
        );
    }

    /// What the server sends matches its schema's required fields and enums.
    #[test]
    fn answers_carry_the_fields_their_schemas_require() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let error = serde_json::to_value(ErrorBody {
            error: crate::api::error::ErrorDetail {
                code: 404,
                reason: crate::api::error::Reason::NotFound,
                message: "x".into(),
            },
        })
        .unwrap();
        let version = serde_json::to_value(VersionInfo::get()).unwrap();
        for (name, value) in [("Error", &error), ("Version", &version)] {
            for field in schemas[name]["required"].as_array().unwrap() {
                assert!(
                    value.get(field.as_str().unwrap()).is_some(),
                    "{name}.{field}"
                );
            }
        }
    }
}
