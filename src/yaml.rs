//! YAML in and out, through the same serde-saphyr that kube uses.

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("cannot write YAML: {0}")]
    Write(String),
    #[error("not valid YAML: {0}")]
    Read(String),
}

/// One object as a YAML document. k8s-openapi types carry their own
/// `apiVersion` and `kind` when serialized.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_saphyr::to_string(value).map_err(|e| YamlError::Write(e.to_string()))
}

/// Several objects as one stream of `---`-separated documents.
pub fn to_yaml_stream<T: Serialize>(values: &[T]) -> Result<String, YamlError> {
    let mut out = String::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(value)?);
    }
    Ok(out)
}

/// Every document of a multi-document stream; empty documents are skipped.
pub fn from_yaml_stream<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, YamlError> {
    let docs: Vec<Option<T>> = serde_saphyr::from_multiple(text).map_err(read_error)?;
    Ok(docs.into_iter().flatten().collect())
}

/// serde-saphyr renders a source snippet under its message; keep the first
/// line, which has the reason and the position, so CLI errors stay one line.
fn read_error(e: serde_saphyr::Error) -> YamlError {
    let text = e.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    YamlError::Read(first.to_string())
}
