//! RBAC: `deploy/rbac.yaml` grants exactly the calls of
//! [`crate::rbac_calls::CODE_CALLS`], and the learner's role is the code's.

use std::collections::{BTreeMap, BTreeSet};

use devenv_manager::config::Config;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};

use crate::rbac_calls::{CODE_CALLS, Scope};
use crate::{MANAGER_SA, deploy_config, docs, object, objects};

/// One grant: (scope, namespace or "", group, resource, resource name or
/// "" for any, verb).
type Grant = (Scope, String, String, String, String, String);

/// What the code needs, for the namespaces of `config`.
fn needed(config: &Config) -> BTreeMap<Grant, Vec<String>> {
    let mut needed: BTreeMap<Grant, Vec<String>> = BTreeMap::new();
    let namespaces = |scope: Scope| -> Vec<String> {
        match scope {
            Scope::Cluster => vec![String::new()],
            Scope::Operator => vec![config.operator.namespace.clone()],
            Scope::Devenv => config.devenv.namespaces.clone(),
            Scope::Manager => vec![config.certs.namespace.clone()],
        }
    };
    let mut add = |scope: Scope, group: &str, resource: &str, name: &str, verb: &str, at: &str| {
        for ns in namespaces(scope) {
            needed
                .entry((
                    scope,
                    ns,
                    group.into(),
                    resource.into(),
                    name.into(),
                    verb.into(),
                ))
                .or_default()
                .push(at.to_string());
        }
    };
    for c in CODE_CALLS {
        for verb in c.verbs {
            add(c.scope, c.group, c.resource, c.name, verb, c.at);
        }
    }
    // The learner RoleBinding (in a namespace named at run time) binds a
    // ClusterRole: writing it needs `bind` on exactly that role.
    let ls: devenv_manager::crd::LearnerSpace =
        serde_json::from_value(docs("deploy/examples/learnerspace.yaml")[0].clone()).unwrap();
    let desired = devenv_manager::operator::objects::desired(&ls, &config.operator).unwrap();
    let role_ref = desired.role_binding.role_ref;
    assert_eq!(role_ref.kind, "ClusterRole");
    add(
        Scope::Cluster,
        "rbac.authorization.k8s.io",
        "clusterroles",
        &role_ref.name,
        "bind",
        "operator/objects.rs role_binding(): the learner RoleBinding's roleRef",
    );
    needed
}

/// Splits rules into grants, refusing what RBAC here never needs.
fn expand(scope: Scope, ns: &str, rules: &[PolicyRule], problems: &mut Vec<String>) -> Vec<Grant> {
    let mut grants = Vec::new();
    for rule in rules {
        if rule.non_resource_urls.is_some() {
            problems.push(format!("{ns}: nonResourceURLs are not used: {rule:?}"));
        }
        let names: Vec<String> = match &rule.resource_names {
            Some(names) => names.clone(),
            None => vec![String::new()],
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for name in &names {
                    for verb in &rule.verbs {
                        if [group, resource, name, verb]
                            .iter()
                            .any(|s| s.contains('*'))
                        {
                            problems.push(format!("{ns}: wildcard in {group}/{resource} {verb}"));
                        }
                        grants.push((
                            scope,
                            ns.to_string(),
                            group.clone(),
                            resource.clone(),
                            name.clone(),
                            verb.clone(),
                        ));
                    }
                }
            }
        }
    }
    grants
}

fn is_manager(subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>) -> bool {
    subjects.iter().flatten().any(|s| {
        s.kind == "ServiceAccount"
            && s.name == MANAGER_SA.1
            && s.namespace.as_deref() == Some(MANAGER_SA.0)
    })
}

/// What `deploy/rbac.yaml` grants the manager's service account.
fn granted(config: &Config, problems: &mut Vec<String>) -> BTreeSet<Grant> {
    let file = "deploy/rbac.yaml";
    let cluster_roles: Vec<ClusterRole> = objects("ClusterRole");
    let roles: Vec<Role> = objects("Role");
    let mut grants = BTreeSet::new();
    for binding in objects::<ClusterRoleBinding>("ClusterRoleBinding") {
        assert!(is_manager(&binding.subjects), "{binding:?}");
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        let role = cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(&binding.role_ref.name))
            .unwrap_or_else(|| panic!("{file}: no ClusterRole {}", binding.role_ref.name));
        assert!(role.aggregation_rule.is_none());
        grants.extend(expand(
            Scope::Cluster,
            "",
            role.rules.as_deref().unwrap_or_default(),
            problems,
        ));
    }
    for binding in objects::<RoleBinding>("RoleBinding") {
        assert!(is_manager(&binding.subjects), "{binding:?}");
        assert_eq!(binding.role_ref.kind, "Role", "{binding:?}");
        let ns = binding.metadata.namespace.clone().expect("namespace");
        let role = roles
            .iter()
            .find(|r| {
                r.metadata.name.as_deref() == Some(&binding.role_ref.name)
                    && r.metadata.namespace.as_deref() == Some(&ns)
            })
            .unwrap_or_else(|| panic!("{file}: no Role {ns}/{}", binding.role_ref.name));
        let scope = if ns == config.operator.namespace {
            Scope::Operator
        } else if config.devenv.namespaces.contains(&ns) {
            Scope::Devenv
        } else if ns == config.certs.namespace {
            Scope::Manager
        } else {
            problems.push(format!(
                "a Role in {ns}, which is none of operator.namespace, certs.namespace and the devenv namespaces"
            ));
            continue;
        };
        grants.extend(expand(
            scope,
            &ns,
            role.rules.as_deref().unwrap_or_default(),
            problems,
        ));
    }
    // A role no binding uses is a mistake too.
    let bound: BTreeSet<String> = objects::<RoleBinding>("RoleBinding")
        .iter()
        .map(|b| {
            format!(
                "{}/{}",
                b.metadata.namespace.clone().unwrap(),
                b.role_ref.name
            )
        })
        .chain(
            objects::<ClusterRoleBinding>("ClusterRoleBinding")
                .iter()
                .map(|b| b.role_ref.name.clone()),
        )
        .collect();
    for role in &roles {
        let key = format!(
            "{}/{}",
            role.metadata.namespace.clone().unwrap_or_default(),
            role.metadata.name.clone().unwrap_or_default()
        );
        assert!(bound.contains(&key), "Role {key} is bound to nothing");
    }
    // The learner's ClusterRole is bound by the operator, in each learner
    // namespace; every other ClusterRole here by a binding here.
    let learner_role = devenv_manager::operator::objects::LEARNER_CLUSTER_ROLE;
    for role in &cluster_roles {
        let name = role.metadata.name.clone().unwrap_or_default();
        assert!(
            bound.contains(&name) != (name == learner_role),
            "ClusterRole {name}: bound to nothing, or the learner's bound here"
        );
    }
    grants
}

#[test]
fn rbac_grants_exactly_the_calls_the_code_makes() {
    let (config, _) = deploy_config();
    let mut problems = Vec::new();
    let granted = granted(&config, &mut problems);
    let needed = needed(&config);
    let show = |g: &Grant| {
        let where_ = if g.1.is_empty() {
            "cluster-wide".to_string()
        } else {
            format!("in {}", g.1)
        };
        let group = if g.2.is_empty() { "core" } else { &g.2 };
        let name = if g.4.is_empty() {
            String::new()
        } else {
            format!(" named {}", g.4)
        };
        format!("{} {group}/{}{name} {where_}", g.5, g.3)
    };
    for (grant, at) in &needed {
        if !granted.contains(grant) {
            problems.push(format!(
                "missing: {} (used by {})",
                show(grant),
                at.join("; ")
            ));
        }
    }
    for grant in &granted {
        if !needed.contains_key(grant) {
            problems.push(format!(
                "granted but no code needs it: {} (add the call to CODE_CALLS or remove the grant)",
                show(grant)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The learner's rights are installed once, as the ClusterRole the code
/// binds, and the manager holds none of them: no Secret, no pod outside the
/// devenv namespaces, no other role to bind.
#[test]
fn the_learner_cluster_role_is_the_codes_and_the_manager_holds_none_of_it() {
    let deployed: ClusterRole = object(
        "deploy/rbac.yaml",
        "ClusterRole",
        devenv_manager::operator::objects::LEARNER_CLUSTER_ROLE,
    );
    let code = devenv_manager::operator::objects::learner_cluster_role();
    assert_eq!(deployed.rules, code.rules);
    assert_eq!(deployed.metadata.labels, code.metadata.labels);

    let (config, _) = deploy_config();
    let granted = granted(&config, &mut Vec::new());
    for (_, ns, group, resource, name, verb) in &granted {
        assert!(
            (resource != "secrets"
                || (ns == &config.certs.namespace
                    && (name == devenv_manager::certs::SECRET_NAME || verb == "create")))
                && !resource.starts_with("pods/"),
            "the manager holds {verb} {resource} {name:?} in {ns:?}"
        );
        if resource == "pods" {
            assert!(
                config.devenv.namespaces.contains(ns),
                "{verb} pods in {ns:?}"
            );
        }
        if resource == "clusterroles" || resource == "roles" {
            assert_eq!(
                (group.as_str(), name.as_str(), verb.as_str()),
                (
                    "rbac.authorization.k8s.io",
                    code.metadata.name.as_deref().unwrap(),
                    "bind"
                ),
                "{verb} {resource}"
            );
        }
        // Its own two webhook configurations' caBundle (the lane policy
        // refuses any other change), nothing else of admission: never the
        // policies that fence it.
        if group == "admissionregistration.k8s.io" {
            assert!(
                resource.ends_with("webhookconfigurations")
                    && name == devenv_manager::webhook::registration::CONFIGURATION_NAME,
                "the manager could change its own fence: {verb} {resource} {name:?}"
            );
        }
    }
}
