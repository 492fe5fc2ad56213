//! Criterion: one whole review, AdmissionReview bytes in to response bytes
//! out, on a realistic 5 KB devenv pod and on a LearnerSpace.
//! Target (docs/performance.md): under 20 µs per review.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use devenv_manager::config::Config;
use devenv_manager::webhook::Webhook;

fn fixture(name: &str) -> Vec<u8> {
    let text =
        std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    // Compact, as the API server sends it.
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON fixture");
    serde_json::to_vec(&value).expect("serializes")
}

fn reviews(c: &mut Criterion) {
    let webhook = Webhook::new(&Config::default());
    let devenv_pod = fixture("tests/fixtures/pod-create-devenv.json");
    let other_pod = fixture("tests/fixtures/pod-create-other.json");
    let spoofed = fixture("tests/fixtures/pod-create-spoofed-label.json");
    let mut valid_ls: serde_json::Value =
        serde_json::from_slice(&fixture("examples/admission-review-learnerspace.json")).unwrap();
    valid_ls["request"]["object"]["spec"] = serde_json::json!({
        "learnerId": "john.doe", "subjects": ["mathematics", "science", "programming"],
        "resourceQuota": {"cpu": "2", "memory": "4Gi", "storage": "10Gi", "pods": 10},
        "networkPolicy": {"egressDeny": true, "allowedNamespaces": ["aivo-system", "aivo-shared"]},
        "vaultRole": "learner-default"
    });
    let valid_ls = serde_json::to_vec(&valid_ls).unwrap();
    let invalid_ls = fixture("examples/admission-review-learnerspace.json");

    let mut group = c.benchmark_group("review");
    for (name, body) in [
        ("mutate/devenv-pod-5KB", &devenv_pod),
        ("mutate/other-pod-5KB", &other_pod),
        ("mutate/spoofed-label-denied", &spoofed),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    webhook
                        .mutate_pods(black_box(body))
                        .expect("valid review")
                        .to_json(),
                )
            })
        });
    }
    for (name, body) in [
        ("validate/learnerspace-valid", &valid_ls),
        ("validate/learnerspace-7-errors", &invalid_ls),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    webhook
                        .validate_learnerspaces(black_box(body))
                        .expect("valid review")
                        .to_json(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, reviews);
criterion_main!(benches);
