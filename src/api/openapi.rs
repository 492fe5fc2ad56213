//! `GET /api/v1/openapi.json`: the hand-written OpenAPI 3 description of the
//! pod API. A test keeps it in step with the routes and the error shape.

pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::Route;

    fn document() -> serde_json::Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
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
}
