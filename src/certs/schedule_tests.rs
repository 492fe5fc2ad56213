//! Every stage of the schedule, on material issued at a chosen time.

use jiff::{SignedDuration, Timestamp};

use super::super::rotate;
use super::*;

const LIFETIMES: Lifetimes = Lifetimes {
    ca: SignedDuration::from_hours(24 * 365 * 5),
    serving: SignedDuration::from_hours(24 * 90),
    overlap: SignedDuration::from_mins(10),
};

fn names() -> Vec<String> {
    vec![
        "devenv-manager.devenv-system.svc".into(),
        "127.0.0.1".into(),
    ]
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn days(n: i64) -> i64 {
    n * 86_400
}

fn step(step: Step, current: Option<&Material>, now: Timestamp) -> Material {
    rotate::apply(step, current, &names(), &LIFETIMES, now).unwrap()
}

fn plan_at(now: Timestamp, material: &Material, trusted: bool) -> Plan {
    plan(now, Some(material), &names(), |_| trusted, &LIFETIMES)
}

#[test]
fn nothing_yet_creates() {
    let plan = plan(at(0), None, &names(), |_| true, &LIFETIMES);
    assert_eq!(plan.step, Some(Step::Create));
}

#[test]
fn created_material_is_one_ca_and_a_serving_certificate_it_signed() {
    let m = step(Step::Create, None, at(0));
    assert_eq!(m.cas.len(), 1);
    assert!(m.serving.signed_by(m.signer()));
    assert_eq!(m.serving.names, names());
    assert_eq!(m.serving.issued_at(), at(0));
    assert_eq!(m.serving.not_after, at(days(90)));
    assert_eq!(m.signer().not_after, at(days(365 * 5)));
}

#[test]
fn fresh_material_waits_until_two_thirds_of_the_serving_life() {
    let m = step(Step::Create, None, at(0));
    let plan = plan_at(at(1), &m, true);
    assert_eq!(plan.step, None);
    assert_eq!(plan.recheck_at, at(days(60)));
    assert_eq!(plan_at(at(days(60) - 1), &m, true).step, None);
    assert_eq!(
        plan_at(at(days(60)), &m, true).step,
        Some(Step::Reissue(Reason::Due))
    );
}

#[test]
fn renewal_keeps_the_ca_and_restarts_the_clock() {
    let m = step(Step::Create, None, at(0));
    let renewed = step(Step::Reissue(Reason::Due), Some(&m), at(days(60)));
    assert_eq!(renewed.cas, m.cas);
    assert_eq!(renewed.ca_key_pem, m.ca_key_pem);
    assert_ne!(renewed.tls_key_pem, m.tls_key_pem, "a new key each time");
    assert_eq!(renewed.serving.not_after, at(days(150)));
    assert_eq!(plan_at(at(days(61)), &renewed, true).step, None);
}

#[test]
fn a_serving_certificate_never_outlives_its_ca() {
    let short = Lifetimes {
        ca: SignedDuration::from_hours(24 * 30),
        ..LIFETIMES
    };
    let m = rotate::apply(Step::Create, None, &names(), &short, at(0)).unwrap();
    assert_eq!(m.serving.not_after, m.signer().not_after);
}

#[test]
fn expired_or_foreign_serving_certificate_is_reissued_at_once() {
    let m = step(Step::Create, None, at(0));
    assert_eq!(
        plan_at(at(days(90)), &m, false).step,
        Some(Step::Reissue(Reason::Unusable))
    );
    let other = step(Step::Create, None, at(0));
    let mut foreign = m.clone();
    foreign.serving = other.serving;
    assert_eq!(
        plan_at(at(1), &foreign, false).step,
        Some(Step::Reissue(Reason::Unusable))
    );
}

#[test]
fn changed_names_reissue() {
    let m = step(Step::Create, None, at(0));
    let plan = plan(
        at(1),
        Some(&m),
        &["other.example".to_string()],
        |_| true,
        &LIFETIMES,
    );
    assert_eq!(plan.step, Some(Step::Reissue(Reason::Names)));
}

#[test]
fn expired_ca_starts_over() {
    let m = step(Step::Create, None, at(0));
    assert_eq!(
        plan_at(at(days(365 * 5)), &m, true).step,
        Some(Step::Create)
    );
}

/// The whole CA rotation, stage by stage, as successive leaders would see it.
#[test]
fn ca_rotation_adds_switches_then_drops() {
    let ca_due = days(365 * 5) * 2 / 3;
    // A serving certificate renewed shortly before the CA is due.
    let m = step(Step::Create, None, at(0));
    let m = step(Step::Reissue(Reason::Due), Some(&m), at(ca_due - days(1)));
    assert_eq!(plan_at(at(ca_due), &m, true).step, Some(Step::AddCa));

    // 1. The new CA signs from now on; the old one stays trusted.
    let added = step(Step::AddCa, Some(&m), at(ca_due));
    assert_eq!(added.cas.len(), 2);
    assert_eq!(added.cas[1], m.cas[0]);
    assert_eq!(added.tls_pem, m.tls_pem, "serving unchanged until trusted");
    assert!(added.serving.signed_by(&added.cas[1]));

    // 2-3. Not switched while any target lacks the new CA, nor within the overlap.
    let untrusted = plan_at(at(ca_due + days(1)), &added, false);
    assert_eq!(untrusted.step, None);
    assert_eq!(untrusted.recheck_at, at(ca_due + days(1) + 2));
    let early = plan_at(at(ca_due + 60), &added, true);
    assert_eq!(early.step, None);
    assert_eq!(early.recheck_at, at(ca_due + 600));
    assert_eq!(
        plan_at(at(ca_due + 600), &added, true).step,
        Some(Step::Reissue(Reason::NewCa))
    );
    let switched = step(Step::Reissue(Reason::NewCa), Some(&added), at(ca_due + 600));
    assert!(switched.serving.signed_by(switched.signer()));
    assert_eq!(switched.cas.len(), 2);

    // 4. The old CA goes once every replica has had the overlap to reload.
    let waiting = plan_at(at(ca_due + 700), &switched, true);
    assert_eq!(waiting.step, None);
    assert_eq!(waiting.recheck_at, at(ca_due + 1200));
    assert_eq!(
        plan_at(at(ca_due + 1200), &switched, true).step,
        Some(Step::DropOldCas)
    );
    let done = step(Step::DropOldCas, Some(&switched), at(ca_due + 1200));
    assert_eq!(done.cas, vec![switched.signer().clone()]);
    assert_eq!(done.tls_pem, switched.tls_pem);
    assert_eq!(plan_at(at(ca_due + 1201), &done, true).step, None);
}

#[test]
fn a_serving_certificate_due_mid_rotation_waits_for_the_switch() {
    let m = step(Step::Create, None, at(0));
    let added = step(Step::AddCa, Some(&m), at(days(59)));
    // Due by age, but the new CA is not trusted everywhere yet: wait.
    assert_eq!(plan_at(at(days(61)), &added, false).step, None);
    assert_eq!(
        plan_at(at(days(61)), &added, true).step,
        Some(Step::Reissue(Reason::NewCa))
    );
}
