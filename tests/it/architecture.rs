//! The shape the code must keep: the Lambda's package compiles none of the test tooling, and the
//! function's IAM policy grants exactly what the actions declare they call.

use std::collections::BTreeSet;
use std::process::Command;

use responder::actions::{declared_permissions, ActionName, PLATFORM_PERMISSIONS};
use serde_yaml_ng::Value as Yaml;

use crate::support::workspace_root;

/// `cargo tree` of the Lambda's package as `cargo lambda build` (run in `responder/`) resolves
/// it: normal and build dependencies, with the features each is compiled with.
fn lambda_dependency_graph() -> String {
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace_root().join("responder"))
        .args(["tree", "--offline", "--locked", "--edges", "normal,build"])
        .args(["--prefix", "none", "--format", "{p} [{f}]"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_lambda_builds_none_of_the_test_tooling() {
    let graph = lambda_dependency_graph();
    assert!(
        graph
            .lines()
            .next()
            .unwrap_or("")
            .starts_with("guardduty-responder "),
        "{graph}"
    );
    for forbidden in [
        "responder-emulator ",
        "responder-cli ",
        "clap ",
        "aws-sdk-sqs ",
        "aws-sdk-guardduty ",
        "anstream ",
    ] {
        assert!(
            !graph.lines().any(|l| l.starts_with(forbidden)),
            "the Lambda's package depends on {forbidden}:\n{graph}"
        );
    }
    let hyper: Vec<&str> = graph.lines().filter(|l| l.starts_with("hyper v")).collect();
    assert!(!hyper.is_empty(), "{graph}");
    assert!(
        hyper.iter().all(|l| !l.contains("server")),
        "hyper's server side is compiled into the Lambda: {hyper:?}"
    );
}

/// Every IAM action the template grants the function.
fn granted() -> BTreeSet<String> {
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    let template: Yaml = serde_yaml_ng::from_str(&text).unwrap();
    let policies = template["Resources"]["ResponderFunction"]["Properties"]["Policies"]
        .as_sequence()
        .unwrap();
    let mut granted = BTreeSet::new();
    for policy in policies {
        for statement in policy["Statement"].as_sequence().unwrap() {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{statement:?}");
            match &statement["Action"] {
                Yaml::String(action) => {
                    granted.insert(action.clone());
                }
                Yaml::Sequence(actions) => {
                    granted.extend(actions.iter().map(|a| a.as_str().unwrap().to_string()))
                }
                other => panic!("unexpected Action {other:?}"),
            }
        }
    }
    granted
}

#[test]
fn the_template_grants_exactly_what_the_actions_declare() {
    let granted = granted();
    assert!(
        granted.iter().all(|a| !a.contains('*')),
        "no wildcard actions: {granted:?}"
    );
    let declared: BTreeSet<String> = declared_permissions()
        .into_iter()
        .map(|(_, p)| p.to_string())
        .chain(PLATFORM_PERMISSIONS.iter().map(|(p, _)| p.to_string()))
        .collect();
    let missing: Vec<String> = declared_permissions()
        .into_iter()
        .filter(|(_, p)| !granted.contains(*p))
        .map(|(who, p)| format!("{p} (needed by {who})"))
        .collect();
    assert!(
        missing.is_empty(),
        "template.yaml does not grant: {missing:?}"
    );
    let undeclared: Vec<&String> = granted.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "template.yaml grants what no action declares: {undeclared:?}"
    );
    // Every action that changes something says so.
    for action in [ActionName::Isolate, ActionName::Stop, ActionName::Evidence] {
        assert!(!action.permissions().is_empty(), "{action}");
    }
}

/// The member role (member-role.yaml) grants what the actions call on workloads, the same as
/// the function's own role, and none of what stays in the administrator account (evidence,
/// ledger, notice, key, queues, assuming roles).
#[test]
fn the_member_role_grants_the_workload_permissions_and_nothing_else() {
    let text = std::fs::read_to_string(workspace_root().join("member-role.yaml")).unwrap();
    let template: Yaml = serde_yaml_ng::from_str(&text).unwrap();
    let policies = template["Resources"]["MemberRole"]["Properties"]["Policies"]
        .as_sequence()
        .unwrap();
    let mut member = BTreeSet::new();
    for policy in policies {
        for statement in policy["PolicyDocument"]["Statement"].as_sequence().unwrap() {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{statement:?}");
            match &statement["Action"] {
                Yaml::String(action) => {
                    member.insert(action.clone());
                }
                Yaml::Sequence(actions) => {
                    member.extend(actions.iter().map(|a| a.as_str().unwrap().to_string()))
                }
                other => panic!("unexpected Action {other:?}"),
            }
        }
    }
    let home = [
        "dynamodb:",
        "s3:",
        "sns:",
        "kms:",
        "sqs:",
        "sts:",
        "securityhub:",
        "secretsmanager:",
    ];
    let workload: BTreeSet<String> = granted()
        .into_iter()
        .filter(|p| !home.iter().any(|h| p.starts_with(h)))
        .collect();
    assert_eq!(member, workload);
}

/// The function's role never grants a change on every resource: each statement whose
/// `Resource` is `*` (IAM allows nothing narrower for Describe and List calls) only reads.
#[test]
fn no_statement_grants_a_mutating_action_on_every_resource() {
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    let template: Yaml = serde_yaml_ng::from_str(&text).unwrap();
    let policies = template["Resources"]["ResponderFunction"]["Properties"]["Policies"]
        .as_sequence()
        .unwrap();
    let reads = |action: &str| {
        let verb = action.split(':').nth(1).unwrap_or(action);
        ["Describe", "List", "Get"]
            .iter()
            .any(|read| verb.starts_with(read))
    };
    let mut checked = 0;
    for policy in policies {
        for statement in policy["Statement"].as_sequence().unwrap() {
            let everywhere = match &statement["Resource"] {
                Yaml::String(resource) => resource == "*",
                Yaml::Sequence(resources) => resources.iter().any(|r| r.as_str() == Some("*")),
                _ => false,
            };
            if !everywhere {
                continue;
            }
            let actions: Vec<&str> = match &statement["Action"] {
                Yaml::String(action) => vec![action.as_str()],
                Yaml::Sequence(actions) => actions.iter().filter_map(|a| a.as_str()).collect(),
                other => panic!("unexpected Action {other:?}"),
            };
            for action in actions {
                checked += 1;
                assert!(
                    reads(action),
                    "{action} is granted on every resource ({:?})",
                    statement["Sid"]
                );
            }
        }
    }
    assert!(checked > 0, "the read statement was not found");
    // The release function has no policy of its own: it runs with the responder's role.
    assert!(
        template["Resources"]["ReleaseFunction"]["Properties"]["Policies"].is_null(),
        "the release function's own policies are not checked here"
    );
}
